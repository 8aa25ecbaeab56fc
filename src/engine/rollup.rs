//! Rollups: what a window row is keyed by (a subset of the four
//! dimensions) and how long its windows are. The engine aggregates every
//! configured rollup in the same pass over the events; which ones is
//! configuration (`--rollup`), not code.
//!
//! A row of a rollup that leaves a dimension out carries `None` for it (and
//! ClickHouse stores `''`, meaning "all"): every real event has all four, so
//! `''` is never a value.

use crate::engine::event::{AdFormat, Country, Device};
use crate::engine::window::span;

/// Why a list of dimensions is refused ([`Dims::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimsError {
    /// Not one of the four (nor `total`).
    #[error("unknown dimension {0:?} (expected campaign_id, ad_format, country, device or total)")]
    Unknown(String),
    #[error("dimension {0} named twice")]
    Twice(String),
}

/// A set of dimensions, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dims(u8);

impl Dims {
    pub const CAMPAIGN: Dims = Dims(1);
    pub const FORMAT: Dims = Dims(2);
    pub const COUNTRY: Dims = Dims(4);
    pub const DEVICE: Dims = Dims(8);
    /// campaign × format: the contract rollup (`ad_metrics_10s`).
    pub const CAMPAIGN_FORMAT: Dims = Dims(1 | 2);
    /// campaign × format × country × device: the segments.
    pub const SEGMENT: Dims = Dims(1 | 2 | 4 | 8);

    /// The dimension names, in their canonical order (the column order).
    pub const NAMES: [(&'static str, Dims); 4] = [
        ("campaign_id", Dims::CAMPAIGN),
        ("ad_format", Dims::FORMAT),
        ("country", Dims::COUNTRY),
        ("device", Dims::DEVICE),
    ];

    pub fn contains(self, d: Dims) -> bool {
        self.0 & d.0 == d.0
    }

    pub fn union(self, d: Dims) -> Dims {
        Dims(self.0 | d.0)
    }

    /// How many dimensions.
    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// Parses `campaign_id,ad_format,...` (any order, no repeats); `total`
    /// (or nothing) is the empty set: one row per window.
    pub fn parse(s: &str) -> Result<Dims, DimsError> {
        let s = s.trim();
        if s.is_empty() || s == "total" {
            return Ok(Dims(0));
        }
        let mut out = Dims(0);
        for part in s.split(',') {
            let part = part.trim();
            let Some(&(_, d)) = Dims::NAMES.iter().find(|(n, _)| *n == part) else {
                return Err(DimsError::Unknown(part.to_string()));
            };
            if out.contains(d) {
                return Err(DimsError::Twice(part.to_string()));
            }
            out.0 |= d.0;
        }
        Ok(out)
    }

    /// `campaign_id,ad_format`, or `total` for the empty set.
    pub fn name(self) -> String {
        let names: Vec<&str> = Dims::NAMES.iter().filter(|(_, d)| self.contains(*d)).map(|(n, _)| *n).collect();
        if names.is_empty() {
            "total".to_string()
        } else {
            names.join(",")
        }
    }
}

/// The dimension values of one row; `None` where the rollup leaves the
/// dimension out ("all").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentKey {
    /// Interned campaign id (see [`crate::engine::event::Interner`]).
    pub campaign: Option<u32>,
    pub ad_format: Option<AdFormat>,
    pub country: Option<Country>,
    pub device: Option<Device>,
}

/// One rollup: its dimensions and its window size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rollup {
    pub dims: Dims,
    pub size_us: i64,
}

impl Rollup {
    pub fn new(dims: Dims, size_us: i64) -> Self {
        assert!(size_us > 0, "window size must be positive");
        Rollup { dims, size_us }
    }

    /// The default set at base window `base_us` (`--window`): campaign ×
    /// format and the segments at the base window, campaign × format at 1 m
    /// and 1 h, the segments at 1 h (the views `ad_metrics_10s`,
    /// `ad_metrics_segments_10s`, `ad_metrics_1m`, `ad_metrics_1h`,
    /// `ad_metrics_segments_1h`).
    pub fn defaults(base_us: i64) -> Vec<Rollup> {
        const M: i64 = 60_000_000;
        let mut out = vec![Rollup::new(Dims::CAMPAIGN_FORMAT, base_us), Rollup::new(Dims::SEGMENT, base_us)];
        for r in [
            Rollup::new(Dims::CAMPAIGN_FORMAT, M),
            Rollup::new(Dims::CAMPAIGN_FORMAT, 60 * M),
            Rollup::new(Dims::SEGMENT, 60 * M),
        ] {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// Start of the window of this rollup that contains `ts`.
    pub fn window_start(&self, ts: i64) -> i64 {
        span::window_start(self.size_us, ts)
    }

    /// Whether the window starting at `start` has fired (its end passed)
    /// once the watermark is `wm`.
    pub(crate) fn ended_at(&self, start: i64, wm: Option<i64>) -> bool {
        span::ended_at(self.size_us, start, wm)
    }

    /// Whether the window starting at `start` is closed (its end plus the
    /// allowed lateness passed) once the watermark is `wm`.
    pub(crate) fn closed_at(&self, start: i64, lateness_us: i64, wm: i64) -> bool {
        span::closed_at(self.size_us, lateness_us, start, wm)
    }

    /// The cell index of an event's dimension values in this rollup: a
    /// mixed-radix number over the dimensions it keeps (campaign, then
    /// format ×3, country ×7, device ×2), so windows key their cells by a
    /// dense integer with no hashing.
    #[inline]
    pub fn key(&self, campaign: u32, ad_format: AdFormat, country: Country, device: Device) -> u32 {
        let mut k = 0u32;
        if self.dims.contains(Dims::CAMPAIGN) {
            k = campaign;
        }
        if self.dims.contains(Dims::FORMAT) {
            k = k * 3 + ad_format.index() as u32;
        }
        if self.dims.contains(Dims::COUNTRY) {
            k = k * 7 + country.index() as u32;
        }
        if self.dims.contains(Dims::DEVICE) {
            k = k * 2 + device.index() as u32;
        }
        k
    }

    /// The inverse of [`key`](Self::key).
    pub fn decode(&self, mut k: u32) -> SegmentKey {
        let mut out = SegmentKey { campaign: None, ad_format: None, country: None, device: None };
        if self.dims.contains(Dims::DEVICE) {
            out.device = Some(Device::ALL[(k % 2) as usize]);
            k /= 2;
        }
        if self.dims.contains(Dims::COUNTRY) {
            out.country = Some(Country::ALL[(k % 7) as usize]);
            k /= 7;
        }
        if self.dims.contains(Dims::FORMAT) {
            out.ad_format = Some(AdFormat::ALL[(k % 3) as usize]);
            k /= 3;
        }
        if self.dims.contains(Dims::CAMPAIGN) {
            out.campaign = Some(k);
        }
        out
    }

    /// `campaign_id,ad_format:10s`: the form `--rollup` takes.
    pub fn name(&self) -> String {
        format!("{}:{}", self.dims.name(), crate::engine::time::format_duration_us(self.size_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dims_parse_and_name_canonically() {
        assert_eq!(Dims::parse("device,campaign_id").unwrap().name(), "campaign_id,device");
        assert_eq!(Dims::parse("campaign_id,ad_format,country,device").unwrap(), Dims::SEGMENT);
        assert_eq!(Dims::parse("total").unwrap().name(), "total");
        assert_eq!(Dims::parse("campaign_id,campaign_id").unwrap_err(), DimsError::Twice("campaign_id".into()));
        assert_eq!(Dims::parse("region").unwrap_err(), DimsError::Unknown("region".into()));
        // The messages `--rollup` shows, word for word.
        assert_eq!(Dims::parse(" country , country").unwrap_err().to_string(), "dimension country named twice");
        assert_eq!(
            Dims::parse("campaign_id,re\"gion").unwrap_err().to_string(),
            "unknown dimension \"re\\\"gion\" (expected campaign_id, ad_format, country, device or total)"
        );
    }

    #[test]
    fn keys_decode_to_what_they_encode() {
        for dims in 0..16u8 {
            let r = Rollup::new(Dims(dims), 10_000_000);
            let mut seen = std::collections::HashSet::new();
            for c in [0u32, 1, 7, 99_999] {
                for f in AdFormat::ALL {
                    for co in Country::ALL {
                        for d in Device::ALL {
                            let k = r.key(c, f, co, d);
                            let s = r.decode(k);
                            assert_eq!(s.campaign, r.dims.contains(Dims::CAMPAIGN).then_some(c));
                            assert_eq!(s.ad_format, r.dims.contains(Dims::FORMAT).then_some(f));
                            assert_eq!(s.country, r.dims.contains(Dims::COUNTRY).then_some(co));
                            assert_eq!(s.device, r.dims.contains(Dims::DEVICE).then_some(d));
                            seen.insert(k);
                        }
                    }
                }
            }
            let expected = [(Dims::CAMPAIGN, 4), (Dims::FORMAT, 3), (Dims::COUNTRY, 7), (Dims::DEVICE, 2)]
                .iter()
                .filter(|(d, _)| r.dims.contains(*d))
                .map(|(_, n)| *n)
                .product::<usize>();
            assert_eq!(seen.len(), expected, "{}: distinct values get distinct keys", r.name());
        }
    }

    #[test]
    fn defaults_are_the_five_views() {
        let names: Vec<String> = Rollup::defaults(10_000_000).iter().map(Rollup::name).collect();
        assert_eq!(
            names,
            [
                "campaign_id,ad_format:10s",
                "campaign_id,ad_format,country,device:10s",
                "campaign_id,ad_format:1m",
                "campaign_id,ad_format:1h",
                "campaign_id,ad_format,country,device:1h"
            ]
        );
        assert_eq!(Rollup::defaults(60_000_000).len(), 4, "--window 1m: the 1 m rollup is the base one");
    }
}
