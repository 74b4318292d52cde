//! Wall-clock time as the cluster records and shows it: Unix seconds in
//! objects and events, RFC 3339 in logs, `YYYY-MM-DD HH:MM:SS` in tables.
//! The calendar arithmetic is `jiff`'s; this module only fixes the formats
//! so every place prints a time the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use jiff::Timestamp;

/// Seconds since the Unix epoch, for `created_at` and friends (0 if the
/// clock is before 1970).
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339_now() -> String {
    let ms = now_unix_millis();
    rfc3339(ms / 1000, (ms % 1000) as u32)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, RFC 3339) for a Unix time; a time
/// beyond year 9999 is printed as its number of seconds.
pub fn rfc3339(secs: u64, millis: u32) -> String {
    match timestamp_ms(secs, millis) {
        Some(t) => format!("{t:.3}"),
        None => format!("@{secs}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm` (UTC) for a Unix time in (fractional) seconds.
pub fn utc_millis(unix: f64) -> String {
    let ms = (unix * 1000.0).max(0.0) as u64;
    match timestamp_ms(ms / 1000, (ms % 1000) as u32) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => format!("@{unix}"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a Unix time in seconds.
pub fn utc_seconds(unix: u64) -> String {
    match timestamp_ms(unix, 0) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("@{unix}"),
    }
}

fn timestamp_ms(secs: u64, millis: u32) -> Option<Timestamp> {
    let ms = i64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(millis.min(999)))?;
    Timestamp::from_millisecond(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(u64::MAX, 0), format!("@{}", u64::MAX));
    }

    #[test]
    fn table_dates() {
        assert_eq!(utc_millis(0.0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_millis(951_782_400.5), "2000-02-29 00:00:00.500");
        assert_eq!(utc_millis(1_795_320_689.0), "2026-11-22 04:11:29.000");
        assert_eq!(utc_millis(-5.0), "1970-01-01 00:00:00.000");
        assert_eq!(utc_seconds(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_seconds(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_seconds(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }
}
