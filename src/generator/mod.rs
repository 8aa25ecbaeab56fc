//! The synthetic traffic: what `generate`, `demo` and `run --self-feed`
//! produce, from one of two models ([`TrafficModel`], `--traffic`; the
//! tables are in [`model`], the export of the truth in [`truth`]).
//!
//! - `seed` (the default, the original model, byte for byte): format
//!   uniform over banner / interstitial / rewarded_video; campaign uniform
//!   over C001–C005 (or `--campaigns N`: C001..; with
//!   [`Generator::with_campaigns`], `C00001`..`Cnnnnn`, for the scaling
//!   benchmark); country uniform over US KR JP UK DE FR CA; device uniform
//!   over iOS / Android; user uniform over U10000–U99999. Each event is a
//!   click with the format's probability (banner 0.05, interstitial 0.12,
//!   rewarded_video 0.25), else an impression.
//! - `segmented`: format, campaign and user as above; country and device by
//!   fixed non-uniform shares; the click probability is a product of
//!   effects of format, country, device, campaign and the UTC hour of the
//!   event time, with a few interactions (see [`model`]).
//! - In both, a click's revenue is uniform over the country's range with 4
//!   decimals (US 0.02–0.10, KR 0.01–0.05, JP 0.015–0.08, UK 0.015–0.07,
//!   DE 0.01–0.06, FR 0.01–0.05, CA 0.015–0.07 USD); impressions carry 0.0.
//!
//! # Event time
//! Without a seed, an event's time is the wall clock when it is made. With a
//! seed, the run is reproducible byte for byte: event `n` (from 0) is stamped
//! `start_time + n / event_rate` seconds (integer microseconds, truncated),
//! whatever the real send rate. `--jitter D` then moves each timestamp back
//! by a uniform random amount in `[0, D]`, drawn from the same seeded stream.
//!
//! # Event ids
//! `event_id` is a UUID-shaped string of a 64-bit run id and the 64-bit
//! sequence number: unique within a run by construction and across runs
//! because unseeded runs draw the run id from the OS's entropy. Seeded runs
//! derive it from the seed and start time, so they repeat (that is the
//! point of a seed).

use std::io::Write;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::event::{AdFormat, EventType};
use crate::engine::time;

pub mod model;
mod pacer;
mod traffic;
pub mod truth;

pub use model::{click_probability, TrafficModel, CAMPAIGNS, COUNTRIES, DEVICES, REVENUE_RANGE_E4};
pub use pacer::Pacer;
pub use traffic::{Traffic, DEFAULT_CAMPAIGNS, MAX_CAMPAIGNS};

/// Default simulated start for seeded runs: 2025-12-10T00:00:00Z.
pub const DEFAULT_SEEDED_START_US: i64 = 1_765_324_800_000_000;

#[derive(Debug, Clone, Copy)]
pub struct GeneratorConfig {
    /// `Some` = reproducible run with simulated event time.
    pub seed: Option<u64>,
    /// First event's time in seeded mode.
    pub start_time_us: i64,
    /// Events per simulated second in seeded mode.
    pub event_rate: f64,
    /// Maximum backwards jitter of event timestamps.
    pub jitter_us: i64,
}

/// Facts about one generated event, for counting and for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    pub seq: u64,
    pub timestamp_us: i64,
    pub ad_format: AdFormat,
    pub event_type: EventType,
    /// The campaign number minus one: an index into [`CAMPAIGNS`] by
    /// default.
    pub campaign: usize,
    /// Index into [`COUNTRIES`].
    pub country: usize,
    /// Index into [`DEVICES`].
    pub device: usize,
    pub revenue_micros: i64,
}

pub struct Generator {
    cfg: GeneratorConfig,
    rng: ChaCha8Rng,
    run_id: u64,
    seq: u64,
    model: TrafficModel,
    /// Campaigns `C{1:0w$}`..`C{n:0w$}` with `w` = `id_width`.
    campaigns: u32,
    id_width: usize,
}

impl Generator {
    /// The seed model over C001–C005.
    pub fn new(cfg: GeneratorConfig) -> Self {
        let (rng, run_id) = match cfg.seed {
            Some(seed) => {
                let mut id_rng =
                    ChaCha8Rng::seed_from_u64(seed ^ (cfg.start_time_us as u64).rotate_left(17) ^ 0xA5A5_5A5A);
                (ChaCha8Rng::seed_from_u64(seed), id_rng.next_u64())
            }
            None => {
                let mut os = rand::rng();
                (ChaCha8Rng::from_rng(&mut os), os.next_u64())
            }
        };
        let t = Traffic::default();
        Generator { cfg, rng, run_id, seq: 0, model: t.model, campaigns: t.campaigns, id_width: t.id_width() }
    }

    /// Draws from `traffic`'s model over its campaigns `C001`.. (at least 3
    /// digits). `Traffic::default()` (seed model, 5 campaigns) is what
    /// [`Generator::new`] does.
    pub fn with_traffic(mut self, traffic: Traffic) -> Self {
        self.model = traffic.model;
        self.campaigns = traffic.campaigns.max(1);
        self.id_width = traffic.id_width();
        self
    }

    /// Draws the campaign uniformly from `n` ids `C00001`..`C{n:05}` (at
    /// least 1, always 5 digits) instead of the fixed five, so the scaling
    /// benchmark can vary the key count. Everything else, including the
    /// order of the random draws, is unchanged.
    pub fn with_campaigns(mut self, n: u32) -> Self {
        self.campaigns = n.max(1);
        self.id_width = 5;
        self
    }

    /// Writes the next event's key (event_id) into `key` and its JSON into
    /// `json` (both cleared first). `now_us` is read only in unseeded mode.
    /// Allocates nothing once the buffers have grown to an event's size.
    pub fn next_into(&mut self, now_us: impl FnOnce() -> i64, key: &mut Vec<u8>, json: &mut Vec<u8>) -> EventMeta {
        let seq = self.seq;
        self.seq += 1;
        let base = match self.cfg.seed {
            Some(_) => self.cfg.start_time_us + (seq as f64 * 1e6 / self.cfg.event_rate) as i64,
            None => now_us(),
        };
        let jitter = if self.cfg.jitter_us > 0 { self.rng.random_range(0..=self.cfg.jitter_us) } else { 0 };
        let timestamp_us = base - jitter;
        // The order of the draws is part of the seed model's output: keep it.
        let campaign = self.rng.random_range(0..self.campaigns as usize);
        let ad_format = AdFormat::ALL[self.rng.random_range(0..3)];
        let (country, device) = match self.model {
            TrafficModel::Seed => (self.rng.random_range(0..COUNTRIES.len()), self.rng.random_range(0..DEVICES.len())),
            TrafficModel::Segmented => (
                TrafficModel::country_from_pct(self.rng.random_range(0..100)),
                TrafficModel::device_from_pct(self.rng.random_range(0..100)),
            ),
        };
        let user = self.rng.random_range(10_000u32..=99_999);
        let p_click = self.model.p_click(ad_format, country, device, campaign, model::hour_of_day(timestamp_us));
        let is_click = self.rng.random_bool(p_click);
        let (event_type, revenue_e4) = if is_click {
            let (lo, hi) = REVENUE_RANGE_E4[country];
            (EventType::Click, self.rng.random_range(lo..=hi))
        } else {
            (EventType::Impression, 0)
        };

        key.clear();
        let (hi, lo) = (self.run_id, seq);
        let _ = write!(
            key,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        );
        json.clear();
        json.extend_from_slice(b"{\"event_id\":\"");
        json.extend_from_slice(key);
        json.extend_from_slice(b"\",\"timestamp\":\"");
        time::write_event_timestamp(timestamp_us, json);
        let _ = write!(json, "\",\"user_id\":\"U{user}\",\"campaign_id\":\"C{:0w$}", campaign + 1, w = self.id_width);
        let _ = write!(
            json,
            "\",\"ad_format\":\"{}\",\"country\":\"{}\",\"device\":\"{}\",\"event_type\":\"{}\",\"revenue\":",
            ad_format.as_str(),
            COUNTRIES[country],
            DEVICES[device],
            event_type.as_str(),
        );
        write_revenue_e4(revenue_e4, json);
        json.push(b'}');
        EventMeta {
            seq,
            timestamp_us,
            ad_format,
            event_type,
            campaign,
            country,
            device,
            revenue_micros: i64::from(revenue_e4) * 100,
        }
    }
}

/// `523` → `0.0523`, `500` → `0.05`, `0` → `0.0`.
fn write_revenue_e4(v: u32, out: &mut Vec<u8>) {
    let _ = write!(out, "{}.", v / 10_000);
    let mut frac = v % 10_000;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut width = 4;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    let _ = write!(out, "{frac:0width$}");
}

#[cfg(test)]
mod tests;
