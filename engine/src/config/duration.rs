//! Duration strings: `"150ms"`, `"1s"`, `"1.5s"`, `"2m"`, `"1h"`.
//!
//! One number (integer or decimal, at most nine decimal places) immediately followed by one unit
//! out of `ms`, `s`, `m` and `h`. No sign, no whitespace, no compound values like `"1m30s"`
//! (write `"90s"`), at most one year. The error text says what is wrong and shows the input.

use std::time::Duration;

/// The largest duration a config may hold (one year); keeps `Instant + d` far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const HINT: &str =
    "expected a number followed by a unit (ms, s, m or h), e.g. \"500ms\", \"1.5s\" or \"2m\"";

const UNITS: [(&str, u128); 4] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// Parses a duration string; the error is a complete sentence naming the input.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {text:?}: {why}");
    if text.is_empty() {
        return Err(invalid(HINT));
    }
    if text.starts_with('-') {
        return Err(invalid("durations cannot be negative"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(invalid(
            "no spaces allowed between number and unit, e.g. \"10s\"",
        ));
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(invalid(HINT));
    }
    if unit.is_empty() {
        return Err(invalid("missing unit (ms, s, m or h)"));
    }
    let unit_nanos = match UNITS.iter().find(|(name, _)| *name == unit) {
        Some((_, nanos)) => *nanos,
        None => {
            // "1m30s": a known unit followed by more digits.
            let rest = unit.trim_start_matches(|c: char| c.is_ascii_alphabetic());
            let head_unit = &unit[..unit.len() - rest.len()];
            if rest.starts_with(|c: char| c.is_ascii_digit())
                && UNITS.iter().any(|(name, _)| *name == head_unit)
            {
                return Err(invalid(
                    "use a single unit, e.g. \"90s\" rather than \"1m30s\"",
                ));
            }
            return Err(invalid(&format!(
                "unknown unit {unit:?}; use ms, s, m or h"
            )));
        }
    };
    let (int, frac) = match number.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (number, ""),
    };
    let has_point = number.contains('.');
    if int.is_empty() || (has_point && frac.is_empty()) || frac.contains('.') {
        return Err(invalid(HINT));
    }
    if frac.len() > 9 {
        return Err(invalid("at most nine decimal places"));
    }
    let too_large = || invalid("too large (at most 8760h, one year)");
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| invalid(HINT))?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let nanos = int
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(frac_value * unit_nanos / scale))
        .ok_or_else(too_large)?;
    if nanos > MAX_DURATION.as_nanos() {
        return Err(too_large());
    }
    let secs = (nanos / 1_000_000_000) as u64;
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse_duration(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse_duration(text) {
            Ok(d) => panic!("{text:?} parsed as {d:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn units() {
        assert_eq!(ok("150ms"), Duration::from_millis(150));
        assert_eq!(ok("1s"), Duration::from_secs(1));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("0ms"), Duration::ZERO);
    }

    #[test]
    fn decimals() {
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("0.25m"), Duration::from_secs(15));
        assert_eq!(ok("0.5ms"), Duration::from_micros(500));
        assert_eq!(ok("1.000000001s"), Duration::new(1, 1));
        assert_eq!(ok("1.25h"), Duration::from_secs(4500));
        assert_eq!(ok("007s"), Duration::from_secs(7));
    }

    #[test]
    fn limits() {
        assert_eq!(ok("8760h"), MAX_DURATION);
        assert!(err("8761h").contains("too large"));
        assert!(err("99999999999999999999999999999999999999999999h").contains("too large"));
        assert!(err("1.0000000001s").contains("decimal places"));
    }

    #[test]
    fn rejects_with_reason() {
        assert!(err("10 s").contains("no spaces"));
        assert!(err(" 10s").contains("no spaces"));
        assert!(err("-1s").contains("negative"));
        assert!(err("abc").contains("expected a number followed by a unit"));
        assert!(err("").contains("expected a number"));
        assert!(err("10").contains("missing unit"));
        assert!(err("10x").contains("unknown unit \"x\""));
        assert!(err("10us").contains("unknown unit"));
        assert!(err("10sec").contains("unknown unit"));
        assert!(err("1m30s").contains("single unit"));
        assert!(err("1h30m").contains("single unit"));
        assert!(err(".5s").contains("expected a number"));
        assert!(err("1.s").contains("expected a number"));
        assert!(err("1.2.3s").contains("expected a number"));
        assert!(err("+1s").contains("expected a number"));
        assert!(err("1e3s").contains("unknown unit"));
    }

    #[test]
    fn error_names_the_input() {
        assert!(err("10 s").starts_with("invalid duration \"10 s\": "));
    }
}
