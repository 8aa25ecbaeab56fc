//! A fast path for the JSON shape almost every ad event has: one flat object,
//! compact (no whitespace), ASCII string values without escapes, a plain
//! number for `revenue`. It either returns the eight fields the engine needs,
//! exactly as serde_json would have produced them (borrowed from the input),
//! or `None` as soon as anything differs from that shape (whitespace, an
//! escape, a control character, a byte outside ASCII, a nested or non-string
//! value, a duplicate or missing field, trailing bytes), and the caller
//! checks the message is UTF-8 and parses it with serde_json,
//! which then decides and classifies any error. So it can only make valid
//! input faster, never change what is accepted or why something is rejected;
//! `parse::tests::fast_path_agrees_with_serde_json` checks that on mutated
//! events.
//!
//! Why: serde_json was 58 % of the engine's time per event; this scan is a
//! single pass over the bytes with no per-field dispatch through serde. It
//! reads bytes, not a `str`: a message it accepts is all ASCII (every byte
//! outside a string is structure, a known key or a number, and every byte
//! inside one is checked), so it is valid UTF-8 without the separate pass
//! over the whole message that `str::from_utf8` was (8 % of the engine).

/// The fields the engine reads, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub event_id: &'a str,
    pub timestamp: &'a str,
    pub campaign_id: &'a str,
    pub ad_format: &'a str,
    pub country: &'a str,
    pub device: &'a str,
    pub event_type: &'a str,
    /// The number's text, as in the message.
    pub revenue: &'a str,
}

const EVENT_ID: usize = 0;
const TIMESTAMP: usize = 1;
const CAMPAIGN_ID: usize = 2;
const AD_FORMAT: usize = 3;
const EVENT_TYPE: usize = 4;
const REVENUE: usize = 5;
const COUNTRY: usize = 6;
const DEVICE: usize = 7;
/// An optional string field: type-checked by serde, so seen here only as
/// a string, and (like every named field) at most once.
const USER_ID: usize = 8;
const NAMED: usize = 9;

/// The keys in the order `adstream generate` writes them, quoted and with
/// their colon, as they appear in a compact message.
const ORDER: [(&[u8], usize); 9] = [
    (b"\"event_id\":", EVENT_ID),
    (b"\"timestamp\":", TIMESTAMP),
    (b"\"user_id\":", USER_ID),
    (b"\"campaign_id\":", CAMPAIGN_ID),
    (b"\"ad_format\":", AD_FORMAT),
    (b"\"country\":", COUNTRY),
    (b"\"device\":", DEVICE),
    (b"\"event_type\":", EVENT_TYPE),
    (b"\"revenue\":", REVENUE),
];

/// The fields of message `b` if it has the simple shape, else `None`.
pub fn scan(b: &[u8]) -> Option<Fields<'_>> {
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut seen: [Option<&str>; NAMED] = [None; NAMED];
    let mut i = 1;
    // Index into ORDER of the key expected next.
    let mut expect = 0;
    loop {
        // Most messages list the keys in the generator's order: compare the
        // expected `"key":` bytes directly instead of scanning and matching
        // the key (the same outcome as the general path below, faster).
        let slot = match ORDER.get(expect) {
            Some(&(quoted, slot)) if starts_with_key(b, i, quoted) => {
                i += quoted.len();
                expect += 1;
                slot
            }
            _ => {
                let (key, next) = string(b, i)?;
                i = next;
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i += 1;
                let slot = match key {
                    "event_id" => EVENT_ID,
                    "timestamp" => TIMESTAMP,
                    "campaign_id" => CAMPAIGN_ID,
                    "ad_format" => AD_FORMAT,
                    "event_type" => EVENT_TYPE,
                    "revenue" => REVENUE,
                    "user_id" => USER_ID,
                    "country" => COUNTRY,
                    "device" => DEVICE,
                    _ => NAMED,
                };
                if let Some(k) = ORDER.iter().position(|&(_, s)| s == slot) {
                    expect = k + 1;
                }
                slot
            }
        };
        let (value, next) = if slot == REVENUE { number(b, i)? } else { string(b, i)? };
        i = next;
        if slot < NAMED {
            if seen[slot].is_some() {
                return None;
            }
            seen[slot] = Some(value);
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {
                i += 1;
                break;
            }
            _ => return None,
        }
    }
    if i != b.len() {
        return None;
    }
    Some(Fields {
        event_id: seen[EVENT_ID]?,
        timestamp: seen[TIMESTAMP]?,
        campaign_id: seen[CAMPAIGN_ID]?,
        ad_format: seen[AD_FORMAT]?,
        country: seen[COUNTRY]?,
        device: seen[DEVICE]?,
        event_type: seen[EVENT_TYPE]?,
        revenue: seen[REVENUE]?,
    })
}

/// Whether `b[i..]` starts with `key` (a quoted key and its colon, 9 to 16
/// bytes: all of `ORDER`'s), compared as two overlapping 8-byte words
/// instead of a call to `memcmp` (6 % of the engine's time per event).
fn starts_with_key(b: &[u8], i: usize, key: &[u8]) -> bool {
    let n = key.len();
    debug_assert!((8..=16).contains(&n), "{n}");
    let (Some(rest), Some(k0), Some(k1)) = (b.get(i..i + n), word(key, 0), word(key, n.wrapping_sub(8))) else {
        return b.get(i..).is_some_and(|rest| rest.starts_with(key));
    };
    word(rest, 0) == Some(k0) && word(rest, n - 8) == Some(k1)
}

/// The 8 bytes of `b` at `at`, as a word.
fn word(b: &[u8], at: usize) -> Option<u64> {
    let w: [u8; 8] = b.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_ne_bytes(w))
}

/// `b` as text: only called on bytes that [`special`] found all ASCII.
fn ascii(b: &[u8]) -> &str {
    debug_assert!(b.is_ascii());
    // SAFETY: every byte of `b` is below 0x80 (checked by `special` before
    // each call), and a sequence of ASCII bytes is valid UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

/// A string starting at `i` (its opening quote) with no escape, no control
/// character and only ASCII: its contents and the index after its closing
/// quote.
fn string(b: &[u8], i: usize) -> Option<(&str, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let end = start + special(b.get(start..)?)?;
    if b[end] != b'"' {
        return None;
    }
    Some((ascii(&b[start..end]), end + 1))
}

/// The index of the first `"`, `\\`, control character (< 0x20) or byte
/// outside ASCII (≥ 0x80) in `b`. Eight bytes at a time: for each test,
/// `(x - k) & !x & 0x80..` flags the bytes below `k` in word `x` (applied to
/// `w ^ c` and k = 1 it flags the bytes equal to `c`), and `w & 0x80..` the
/// bytes outside ASCII. A borrow can only set false flags *above* a true
/// one, so the lowest flag of the four tests together is exact.
fn special(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTE: u64 = ONES * b'"' as u64;
    const BACKSLASH: u64 = ONES * b'\\' as u64;
    const SPACE: u64 = ONES * 0x20;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (q, s) = (w ^ QUOTE, w ^ BACKSLASH);
        let flags = ((q.wrapping_sub(ONES) & !q) | (s.wrapping_sub(ONES) & !s) | w.wrapping_sub(SPACE) | w) & HIGH;
        if flags != 0 {
            return Some(at + flags.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|&c| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c)).map(|p| at + p)
}

/// A JSON number starting at `i`, exactly per the JSON grammar
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`): its text and the index
/// after it.
fn number(b: &[u8], i: usize) -> Option<(&str, usize)> {
    let digit = |j: usize| b.get(j).is_some_and(u8::is_ascii_digit);
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    // One or more digits from `j`: the index after them.
    let digits = |mut j: usize| {
        let d = j;
        while digit(j) {
            j += 1;
        }
        (j > d).then_some(j)
    };
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => j = digits(j)?,
        _ => return None,
    }
    if b.get(j) == Some(&b'.') {
        j = digits(j + 1)?;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        j = digits(j)?;
    }
    // Digits, signs, `.` and `e`: ASCII.
    Some((ascii(b.get(i..j)?), j))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::scan`] of a test's text.
    fn scan(text: &str) -> Option<Fields<'_>> {
        super::scan(text.as_bytes())
    }

    const GOOD: &str = r#"{"event_id":"e1","timestamp":"2025-12-10T00:46:21.994570","user_id":"U12345","campaign_id":"C001","ad_format":"banner","country":"US","device":"iOS","event_type":"click","revenue":0.0523}"#;

    #[test]
    fn takes_the_common_shape() {
        let f = scan(GOOD).expect("fast path");
        assert_eq!(
            f,
            Fields {
                event_id: "e1",
                timestamp: "2025-12-10T00:46:21.994570",
                campaign_id: "C001",
                ad_format: "banner",
                country: "US",
                device: "iOS",
                event_type: "click",
                revenue: "0.0523",
            }
        );
        assert!(
            scan(&GOOD.replace(r#""user_id":"U12345","#, r#""placement":"top","#)).is_some(),
            "unknown string field"
        );
        assert!(scan(&GOOD.replace(r#""device":"iOS","#, "")).is_none(), "device is required: serde classifies it");
    }

    #[test]
    fn leaves_everything_else_to_serde() {
        let cases = [
            GOOD.replace(':', ": "),
            GOOD.replace("C001", r"C\u0030\u0030\u0031"),
            GOOD.replace("C001", "C\t01"),
            GOOD.replace(r#""US""#, "7"),
            GOOD.replace(r#""US""#, "null"),
            GOOD.replace(r#""US""#, r#"{"a":1}"#),
            GOOD.replace("0.0523", r#""0.0523""#),
            GOOD.replace("0.0523", "00.5"),
            GOOD.replace("0.0523", "1."),
            GOOD.replace("0.0523", ".5"),
            GOOD.replace("0.0523", "1e"),
            GOOD.replace("0.0523", "NaN"),
            GOOD.replace(r#""event_id":"e1","#, ""),
            GOOD.replace(r#""user_id":"U12345""#, r#""event_id":"e2""#),
            GOOD.replace(r#""country":"US""#, r#""device":"x""#),
            format!("{GOOD} "),
            format!("{GOOD}{{}}"),
            format!(" {GOOD}"),
            GOOD[..GOOD.len() - 1].to_string(),
            "{}".to_string(),
            "[]".to_string(),
            GOOD.replace("C001", "C\u{e9}01"),
            GOOD.replace("U12345", "\u{1f600}"),
        ];
        for c in cases {
            assert_eq!(scan(&c), None, "{c}");
        }
        assert!(scan(&GOOD.replace("0.0523", "-0.5e-3")).is_some(), "any valid number is taken as text");
    }

    #[test]
    fn keys_in_any_order_give_the_same_fields() {
        let reordered = r#"{"revenue":0.0523,"event_type":"click","device":"iOS","country":"US","ad_format":"banner","campaign_id":"C001","user_id":"U12345","timestamp":"2025-12-10T00:46:21.994570","event_id":"e1"}"#;
        assert_eq!(scan(reordered), scan(GOOD));
        let swapped =
            GOOD.replace(r#""user_id":"U12345","campaign_id":"C001""#, r#""campaign_id":"C001","user_id":"U12345""#);
        assert_eq!(scan(&swapped), scan(GOOD));
        // A key that is a prefix or extension of an expected one.
        assert_eq!(scan(&GOOD.replace(r#""event_id":"#, r#""event_idx":"#)), None, "event_id missing");
        assert_eq!(scan(&GOOD.replace(r#""device":"#, r#""device ":"#)), None, "device missing");
        assert_eq!(scan(&GOOD.replace(r#""user_id":"#, r#""user_id ":"#)).map(|f| f.event_id), Some("e1"));
    }

    #[test]
    fn special_finds_the_first_quote_backslash_or_control_byte() {
        let specials = [b'"', b'\\', 0x00, 0x1f, b'\n', 0x80, 0xff, 0xa2, 0xdc, 0x9f, 0xa0, 0xc3];
        let plain = [b'a', b' ', b'!', b'#', b'[', b']', 0x7f, 0x21, 0x5b, 0x5d, 0x20, b'~', b'0'];
        for len in 0..40 {
            for at in 0..=len {
                for &sp in &specials {
                    for &fill in &plain {
                        let mut v = vec![fill; len];
                        if at < len {
                            v[at] = sp;
                            // Specials later on must not matter.
                            for later in v.iter_mut().skip(at + 1).step_by(3) {
                                *later = b'"';
                            }
                        }
                        let want = v.iter().position(|&c| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c));
                        assert_eq!(special(&v), want, "{v:?}");
                    }
                }
            }
        }
    }
}
