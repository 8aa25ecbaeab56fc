//! Bytes off the wire → a validated [`Event`], or a [`Reject`] that says why.
//!
//! Every way an event can be bad has its own [`RejectReason`], so operators
//! see *what* upstream broke, and no input can make the consumer panic.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::engine::event::{AdFormat, Country, Device, Event, EventType};
use crate::engine::money::{self, MICROS_PER_USD};
use crate::engine::time::parse_timestamp_micros;

/// Largest accepted message. Real events are ~250 bytes; anything near this
/// is a producer bug, and parsing it would only waste time.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// Revenue above this per single click is treated as corrupt input.
pub const MAX_REVENUE_MICROS: i64 = 1_000 * MICROS_PER_USD;

/// Why an input message was not counted. The `as_str` names are stable: they
/// are stored in ClickHouse and used as stats labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    EmptyMessage,
    TooLarge,
    InvalidUtf8,
    InvalidJson,
    MissingField,
    WrongType,
    InvalidField,
    UnknownEventType,
    UnknownAdFormat,
    UnknownCountry,
    UnknownDevice,
    InvalidTimestamp,
    /// More than the allowed horizon ahead of the partition's watermark.
    FutureTimestamp,
    InvalidRevenue,
    NegativeRevenue,
    AbsurdRevenue,
    RevenueOnImpression,
    /// The campaign-id interner is full (a producer sending random ids).
    TooManyCampaigns,
}

impl RejectReason {
    pub const ALL: [RejectReason; 18] = [
        RejectReason::EmptyMessage,
        RejectReason::TooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::MissingField,
        RejectReason::WrongType,
        RejectReason::InvalidField,
        RejectReason::UnknownEventType,
        RejectReason::UnknownAdFormat,
        RejectReason::UnknownCountry,
        RejectReason::UnknownDevice,
        RejectReason::InvalidTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::InvalidRevenue,
        RejectReason::NegativeRevenue,
        RejectReason::AbsurdRevenue,
        RejectReason::RevenueOnImpression,
        RejectReason::TooManyCampaigns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::EmptyMessage => "empty_message",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::WrongType => "wrong_type",
            RejectReason::InvalidField => "invalid_field",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::UnknownAdFormat => "unknown_ad_format",
            RejectReason::UnknownCountry => "unknown_country",
            RejectReason::UnknownDevice => "unknown_device",
            RejectReason::InvalidTimestamp => "invalid_timestamp",
            RejectReason::FutureTimestamp => "future_timestamp",
            RejectReason::InvalidRevenue => "invalid_revenue",
            RejectReason::NegativeRevenue => "negative_revenue",
            RejectReason::AbsurdRevenue => "absurd_revenue",
            RejectReason::RevenueOnImpression => "revenue_on_impression",
            RejectReason::TooManyCampaigns => "too_many_campaigns",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A rejected message: the reason and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub detail: String,
}

impl Reject {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Reject { reason, detail: detail.into() }
    }
}

/// The JSON shape on the wire. Strings are borrowed from the input unless
/// they contain escapes; `revenue` is kept as raw text so that it can be
/// parsed exactly into micro-units.
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    campaign_id: Cow<'a, str>,
    #[serde(borrow)]
    ad_format: Cow<'a, str>,
    #[serde(borrow)]
    country: Cow<'a, str>,
    #[serde(borrow)]
    device: Cow<'a, str>,
    #[serde(borrow)]
    event_type: Cow<'a, str>,
    #[serde(borrow)]
    revenue: &'a RawValue,
    #[serde(default)]
    #[allow(dead_code)]
    user_id: Option<AnyStr>,
}

/// A string field that is type-checked and dropped. Deserializing it never
/// allocates, unlike `Option<Cow<str>>`, which serde fills with an owned
/// `String` (its zero-copy borrowing only applies to a bare `Cow` field):
/// that was three heap allocations per event.
struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// Parses and validates one message payload.
pub fn parse_event(payload: &[u8], max_bytes: usize) -> Result<Event<'_>, Reject> {
    parse_event_with(payload, max_bytes, true)
}

/// [`parse_event`], optionally without the fast path (for the test that
/// compares the two).
fn parse_event_with(payload: &[u8], max_bytes: usize, fast: bool) -> Result<Event<'_>, Reject> {
    if payload.is_empty() {
        return Err(Reject::new(RejectReason::EmptyMessage, "empty message"));
    }
    if payload.len() > max_bytes {
        return Err(Reject::new(RejectReason::TooLarge, format!("{} bytes > limit {max_bytes}", payload.len())));
    }
    // The fast path takes only ASCII messages (UTF-8 by construction);
    // anything else is checked for UTF-8 here and parsed by serde_json.
    let wire = match crate::engine::flat_json::scan(payload).filter(|_| fast) {
        Some(f) => Fields {
            event_id: Cow::Borrowed(f.event_id),
            timestamp: Cow::Borrowed(f.timestamp),
            campaign_id: Cow::Borrowed(f.campaign_id),
            ad_format: Cow::Borrowed(f.ad_format),
            country: Cow::Borrowed(f.country),
            device: Cow::Borrowed(f.device),
            event_type: Cow::Borrowed(f.event_type),
            revenue: f.revenue,
        },
        None => {
            let text = std::str::from_utf8(payload).map_err(|e| {
                Reject::new(RejectReason::InvalidUtf8, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
            })?;
            parse_with_serde(text)?
        }
    };
    validate(wire)
}

/// The fields the engine needs, from either parser.
struct Fields<'a> {
    event_id: Cow<'a, str>,
    timestamp: Cow<'a, str>,
    campaign_id: Cow<'a, str>,
    ad_format: Cow<'a, str>,
    country: Cow<'a, str>,
    device: Cow<'a, str>,
    event_type: Cow<'a, str>,
    /// The number's text (or whatever JSON value stood there).
    revenue: &'a str,
}

/// The general parser: any valid JSON, with the error classified when it is
/// not an event.
fn parse_with_serde(text: &str) -> Result<Fields<'_>, Reject> {
    let w: Wire<'_> = serde_json::from_str(text).map_err(classify_json_error)?;
    Ok(Fields {
        event_id: w.event_id,
        timestamp: w.timestamp,
        campaign_id: w.campaign_id,
        ad_format: w.ad_format,
        country: w.country,
        device: w.device,
        event_type: w.event_type,
        revenue: w.revenue.get(),
    })
}

fn validate(wire: Fields<'_>) -> Result<Event<'_>, Reject> {
    if wire.event_id.is_empty() || wire.event_id.len() > 128 {
        return Err(Reject::new(RejectReason::InvalidField, "event_id must be 1..=128 bytes"));
    }
    if wire.campaign_id.is_empty() || wire.campaign_id.len() > 64 {
        return Err(Reject::new(RejectReason::InvalidField, "campaign_id must be 1..=64 bytes"));
    }
    let event_type = EventType::parse(&wire.event_type).ok_or_else(|| {
        Reject::new(RejectReason::UnknownEventType, format!("event_type {:?}", truncate(&wire.event_type)))
    })?;
    let ad_format = AdFormat::parse(&wire.ad_format).ok_or_else(|| {
        Reject::new(RejectReason::UnknownAdFormat, format!("ad_format {:?}", truncate(&wire.ad_format)))
    })?;
    let country = Country::parse(&wire.country)
        .ok_or_else(|| Reject::new(RejectReason::UnknownCountry, format!("country {:?}", truncate(&wire.country))))?;
    let device = Device::parse(&wire.device)
        .ok_or_else(|| Reject::new(RejectReason::UnknownDevice, format!("device {:?}", truncate(&wire.device))))?;
    let timestamp_us = parse_timestamp_micros(&wire.timestamp).map_err(|_| {
        Reject::new(RejectReason::InvalidTimestamp, format!("timestamp {:?}", truncate(&wire.timestamp)))
    })?;
    let revenue_micros = parse_revenue(wire.revenue)?;
    if event_type == EventType::Impression && revenue_micros != 0 {
        return Err(Reject::new(
            RejectReason::RevenueOnImpression,
            format!("impression with revenue {}", money::format_micros(revenue_micros)),
        ));
    }
    Ok(Event {
        event_id: wire.event_id,
        timestamp_us,
        campaign_id: wire.campaign_id,
        ad_format,
        country,
        device,
        event_type,
        revenue_micros,
    })
}

fn parse_revenue(raw: &str) -> Result<i64, Reject> {
    let first = raw.as_bytes().first().copied().unwrap_or(b' ');
    if !(first == b'-' || first.is_ascii_digit()) {
        return Err(Reject::new(RejectReason::WrongType, format!("revenue must be a number, got {}", truncate(raw))));
    }
    let micros = money::parse_micros(raw)
        .map_err(|_| Reject::new(RejectReason::InvalidRevenue, format!("revenue {}", truncate(raw))))?;
    if micros < 0 {
        return Err(Reject::new(RejectReason::NegativeRevenue, format!("revenue {raw}")));
    }
    if micros > MAX_REVENUE_MICROS {
        return Err(Reject::new(RejectReason::AbsurdRevenue, format!("revenue {} > $1000", truncate(raw))));
    }
    Ok(micros)
}

fn classify_json_error(e: serde_json::Error) -> Reject {
    let msg = e.to_string();
    let reason = match e.classify() {
        serde_json::error::Category::Data if msg.starts_with("missing field") => RejectReason::MissingField,
        serde_json::error::Category::Data if msg.starts_with("invalid type") => RejectReason::WrongType,
        serde_json::error::Category::Data if msg.starts_with("duplicate field") => RejectReason::InvalidJson,
        serde_json::error::Category::Data => RejectReason::WrongType,
        _ => RejectReason::InvalidJson,
    };
    Reject::new(reason, msg)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"event_id":"e1","timestamp":"2025-12-10T00:46:21.994570","user_id":"U12345","campaign_id":"C001","ad_format":"banner","country":"US","device":"iOS","event_type":"click","revenue":0.0523}"#;

    fn reason(s: &[u8]) -> RejectReason {
        parse_event(s, DEFAULT_MAX_EVENT_BYTES).expect_err("must reject").reason
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v[field] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    fn without(field: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v.as_object_mut().unwrap().remove(field);
        v.to_string()
    }

    #[test]
    fn parses_every_field() {
        let e = parse_event(GOOD.as_bytes(), DEFAULT_MAX_EVENT_BYTES).unwrap();
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.timestamp_us, parse_timestamp_micros("2025-12-10T00:46:21.994570Z").unwrap());
        assert_eq!(e.campaign_id, "C001");
        assert_eq!(e.ad_format, AdFormat::Banner);
        assert_eq!((e.country, e.device), (Country::Us, Device::Ios));
        assert_eq!(e.event_type, EventType::Click);
        assert_eq!(e.revenue_micros, 52_300);
        assert!(matches!(e.campaign_id, Cow::Borrowed(_)), "no allocation for plain strings");
    }

    #[test]
    fn timestamps_with_and_without_offsets() {
        let ts = |t: &str| parse_event(with("timestamp", t).as_bytes(), 1 << 20).unwrap().timestamp_us;
        let utc = ts(r#""2025-12-10T00:46:21Z""#);
        assert_eq!(utc, ts(r#""2025-12-10T09:46:21+09:00""#));
        assert_eq!(utc, ts(r#""2025-12-10T00:46:21""#));
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let s = with("campaign_id", r#""C\u0030\u0030\u0031""#);
        let e = parse_event(s.as_bytes(), 1 << 20).unwrap();
        assert_eq!(e.campaign_id, "C001");
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_ones_may_be_absent() {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        v["placement"] = "top".into();
        v.as_object_mut().unwrap().remove("user_id");
        assert!(parse_event(v.to_string().as_bytes(), 1 << 20).is_ok());
    }

    #[test]
    fn impression_with_zero_revenue_in_any_spelling() {
        for r in ["0", "0.0", "0e0", "-0"] {
            let s = with("event_type", r#""impression""#).replace("0.0523", r);
            let e = parse_event(s.as_bytes(), 1 << 20).unwrap();
            assert_eq!(e.revenue_micros, 0, "{r}");
        }
    }

    #[test]
    fn rejection_reasons() {
        assert_eq!(reason(b""), RejectReason::EmptyMessage);
        assert_eq!(reason(&vec![b' '; DEFAULT_MAX_EVENT_BYTES + 1]), RejectReason::TooLarge);
        assert_eq!(reason(b"{\"event_id\":\"\xff\"}"), RejectReason::InvalidUtf8);
        assert_eq!(reason(b"not json"), RejectReason::InvalidJson);
        assert_eq!(reason(b"{\"event_id\":"), RejectReason::InvalidJson);
        assert_eq!(reason(b"[1,2,3]"), RejectReason::WrongType);
        assert_eq!(reason(b"null"), RejectReason::WrongType);
        for f in ["event_id", "timestamp", "campaign_id", "ad_format", "country", "device", "event_type", "revenue"] {
            assert_eq!(reason(without(f).as_bytes()), RejectReason::MissingField, "{f}");
        }
        assert_eq!(reason(with("revenue", r#""0.05""#).as_bytes()), RejectReason::WrongType);
        assert_eq!(reason(with("revenue", "null").as_bytes()), RejectReason::WrongType);
        assert_eq!(reason(with("timestamp", "1765327581").as_bytes()), RejectReason::WrongType);
        assert_eq!(reason(with("campaign_id", "1").as_bytes()), RejectReason::WrongType);
        assert_eq!(reason(with("country", "7").as_bytes()), RejectReason::WrongType);
        assert_eq!(reason(with("event_id", r#""""#).as_bytes()), RejectReason::InvalidField);
        assert_eq!(
            reason(with("campaign_id", &format!("\"{}\"", "C".repeat(65))).as_bytes()),
            RejectReason::InvalidField
        );
        assert_eq!(reason(with("event_type", r#""conversion""#).as_bytes()), RejectReason::UnknownEventType);
        assert_eq!(reason(with("ad_format", r#""video""#).as_bytes()), RejectReason::UnknownAdFormat);
        assert_eq!(reason(with("country", r#""BR""#).as_bytes()), RejectReason::UnknownCountry);
        assert_eq!(reason(with("country", r#""us""#).as_bytes()), RejectReason::UnknownCountry);
        assert_eq!(reason(with("device", r#""Windows""#).as_bytes()), RejectReason::UnknownDevice);
        assert_eq!(reason(with("device", r#""ios""#).as_bytes()), RejectReason::UnknownDevice);
        assert_eq!(reason(with("timestamp", r#""yesterday""#).as_bytes()), RejectReason::InvalidTimestamp);
        assert_eq!(reason(with("revenue", "-0.01").as_bytes()), RejectReason::NegativeRevenue);
        assert_eq!(reason(with("revenue", "1000.000001").as_bytes()), RejectReason::AbsurdRevenue);
        assert_eq!(reason(with("revenue", "1e300").as_bytes()), RejectReason::InvalidRevenue);
        assert_eq!(reason(GOOD.replace("0.0523", "NaN").as_bytes()), RejectReason::InvalidJson);
        assert_eq!(reason(with("event_type", r#""impression""#).as_bytes()), RejectReason::RevenueOnImpression);
        assert!(parse_event(with("revenue", "1000").as_bytes(), 1 << 20).is_ok());
    }

    /// `parse_event` without the fast path.
    fn parse_serde_only(payload: &[u8]) -> Result<Event<'_>, Reject> {
        parse_event_with(payload, DEFAULT_MAX_EVENT_BYTES, false)
    }

    #[test]
    fn fast_path_agrees_with_serde_json() {
        use crate::generator::{Generator, GeneratorConfig, DEFAULT_SEEDED_START_US};
        let mut g = Generator::new(GeneratorConfig {
            seed: Some(9),
            start_time_us: DEFAULT_SEEDED_START_US,
            event_rate: 1000.0,
            jitter_us: 0,
        });
        let (mut key, mut json) = (Vec::new(), Vec::new());
        // Bytes that matter to a JSON scanner, and some that do not.
        // With bytes outside ASCII: a lone continuation byte, a lead byte
        // without its continuation (invalid UTF-8 both), and `é`'s lead byte
        // after which a continuation byte makes valid UTF-8.
        const PROBES: &[u8] = b"\"\\ ,:{}[]0-.eE+anu7\x01\t\x80\xc3\xa9\xff";
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let (mut fast, mut variants, mut accepted, mut rejected) = (0, 0, 0, 0);
        for _ in 0..3000 {
            g.next_into(|| 0, &mut key, &mut json);
            let mut cases = vec![json.clone()];
            for _ in 0..8 {
                let mut v = json.clone();
                let k = next(v.len());
                match next(4) {
                    0 => v[k] = PROBES[next(PROBES.len())],
                    1 => drop(v.remove(k)),
                    2 => v.insert(k, PROBES[next(PROBES.len())]),
                    _ => v.truncate(k),
                }
                cases.push(v);
            }
            for v in cases {
                variants += 1;
                if crate::engine::flat_json::scan(&v).is_some() {
                    fast += 1;
                }
                match (parse_event(&v, DEFAULT_MAX_EVENT_BYTES), parse_serde_only(&v)) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(a, b, "{}", String::from_utf8_lossy(&v));
                        accepted += 1;
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!((a.reason, &a.detail), (b.reason, &b.detail), "{}", String::from_utf8_lossy(&v));
                        rejected += 1;
                    }
                    (a, b) => panic!("{}: fast path {a:?}, serde_json {b:?}", String::from_utf8_lossy(&v)),
                }
            }
        }
        println!("{variants} variants: {fast} took the fast path, {accepted} accepted, {rejected} rejected, all as serde_json");
        assert!(fast >= 3000, "every unmutated event takes the fast path ({fast})");
        assert!(accepted > fast / 2 && rejected > variants / 5, "{accepted} accepted, {rejected} rejected");
    }

    #[test]
    fn reason_names_are_unique() {
        let mut names: Vec<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RejectReason::ALL.len());
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
