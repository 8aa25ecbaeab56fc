//! Event time: parsing ISO-8601 timestamps into epoch microseconds and
//! formatting them back.
//!
//! The parser is hand-written rather than chrono's because it sits on the hot
//! path (one call per event) and must never allocate. It accepts exactly the
//! shapes ad producers send: `YYYY-MM-DDTHH:MM:SS`, an optional fraction of
//! 1–9 digits (truncated to microseconds), and an optional offset `Z`,
//! `+HH:MM`, `+HHMM` or `+HH`. No offset means UTC. A space may replace `T`.

use chrono::{DateTime, Utc};

/// Microseconds per second.
pub const MICROS_PER_SEC: i64 = 1_000_000;

/// Why a timestamp was rejected; the text is stable and ends up in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampError;

/// Parses an ISO-8601 timestamp into microseconds since the Unix epoch (UTC).
pub fn parse_timestamp_micros(s: &str) -> Result<i64, TimestampError> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err(TimestampError);
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let hour = digits(b, 11, 2)? as i64;
    let minute = digits(b, 14, 2)? as i64;
    let second = digits(b, 17, 2)? as i64;
    if b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ' || b[10] == b't') {
        return Err(TimestampError);
    }
    if b[13] != b':' || b[16] != b':' {
        return Err(TimestampError);
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(TimestampError);
    }
    // Second 60 (leap second) is not accepted: ad events never carry it and
    // accepting it would make two distinct strings map to one instant.
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimestampError);
    }
    let mut i = 19;
    let mut micros: i64 = 0;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return Err(TimestampError);
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let mut offset_secs: i64 = 0;
    if i < b.len() {
        match b[i] {
            b'Z' | b'z' if i + 1 == b.len() => {}
            sign @ (b'+' | b'-') => {
                let rest = &b[i + 1..];
                let (oh, om) = match rest.len() {
                    2 => (digits(rest, 0, 2)?, 0),
                    4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                    5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                    _ => return Err(TimestampError),
                };
                if oh > 23 || om > 59 {
                    return Err(TimestampError);
                }
                offset_secs = i64::from(oh * 3600 + om * 60);
                if sign == b'-' {
                    offset_secs = -offset_secs;
                }
            }
            _ => return Err(TimestampError),
        }
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * MICROS_PER_SEC + micros)
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for &c in b.get(at..at + n).ok_or(TimestampError)? {
        if !c.is_ascii_digit() {
            return Err(TimestampError);
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), exact for every year this parser accepts.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A UTC date-time for display.
pub fn to_datetime(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// `2025-12-10 00:46:00`
pub fn format_seconds(micros: i64) -> String {
    to_datetime(micros).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `00:46:10`
pub fn format_time_of_day(micros: i64) -> String {
    to_datetime(micros).format("%H:%M:%S").to_string()
}

/// `2025-12-10T00:46:21.994570`: the wire format the generator writes
/// (microseconds, no offset, meaning UTC).
pub fn format_event_timestamp(micros: i64) -> String {
    to_datetime(micros).format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Appends `2025-12-10T00:46:21.994570` for `micros` to `out` without
/// going through a formatter: the generator calls this once per event.
pub fn write_event_timestamp(micros: i64, out: &mut Vec<u8>) {
    let secs = micros.div_euclid(MICROS_PER_SEC);
    let frac = micros.rem_euclid(MICROS_PER_SEC);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    fn num(out: &mut Vec<u8>, v: i64, width: usize) {
        let mut buf = [b'0'; 8];
        let mut v = v;
        for i in (0..width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    num(out, y, 4);
    out.push(b'-');
    num(out, m, 2);
    out.push(b'-');
    num(out, d, 2);
    out.push(b'T');
    num(out, sod / 3600, 2);
    out.push(b':');
    num(out, sod / 60 % 60, 2);
    out.push(b':');
    num(out, sod % 60, 2);
    out.push(b'.');
    num(out, frac, 6);
}

/// Inverse of `days_from_civil` (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A whole duration, compactly: `10s`, `1m`, `1h`, `1h30m`, `250ms`.
pub fn format_duration_us(us: i64) -> String {
    if us <= 0 || us % 1_000 != 0 {
        return format!("{us}us");
    }
    if us % 1_000_000 != 0 {
        return format!("{}ms", us / 1_000);
    }
    let s = us / 1_000_000;
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    for (v, unit) in [(h, "h"), (m, "m"), (sec, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDateTime;

    fn chrono_micros(s: &str) -> i64 {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return dt.timestamp_micros();
        }
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").expect("chrono parses").and_utc().timestamp_micros()
    }

    #[test]
    fn parses_the_wire_format_as_utc() {
        let s = "2025-12-10T00:46:21.994570";
        assert_eq!(parse_timestamp_micros(s), Ok(chrono_micros(s)));
        assert_eq!(parse_timestamp_micros("1970-01-01T00:00:00"), Ok(0), "epoch");
    }

    #[test]
    fn agrees_with_chrono_on_many_shapes() {
        for s in [
            "2025-12-10T00:46:21Z",
            "2025-12-10T00:46:21.5Z",
            "2025-12-10T09:46:21.994570+09:00",
            "2025-12-09T19:46:21.994570-05:00",
            "2024-02-29T23:59:59.999999Z",
            "2000-03-01T00:00:00Z",
            "1969-12-31T23:59:59.000001Z",
            "2100-12-31T00:00:00.123456789Z",
        ] {
            assert_eq!(parse_timestamp_micros(s), Ok(chrono_micros(s)), "{s}");
        }
    }

    #[test]
    fn offsets_in_other_spellings() {
        let utc = parse_timestamp_micros("2025-12-10T00:46:21Z").unwrap();
        for s in [
            "2025-12-10T09:46:21+0900",
            "2025-12-10T09:46:21+09",
            "2025-12-10 09:46:21+09:00",
            "2025-12-10T00:46:21",
            "2025-12-10 00:46:21",
        ] {
            assert_eq!(parse_timestamp_micros(s), Ok(utc), "{s}");
        }
    }

    #[test]
    fn fraction_is_truncated_to_micros() {
        let a = parse_timestamp_micros("2025-12-10T00:46:21.1234569Z").unwrap();
        let b = parse_timestamp_micros("2025-12-10T00:46:21.123456Z").unwrap();
        assert_eq!(a, b);
        let c = parse_timestamp_micros("2025-12-10T00:46:21.12").unwrap();
        assert_eq!(c - parse_timestamp_micros("2025-12-10T00:46:21").unwrap(), 120_000);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "2025-12-10",
            "2025-13-10T00:46:21",
            "2025-02-30T00:46:21",
            "2023-02-29T00:00:00",
            "2025-12-10T24:00:00",
            "2025-12-10T00:60:00",
            "2025-12-10T00:00:60",
            "2025-12-10X00:46:21",
            "2025-12-10T00:46:21.",
            "2025-12-10T00:46:21.1234567890",
            "2025-12-10T00:46:21+9",
            "2025-12-10T00:46:21+25:00",
            "2025-12-10T00:46:21Zjunk",
            "2025-12-10T00:46:21 ",
            "yesterday at noon, roughly",
            "２０２５-12-10T00:46:21",
        ] {
            assert_eq!(parse_timestamp_micros(s), Err(TimestampError), "{s:?}");
        }
    }

    #[test]
    fn fast_writer_matches_chrono() {
        for m in [0i64, 1, 1_765_327_581_994_570, 951_782_400_000_000, 4_102_444_799_999_999, 1_709_251_199_000_001] {
            let mut out = Vec::new();
            write_event_timestamp(m, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), format_event_timestamp(m));
        }
    }

    #[test]
    fn formats_round_trip() {
        let s = "2025-12-10T00:46:21.994570";
        let m = parse_timestamp_micros(s).unwrap();
        assert_eq!(format_event_timestamp(m), s);
        assert_eq!(format_seconds(m), "2025-12-10 00:46:21");
        assert_eq!(format_time_of_day(m), "00:46:21");
    }

    #[test]
    fn durations_print_compactly() {
        let s = 1_000_000;
        for (us, want) in [
            (10 * s, "10s"),
            (60 * s, "1m"),
            (3600 * s, "1h"),
            (5400 * s, "1h30m"),
            (250_000, "250ms"),
            (90 * s, "1m30s"),
        ] {
            assert_eq!(format_duration_us(us), want);
        }
    }
}
