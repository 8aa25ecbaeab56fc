//! `adstream generate --print-truth`: the true model behind the generated
//! traffic, as JSON, so that what a dashboard shows or a CTR model learns
//! can be checked against what was put in.
//!
//! The shape (stable: these fields in this order, one header field per
//! line, then one segment per line):
//!
//! ```json
//! {
//!   "traffic": "segmented",
//!   "label": "clicks per impression",
//!   "ctr": "ctr = clicks / impressions = p_click / (1 - p_click) ...",
//!   "p_click": "probability that one generated event is a click ...",
//!   "hour": "UTC hour of the event timestamp, 0..23 ...",
//!   "share": "fraction of all events ...",
//!   "campaigns": 3,
//!   "shares": {"campaign":{"C001":0.333..,..},"ad_format":{..},"country":{..},"device":{..}},
//!   "revenue_usd_per_click": {"US":[0.02,0.1],..},
//!   "segments": [
//!     {"campaign_id":"C001","ad_format":"banner","country":"US","device":"iOS","share":0.0175,"hourly_ctr":[24 numbers],"hourly_p_click":[24 numbers]},
//!     ..
//!   ]
//! }
//! ```
//!
//! Segments are ordered by campaign, then format (banner, interstitial,
//! rewarded_video), country (US KR JP UK DE FR CA), device (iOS, Android).
//! A segment's `share` is the fraction of all events that fall in it
//! (campaign × format × country × device shares); events are spread evenly
//! over event time, so with `n` events in an hour `h` a segment expects
//! `n × share × hourly_p_click[h]` clicks and `n × share × (1 -
//! hourly_p_click[h])` impressions.
//!
//! The segments are written as they are computed, never collected, so even
//! the largest `--campaigns` prints in constant memory.

use std::io::Write;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::model::{COUNTRIES, DEVICES, REVENUE_RANGE_E4};
use super::traffic::Traffic;
use crate::engine::event::{AdFormat, Country, Device};
use crate::engine::Segment;

/// What the JSON's `label` says: the unit of `hourly_ctr`.
pub const LABEL: &str = "clicks per impression";
const CTR: &str = "ctr = clicks / impressions = p_click / (1 - p_click): the CTR the dashboard shows and a CTR model \
                   predicts (clicks per impression, not clicks per event)";
const P_CLICK: &str = "probability that one generated event is a click (else it is an impression)";
const HOUR: &str = "UTC hour of the event timestamp, 0..23: the index into hourly_ctr and hourly_p_click";
const SHARE: &str = "fraction of all events in the segment (campaign x format x country x device shares); expected \
                     clicks = events x share x p_click, impressions = events x share x (1 - p_click)";

/// Clicks per impression for a click probability per event.
pub fn ctr(p_click: f64) -> f64 {
    p_click / (1.0 - p_click)
}

/// One segment's truth: a line of `segments`.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentTruth {
    pub segment: Segment,
    pub share: f64,
    pub hourly_ctr: [f64; 24],
    pub hourly_p_click: [f64; 24],
}

/// The export's line: the segment's dimensions by name, then its truth.
impl Serialize for SegmentTruth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Line<'a> {
            campaign_id: &'a str,
            ad_format: &'static str,
            country: &'static str,
            device: &'static str,
            share: f64,
            hourly_ctr: &'a [f64; 24],
            hourly_p_click: &'a [f64; 24],
        }
        let g = &self.segment;
        Line {
            campaign_id: &g.campaign_id,
            ad_format: g.ad_format.as_str(),
            country: g.country.as_str(),
            device: g.device.as_str(),
            share: self.share,
            hourly_ctr: &self.hourly_ctr,
            hourly_p_click: &self.hourly_p_click,
        }
        .serialize(s)
    }
}

/// Format shares: uniform in both models.
fn format_share() -> f64 {
    1.0 / AdFormat::ALL.len() as f64
}

impl Traffic {
    /// The truth of one segment (`campaign` 0-based, `country` and `device`
    /// indexes into [`COUNTRIES`] and [`DEVICES`]).
    pub fn segment(&self, campaign: usize, f: AdFormat, country: usize, device: usize) -> SegmentTruth {
        let m = self.model;
        let hourly_p_click: [f64; 24] = std::array::from_fn(|h| m.p_click(f, country, device, campaign, h));
        SegmentTruth {
            segment: Segment {
                campaign_id: self.campaign_id(campaign),
                ad_format: f,
                country: Country::ALL[country],
                device: Device::ALL[device],
            },
            share: self.campaign_share() * format_share() * m.country_share(country) * m.device_share(device),
            hourly_ctr: hourly_p_click.map(ctr),
            hourly_p_click,
        }
    }

    /// Every segment, in the export's order.
    pub fn segments(&self) -> impl Iterator<Item = SegmentTruth> + '_ {
        (0..self.campaigns as usize).flat_map(move |c| {
            AdFormat::ALL.into_iter().flat_map(move |f| {
                (0..COUNTRIES.len())
                    .flat_map(move |country| (0..DEVICES.len()).map(move |device| self.segment(c, f, country, device)))
            })
        })
    }

    /// The header fields of the export, in order.
    fn truth_header(&self) -> Vec<(&'static str, Value)> {
        let m = self.model;
        let named = |pairs: Vec<(String, f64)>| Value::Object(pairs.into_iter().map(|(k, v)| (k, json!(v))).collect());
        let mut shares = Map::new();
        shares.insert(
            "campaign".into(),
            named((0..self.campaigns as usize).map(|c| (self.campaign_id(c), self.campaign_share())).collect()),
        );
        shares.insert(
            "ad_format".into(),
            named(AdFormat::ALL.iter().map(|f| (f.as_str().into(), format_share())).collect()),
        );
        shares.insert(
            "country".into(),
            named((0..COUNTRIES.len()).map(|c| (COUNTRIES[c].into(), m.country_share(c))).collect()),
        );
        shares.insert(
            "device".into(),
            named((0..DEVICES.len()).map(|d| (DEVICES[d].into(), m.device_share(d))).collect()),
        );
        let revenue: Map<String, Value> = COUNTRIES
            .iter()
            .zip(REVENUE_RANGE_E4)
            .map(|(c, (lo, hi))| (c.to_string(), json!([f64::from(lo) / 1e4, f64::from(hi) / 1e4])))
            .collect();
        vec![
            ("traffic", json!(m.name())),
            ("label", json!(LABEL)),
            ("ctr", json!(CTR)),
            ("p_click", json!(P_CLICK)),
            ("hour", json!(HOUR)),
            ("share", json!(SHARE)),
            ("campaigns", json!(self.campaigns)),
            ("shares", Value::Object(shares)),
            ("revenue_usd_per_click", Value::Object(revenue)),
        ]
    }

    /// Writes the truth export (see the module docs), ending in a newline.
    pub fn write_truth(&self, out: impl Write) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        out.write_all(b"{\n")?;
        for (name, value) in self.truth_header() {
            write!(out, "  \"{name}\": ")?;
            serde_json::to_writer(&mut out, &value)?;
            out.write_all(b",\n")?;
        }
        out.write_all(b"  \"segments\": [")?;
        for (i, s) in self.segments().enumerate() {
            out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
            serde_json::to_writer(&mut out, &s)?;
        }
        out.write_all(b"\n  ]\n}\n")?;
        out.flush()
    }
}
