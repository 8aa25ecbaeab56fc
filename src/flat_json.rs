//! A fast path for the JSON shape almost every ad event has: one flat object,
//! compact (no whitespace), string values without escapes, a plain number
//! for `revenue`. It either returns the six fields the engine needs, exactly
//! as serde_json would have produced them (borrowed from the input), or
//! `None` as soon as anything differs from that shape (whitespace, an escape,
//! a control character, a nested or non-string value, a duplicate or missing
//! field, trailing bytes), and the caller parses the message with serde_json,
//! which then decides and classifies any error. So it can only make valid
//! input faster, never change what is accepted or why something is rejected;
//! `parse::tests::fast_path_agrees_with_serde_json` checks that on mutated
//! events.
//!
//! Why: serde_json was 58 % of the engine's time per event; this scan is a
//! single pass over the bytes with no per-field dispatch through serde.

/// The fields the engine reads, borrowed from the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    pub event_id: &'a str,
    pub timestamp: &'a str,
    pub campaign_id: &'a str,
    pub ad_format: &'a str,
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
/// Optional string fields: type-checked by serde, so seen here only as
/// strings, and (like every named field) at most once.
const USER_ID: usize = 6;
const COUNTRY: usize = 7;
const DEVICE: usize = 8;
const NAMED: usize = 9;

/// The fields of `text` if it has the simple shape, else `None`.
pub fn scan(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut seen: [Option<&str>; NAMED] = [None; NAMED];
    let mut i = 1;
    loop {
        let (key, next) = string(text, i)?;
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
        let (value, next) = if slot == REVENUE { number(text, i)? } else { string(text, i)? };
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
        event_type: seen[EVENT_TYPE]?,
        revenue: seen[REVENUE]?,
    })
}

/// A string starting at `i` (its opening quote) with no escape and no
/// control character: its contents and the index after its closing quote.
fn string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = b.get(start..)?.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    let end = start + len;
    if b[end] != b'"' {
        return None;
    }
    // Quotes are ASCII, so both ends are character boundaries.
    Some((text.get(start..end)?, end + 1))
}

/// A JSON number starting at `i`, exactly per the JSON grammar
/// (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`): its text and the index
/// after it.
fn number(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let digit = |j: usize| b.get(j).is_some_and(u8::is_ascii_digit);
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => {
            while digit(j) {
                j += 1;
            }
        }
        _ => return None,
    }
    if b.get(j) == Some(&b'.') {
        j += 1;
        let d = j;
        while digit(j) {
            j += 1;
        }
        if j == d {
            return None;
        }
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let d = j;
        while digit(j) {
            j += 1;
        }
        if j == d {
            return None;
        }
    }
    Some((text.get(i..j)?, j))
}

#[cfg(test)]
mod tests {
    use super::*;

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
                event_type: "click",
                revenue: "0.0523",
            }
        );
        assert!(scan(&GOOD.replace(r#""device":"iOS","#, r#""placement":"top","#)).is_some(), "unknown string field");
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
        ];
        for c in cases {
            assert_eq!(scan(&c), None, "{c}");
        }
        assert!(scan(&GOOD.replace("0.0523", "-0.5e-3")).is_some(), "any valid number is taken as text");
    }
}
