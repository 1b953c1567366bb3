//! Field syntax shared by heads, chunked bodies and the encoders (RFC 9110 §5.6): tokens,
//! comma-separated lists, and case-insensitive comparison with the lowercase names and tokens
//! the codec looks for.

/// tchar (RFC 9110 §5.6.2): "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" /
/// "_" / "`" / "|" / "~" / DIGIT / ALPHA.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Length of the token (run of tchar) at the start of `s`.
#[inline]
pub(crate) fn token_len(s: &[u8]) -> usize {
    s.iter()
        .position(|&b| !TCHAR[usize::from(b)])
        .unwrap_or(s.len())
}

/// Whether `s` is a whole, non-empty token.
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && token_len(s) == s.len()
}

/// `s` without leading and trailing OWS (SP / HTAB).
#[inline]
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether `s` equals `lower` ignoring ASCII case: what `s.eq_ignore_ascii_case(lower)` answers,
/// for a `lower` made of lowercase letters, digits and `-` (a header name or token the codec
/// looks for), compared 4 or 8 bytes at a time rather than byte by byte.
///
/// Exact for every `s`: at a letter of `lower` the byte of `s` may differ only in the ASCII
/// case bit (0x20), which is set before comparing; at a digit or `-` it must be equal.
#[inline(always)]
pub(crate) fn eq_lowercase(s: &[u8], lower: &[u8]) -> bool {
    debug_assert!(lower
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'));
    let n = lower.len();
    if s.len() != n {
        return false;
    }
    if n >= 8 {
        // Words at 0, 8, ... and one ending at the last byte (overlapping the one before).
        let mut at = 0;
        while at + 8 < n {
            if !eq_word8(s, lower, at) {
                return false;
            }
            at += 8;
        }
        eq_word8(s, lower, n - 8)
    } else if n >= 4 {
        eq_word4(s, lower, 0) && eq_word4(s, lower, n - 4)
    } else {
        s.eq_ignore_ascii_case(lower)
    }
}

/// Bytes `at..at + 8` of `s` and `lower` compare equal, case folded where `lower` has a letter.
#[inline(always)]
fn eq_word8(s: &[u8], lower: &[u8], at: usize) -> bool {
    let a = u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    let b = u64::from_le_bytes(lower[at..at + 8].try_into().expect("8 bytes"));
    // Of lowercase letters, digits and '-', only the letters have bit 0x40: shifted down, it
    // is the case bit of exactly the letters.
    a | ((b & 0x4040_4040_4040_4040) >> 1) == b
}

/// As [`eq_word8`], 4 bytes.
#[inline(always)]
fn eq_word4(s: &[u8], lower: &[u8], at: usize) -> bool {
    let a = u32::from_le_bytes(s[at..at + 4].try_into().expect("4 bytes"));
    let b = u32::from_le_bytes(lower[at..at + 4].try_into().expect("4 bytes"));
    a | ((b & 0x4040_4040) >> 1) == b
}

/// Iterates the comma-separated elements of a list-valued header, trimmed, skipping empty ones.
pub(crate) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::eq_lowercase;
    use crate::head::KNOWN_CODINGS;

    /// Every name and token the codec compares with but the transfer codings (those are
    /// [`KNOWN_CODINGS`]), and lengths around the word sizes.
    const LOWER: &[&[u8]] = &[
        b"te",
        b"via",
        b"host",
        b"expect",
        b"upgrade",
        b"trailer",
        b"connection",
        b"keep-alive",
        b"content-length",
        b"x-forwarded-for",
        b"proxy-connection",
        b"x-forwarded-host",
        b"transfer-encoding",
        b"x-forwarded-proto",
        b"close",
        b"chunked",
        b"100-continue",
        b"a",
        b"",
        b"abcdefgh",
        b"abcdefghi-0123456789-abcdefghijkl",
    ];

    /// Agrees with `eq_ignore_ascii_case` for every byte value at every position of every
    /// candidate ([`LOWER`] and [`KNOWN_CODINGS`]), for the candidate in any case, and for other
    /// lengths.
    #[test]
    fn eq_lowercase_is_eq_ignore_ascii_case() {
        for &lower in LOWER.iter().chain(KNOWN_CODINGS) {
            let upper = lower.to_ascii_uppercase();
            assert!(eq_lowercase(lower, lower));
            assert!(eq_lowercase(&upper, lower));
            for i in 0..lower.len() {
                for b in 0..=255u8 {
                    for base in [lower, &upper[..]] {
                        let mut s = base.to_vec();
                        s[i] = b;
                        assert_eq!(
                            eq_lowercase(&s, lower),
                            s.eq_ignore_ascii_case(lower),
                            "{:?} vs {:?}",
                            String::from_utf8_lossy(&s),
                            String::from_utf8_lossy(lower)
                        );
                    }
                }
            }
            for extra in [&b""[..], b"x", b"-"] {
                let mut longer = lower.to_vec();
                longer.extend_from_slice(extra);
                assert_eq!(eq_lowercase(&longer, lower), extra.is_empty());
            }
            if let Some((_, shorter)) = lower.split_last() {
                assert!(!eq_lowercase(shorter, lower));
            }
        }
    }
}
