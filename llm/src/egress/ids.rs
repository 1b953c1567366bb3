//! Deterministic identifiers: tool-call ids for providers that give none (Gemini), response
//! ids when a provider omits one, and the 9-character alphanumeric tool-call ids Mistral
//! requires. Sans-IO code has no clock or random source, so ids are hashes of what they name.

/// 64-bit FNV-1a over several byte strings, each followed by a separator.
pub(crate) fn hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` base-62 digits of `n` (most significant first, zero-padded, wrapping).
pub(crate) fn base62(mut n: u64, len: usize) -> String {
    let mut out = vec![b'0'; len];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Whether `id` is what Mistral accepts: exactly 9 ASCII letters or digits.
pub(crate) fn is_mistral_tool_id(id: &str) -> bool {
    id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `id` unchanged when Mistral accepts it, else a 9-character alphanumeric id derived from
/// it (the same input always maps to the same id, so a call and its result still match).
pub(crate) fn mistral_tool_id(id: &str) -> String {
    if is_mistral_tool_id(id) {
        id.to_owned()
    } else {
        // 62^9 < 2^64: reduce so every id is exactly nine digits of information.
        base62(hash(&[id.as_bytes()]) % 13_537_086_546_263_552, 9)
    }
}

/// A tool-call id for a call the provider did not name: `call_` and 22 base-62 digits of a
/// hash of the response id, the call's position, its name and its arguments.
pub(crate) fn tool_call_id(response_id: &str, index: u32, name: &str, arguments: &str) -> String {
    let i = index.to_le_bytes();
    let a = hash(&[
        response_id.as_bytes(),
        &i,
        name.as_bytes(),
        arguments.as_bytes(),
    ]);
    let b = hash(&[
        arguments.as_bytes(),
        name.as_bytes(),
        &i,
        response_id.as_bytes(),
    ]);
    format!("call_{}{}", base62(a, 11), base62(b, 11))
}

/// A response id for a provider answer that carried none, from the answer's own bytes.
pub(crate) fn response_id(prefix: &str, body: &[u8]) -> String {
    format!("{prefix}{}", base62(hash(&[body]), 11))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistral_ids() {
        assert_eq!(mistral_tool_id("D681PevKs"), "D681PevKs");
        let mapped = mistral_tool_id("call_PTLP8xhu3uwZk4l3nlnrrJha");
        assert!(is_mistral_tool_id(&mapped), "{mapped}");
        assert_eq!(mapped, mistral_tool_id("call_PTLP8xhu3uwZk4l3nlnrrJha"));
        assert_ne!(mapped, mistral_tool_id("call_PTLP8xhu3uwZk4l3nlnrrJhb"));
        assert!(!is_mistral_tool_id("toolu_01"));
    }

    #[test]
    fn generated_ids_are_stable_and_distinct() {
        let a = tool_call_id("r1", 0, "f", "{}");
        assert_eq!(a, tool_call_id("r1", 0, "f", "{}"));
        assert_ne!(a, tool_call_id("r1", 1, "f", "{}"));
        assert_eq!(a.len(), 5 + 22);
        assert_eq!(base62(61, 2), "0z");
        assert_eq!(response_id("gen-", b"x").len(), 4 + 11);
    }
}
