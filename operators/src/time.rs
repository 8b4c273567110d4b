//! Logical time: `u64` milliseconds of event time (UTC epoch ms), as SPEC §3 defines it.

use std::time::Duration;

/// Logical time in UTC epoch milliseconds. Every admitted event carries one; every output at
/// logical time `t` is a function of the admitted events with logical time `<= t` only.
pub type LogicalTime = u64;

/// Converts a duration to whole milliseconds of logical time (saturating at `u64::MAX`).
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The start of the interval of length `len_ms` that contains `t` (intervals are aligned to 0).
/// An interval length of 0 is treated as 1 ms.
pub fn interval_start(t: LogicalTime, len_ms: u64) -> LogicalTime {
    let len = len_ms.max(1);
    t - (t % len)
}

/// Formats logical time as RFC 3339 UTC with millisecond precision, e.g.
/// `2026-01-01T00:00:00.000Z`. Used for human-readable file names and docs; never parsed back.
pub fn fmt_rfc3339_millis(t: LogicalTime) -> String {
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let ms = t % 1000;
    let secs = t / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let (h, m, s) = (sod / 3600, (sod % 3600) / 60, sod % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_leap_day() {
        assert_eq!(fmt_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T12:34:56.789Z
        assert_eq!(
            fmt_rfc3339_millis(1_709_210_096_789),
            "2024-02-29T12:34:56.789Z"
        );
    }

    #[test]
    fn interval_alignment() {
        assert_eq!(interval_start(3_599_999, 3_600_000), 0);
        assert_eq!(interval_start(3_600_000, 3_600_000), 3_600_000);
        assert_eq!(interval_start(7, 0), 7);
    }
}
