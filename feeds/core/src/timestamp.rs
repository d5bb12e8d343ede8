//! Venue times to ms since the Unix epoch, without a date-time crate.

/// Parses an RFC 3339 UTC time such as Coinbase's `2022-10-19T23:28:22.061769Z`
/// (or with a `+HH:MM` / `-HH:MM` offset) into ms since the Unix epoch.
/// Fractions beyond ms are truncated. `None` when malformed or before 1970.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            part.iter()
                .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
        )
    };
    let sep = |at: usize, chars: &[u8]| b.get(at).is_some_and(|c| chars.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=days_in_month(year, month)).contains(&day) {
        return None;
    }
    // 60 allows a leap second (counted as the next second's start).
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                ms = ms * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if c == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    let total = secs.checked_mul(1000)?.checked_add(ms)?;
    u64::try_from(total).ok()
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coinbase_times_parse_to_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2022-10-19T23:28:22.061769Z"),
            Some(1_666_222_102_061)
        );
        assert_eq!(
            parse_rfc3339_ms("2014-11-07T08:19:28.464459Z"),
            Some(1_415_348_368_464)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-26T04:32:00.1Z"),
            Some(1_764_131_520_100)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T12:00:00Z"),
            Some(1_709_208_000_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T14:00:00+02:00"),
            parse_rfc3339_ms("2024-02-29T12:00:00Z")
        );
        assert_eq!(
            parse_rfc3339_ms("2024-02-29T10:30:00-01:30"),
            parse_rfc3339_ms("2024-02-29T12:00:00Z")
        );
    }

    #[test]
    fn malformed_times_are_refused() {
        for s in [
            "",
            "2022-10-19",
            "2022-10-19T23:28:22",
            "2022-10-19T23:28:22.Z",
            "2022-13-19T23:28:22Z",
            "2023-02-29T00:00:00Z",
            "2022-10-19T24:00:00Z",
            "2022-10-19T23:28:22Zx",
            "1969-12-31T23:59:59Z",
            "2022-1a-19T23:28:22Z",
            "2022-10-19T23:28:22+0200",
        ] {
            assert_eq!(parse_rfc3339_ms(s), None, "{s:?}");
        }
    }
}
