//! Durations as operators type them: `30s`, `10m`, `1h`, `2d`, a bare
//! number of seconds, or any combination jiff's "friendly" format reads
//! (`1h30m`, `1h 30m`, `1.5h`, `90 minutes`, `1w`). A day is 24 hours and
//! a week 7 days; months and years are refused (their length depends on
//! the date they start from).

use std::time::Duration;

use jiff::{Span, SpanRelativeTo};

/// What the error messages offer as examples.
const EXAMPLES: &str = "e.g. 30s, 10m, 1h30m, 2d";

/// Parses a duration (see the module doc); the error names the input.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        // A bare number is seconds, as it always was (jiff wants a unit).
        return t
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("{text:?} is too long"));
    }
    let span: Span = t
        .parse()
        .map_err(|e| format!("{text:?} is not a duration ({EXAMPLES}): {e}"))?;
    if span.is_negative() {
        return Err(format!("{text:?} is negative; give a duration from now on"));
    }
    let signed = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|_| format!("{text:?}: months and years are not a fixed length ({EXAMPLES})"))?;
    Duration::try_from(signed).map_err(|e| format!("{text:?} is not a duration: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn what_operators_type() {
        for (input, secs) in [
            ("45", 45),
            ("30s", 30),
            ("10m", 600),
            ("1h", 3600),
            ("2d", 172_800),
            (" 5m ", 300),
            ("0s", 0),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("1.5h", 5400),
            ("90 minutes", 5400),
            ("1w", 604_800),
        ] {
            assert_eq!(parse(input), Ok(Duration::from_secs(secs)), "{input:?}");
        }
    }

    #[test]
    fn refusals_name_the_input() {
        for (input, says) in [
            ("", "\"\" is not a duration"),
            ("h", "\"h\" is not a duration"),
            ("soon", "\"soon\" is not a duration"),
            ("-1h", "\"-1h\" is negative"),
            ("1h ago", "\"1h ago\" is negative"),
            ("1y", "\"1y\": months and years"),
            (
                "99999999999999999999",
                "\"99999999999999999999\" is too long",
            ),
            (
                "99999999999999999999d",
                "\"99999999999999999999d\" is not a duration",
            ),
            ("20000000d", "\"20000000d\" is not a duration"),
        ] {
            let err = parse(input).expect_err(input);
            assert!(err.starts_with(says), "{input:?}: {err}");
        }
    }
}
