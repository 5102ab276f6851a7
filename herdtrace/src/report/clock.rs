//! Wall-clock stamps for records: RFC 3339 in UTC with microseconds
//! ("2026-11-30T06:15:52.123456Z"), so lines join with server logs, beside
//! the monotonic event time the kernel gives.

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `unix_ns` (nanoseconds since the Unix epoch) as RFC 3339, UTC, microseconds.
pub fn rfc3339_utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = unix_ns % 1_000_000_000 / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Monotonic nanoseconds as seconds with microseconds ("12345.678901").
pub fn mono_seconds(mono_ns: u64) -> String {
    format!(
        "{}.{:06}",
        mono_ns / 1_000_000_000,
        mono_ns % 1_000_000_000 / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        // The brief's example: 2026-11-30T06:15:52.123456Z = 1796019352 s.
        assert_eq!(
            rfc3339_utc(1_796_019_352_123_456_789),
            "2026-11-30T06:15:52.123456Z"
        );
        // A leap day and the last microsecond of a year.
        assert_eq!(
            rfc3339_utc(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            rfc3339_utc(1_704_067_199_999_999_999),
            "2023-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            rfc3339_utc(4_107_542_400_000_000_000),
            "2100-03-01T00:00:00.000000Z",
            "2100 is not a leap year"
        );
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Days counted forward must match the calendar, month by month.
        let mut days = 0i64;
        for year in 1970..2370i64 {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let lengths = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            for (m, len) in lengths.iter().enumerate() {
                for d in 1..=*len {
                    assert_eq!(civil_from_days(days), (year, m as u32 + 1, d));
                    days += 1;
                }
            }
        }
    }

    #[test]
    fn the_largest_instant_does_not_overflow() {
        assert_eq!(rfc3339_utc(u64::MAX), "2554-07-21T23:34:33.709551Z");
    }

    #[test]
    fn monotonic_seconds() {
        assert_eq!(mono_seconds(12_345_678_901), "12.345678");
        assert_eq!(mono_seconds(0), "0.000000");
    }
}
