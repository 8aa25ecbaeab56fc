//! The synthetic traffic model: what `generate`, `demo` and `run --self-feed`
//! produce.
//!
//! - Format uniform over banner / interstitial / rewarded_video; campaign
//!   uniform over C001–C005 (or, with [`Generator::with_campaigns`], over
//!   `C00001`..`Cnnnnn`, for the scaling benchmark); country uniform over US KR JP UK DE FR CA;
//!   device uniform over iOS / Android; user uniform over U10000–U99999.
//! - Each event is a click with the format's probability (banner 0.05,
//!   interstitial 0.12, rewarded_video 0.25), else an impression.
//! - A click's revenue is uniform over the country's range with 4 decimals
//!   (US 0.02–0.10, KR 0.01–0.05, JP 0.015–0.08, UK 0.015–0.07,
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

pub const CAMPAIGNS: [&str; 5] = ["C001", "C002", "C003", "C004", "C005"];
pub const COUNTRIES: [&str; 7] = ["US", "KR", "JP", "UK", "DE", "FR", "CA"];
pub const DEVICES: [&str; 2] = ["iOS", "Android"];

/// Revenue range per country, in 1e-4 USD, inclusive (index as COUNTRIES).
pub const REVENUE_RANGE_E4: [(u32, u32); 7] =
    [(200, 1000), (100, 500), (150, 800), (150, 700), (100, 600), (100, 500), (150, 700)];

/// Click probability of a format.
pub fn click_probability(f: AdFormat) -> f64 {
    match f {
        AdFormat::Banner => 0.05,
        AdFormat::Interstitial => 0.12,
        AdFormat::RewardedVideo => 0.25,
    }
}

/// Paces a send loop at `rate` events per second against its start (not
/// per event, so sleep granularity does not drift the average); a rate of 0
/// never waits.
pub struct Pacer {
    rate: f64,
    started: std::time::Instant,
}

impl Pacer {
    pub fn new(rate: f64) -> Self {
        Pacer { rate, started: std::time::Instant::now() }
    }

    pub fn elapsed(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Whether event number `sent` (from 0) is due; if not, sleeps a little
    /// (at most 50 ms, so stop flags stay responsive) and returns false.
    pub fn ready(&self, sent: u64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let due = std::time::Duration::from_secs_f64(sent as f64 / self.rate);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            std::thread::sleep((due - elapsed).min(std::time::Duration::from_millis(50)));
            return false;
        }
        true
    }
}

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
    /// Index into [`CAMPAIGNS`] (or, with [`Generator::with_campaigns`],
    /// the campaign number minus one).
    pub campaign: usize,
    pub country: usize,
    pub revenue_micros: i64,
}

pub struct Generator {
    cfg: GeneratorConfig,
    rng: ChaCha8Rng,
    run_id: u64,
    seq: u64,
    /// `Some(n)`: campaigns `C00001`..`C{n:05}` instead of [`CAMPAIGNS`].
    campaigns: Option<u32>,
}

impl Generator {
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
        Generator { cfg, rng, run_id, seq: 0, campaigns: None }
    }

    /// Draws the campaign uniformly from `n` ids `C00001`..`C{n:05}` (at
    /// least 1) instead of the fixed five, so the scaling benchmark can vary
    /// the key count. Everything else, including the order of the random
    /// draws, is unchanged, and without this call the output is byte for
    /// byte what it always was (tests and seeded replays depend on that).
    pub fn with_campaigns(mut self, n: u32) -> Self {
        self.campaigns = Some(n.max(1));
        self
    }

    /// Writes the next event's key (event_id) into `key` and its JSON into
    /// `json` (both cleared first). `now_us` is read only in unseeded mode.
    pub fn next_into(&mut self, now_us: impl FnOnce() -> i64, key: &mut Vec<u8>, json: &mut Vec<u8>) -> EventMeta {
        let seq = self.seq;
        self.seq += 1;
        let base = match self.cfg.seed {
            Some(_) => self.cfg.start_time_us + (seq as f64 * 1e6 / self.cfg.event_rate) as i64,
            None => now_us(),
        };
        let jitter = if self.cfg.jitter_us > 0 { self.rng.random_range(0..=self.cfg.jitter_us) } else { 0 };
        let timestamp_us = base - jitter;
        let campaign = self.rng.random_range(0..self.campaigns.map_or(CAMPAIGNS.len(), |n| n as usize));
        let ad_format = AdFormat::ALL[self.rng.random_range(0..3)];
        let country = self.rng.random_range(0..COUNTRIES.len());
        let device = self.rng.random_range(0..DEVICES.len());
        let user = self.rng.random_range(10_000u32..=99_999);
        let is_click = self.rng.random_bool(click_probability(ad_format));
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
        let _ = write!(json, "\",\"user_id\":\"U{user}\",\"campaign_id\":\"");
        match self.campaigns {
            None => json.extend_from_slice(CAMPAIGNS[campaign].as_bytes()),
            Some(_) => {
                let _ = write!(json, "C{:05}", campaign + 1);
            }
        }
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
mod tests {
    use super::*;
    use crate::engine::parse::{parse_event, DEFAULT_MAX_EVENT_BYTES};
    use std::collections::HashSet;

    fn seeded(seed: u64, jitter_us: i64) -> Generator {
        Generator::new(GeneratorConfig {
            seed: Some(seed),
            start_time_us: DEFAULT_SEEDED_START_US,
            event_rate: 1000.0,
            jitter_us,
        })
    }

    #[test]
    fn revenue_text() {
        for (v, s) in [(523, "0.0523"), (500, "0.05"), (0, "0.0"), (1000, "0.1"), (10_000, "1.0"), (150, "0.015")] {
            let mut out = Vec::new();
            write_revenue_e4(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    #[test]
    fn events_parse_back_to_what_was_generated() {
        let mut g = seeded(7, 2_000_000);
        let (mut k, mut j) = (Vec::new(), Vec::new());
        for _ in 0..10_000 {
            let m = g.next_into(|| unreachable!(), &mut k, &mut j);
            let e = parse_event(&j, DEFAULT_MAX_EVENT_BYTES).expect("generated events are valid");
            assert_eq!(e.event_id.as_bytes(), &k[..]);
            assert_eq!(e.timestamp_us, m.timestamp_us);
            assert_eq!(e.ad_format, m.ad_format);
            assert_eq!(e.event_type, m.event_type);
            assert_eq!(e.revenue_micros, m.revenue_micros);
            assert_eq!(e.campaign_id, CAMPAIGNS[m.campaign]);
            let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
            let user = v["user_id"].as_str().unwrap();
            let n: u32 = user[1..].parse().unwrap();
            assert!(user.starts_with('U') && (10_000..=99_999).contains(&n));
            assert!(COUNTRIES.contains(&v["country"].as_str().unwrap()));
            assert!(DEVICES.contains(&v["device"].as_str().unwrap()));
        }
    }

    #[test]
    fn seeded_runs_are_byte_identical_and_time_is_simulated() {
        let (mut a, mut b) = (seeded(42, 500_000), seeded(42, 500_000));
        let (mut ka, mut ja, mut kb, mut jb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..5_000u64 {
            let m = a.next_into(|| 0, &mut ka, &mut ja);
            b.next_into(|| 0, &mut kb, &mut jb);
            assert_eq!((&ka, &ja), (&kb, &jb));
            let nominal = DEFAULT_SEEDED_START_US + i as i64 * 1000;
            assert!(m.timestamp_us <= nominal && m.timestamp_us >= nominal - 500_000);
        }
        let mut c = seeded(43, 500_000);
        c.next_into(|| 0, &mut kb, &mut jb);
        assert_ne!(ja, jb, "another seed, other events");
    }

    #[test]
    fn click_share_per_format_matches_the_model() {
        let mut g = seeded(1, 0);
        let (mut k, mut j) = (Vec::new(), Vec::new());
        let mut n = [0u64; 3];
        let mut clicks = [0u64; 3];
        let mut campaigns = [0u64; 5];
        for _ in 0..200_000 {
            let m = g.next_into(|| 0, &mut k, &mut j);
            n[m.ad_format.index()] += 1;
            campaigns[m.campaign] += 1;
            if m.event_type == EventType::Click {
                clicks[m.ad_format.index()] += 1;
            }
        }
        for f in AdFormat::ALL {
            let i = f.index();
            let p = click_probability(f);
            let share = clicks[i] as f64 / n[i] as f64;
            let sigma = (p * (1.0 - p) / n[i] as f64).sqrt();
            assert!((share - p).abs() < 5.0 * sigma, "{f:?}: click share {share} vs {p}");
            let fsigma = (200_000.0f64 * (1.0 / 3.0) * (2.0 / 3.0)).sqrt();
            assert!((n[i] as f64 - 200_000.0 / 3.0).abs() < 5.0 * fsigma, "{f:?} drawn {} times", n[i]);
        }
        for c in campaigns {
            assert!((c as f64 - 40_000.0).abs() < 5.0 * (200_000.0f64 * 0.2 * 0.8).sqrt());
        }
    }

    #[test]
    fn click_revenue_stays_in_the_country_range_and_covers_it() {
        let mut g = seeded(2, 0);
        let (mut k, mut j) = (Vec::new(), Vec::new());
        let mut seen = [(i64::MAX, i64::MIN); 7];
        for _ in 0..200_000 {
            let m = g.next_into(|| 0, &mut k, &mut j);
            if m.event_type == EventType::Impression {
                assert_eq!(m.revenue_micros, 0);
                continue;
            }
            let (lo, hi) = REVENUE_RANGE_E4[m.country];
            assert!(m.revenue_micros >= i64::from(lo) * 100 && m.revenue_micros <= i64::from(hi) * 100);
            assert_eq!(m.revenue_micros % 100, 0, "4 decimals");
            let s = &mut seen[m.country];
            *s = (s.0.min(m.revenue_micros), s.1.max(m.revenue_micros));
        }
        for (i, (lo, hi)) in REVENUE_RANGE_E4.iter().enumerate() {
            let span = i64::from(hi - lo) * 100;
            assert!(seen[i].0 - i64::from(*lo) * 100 <= span / 50, "{} low end reached", COUNTRIES[i]);
            assert!(i64::from(*hi) * 100 - seen[i].1 <= span / 50, "{} high end reached", COUNTRIES[i]);
        }
    }

    #[test]
    fn more_campaigns_change_only_the_campaign_id() {
        // Same seed: the same draws in the same order, so with five
        // campaigns the events differ only in how the campaign is spelled,
        // and with 10,000 every id appears in range and parses.
        let (mut a, mut b) = (seeded(9, 1_000_000), seeded(9, 1_000_000).with_campaigns(5));
        let (mut k, mut ja, mut jb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..1000 {
            let ma = a.next_into(|| unreachable!(), &mut k, &mut ja);
            let mb = b.next_into(|| unreachable!(), &mut k, &mut jb);
            assert_eq!(ma, mb);
            let fixed = String::from_utf8(ja.clone()).unwrap();
            let wide = String::from_utf8(jb.clone()).unwrap();
            let respelled = format!("\"C{:05}\"", ma.campaign + 1);
            assert_eq!(fixed.replace(&format!("\"{}\"", CAMPAIGNS[ma.campaign]), &respelled), wide);
        }
        let mut g = seeded(3, 0).with_campaigns(10_000);
        let mut seen = HashSet::new();
        for _ in 0..100_000 {
            let m = g.next_into(|| unreachable!(), &mut k, &mut ja);
            let e = parse_event(&ja, DEFAULT_MAX_EVENT_BYTES).expect("valid");
            assert_eq!(e.campaign_id, format!("C{:05}", m.campaign + 1));
            assert!(m.campaign < 10_000);
            seen.insert(m.campaign);
        }
        assert!(seen.len() > 9_900, "100,000 draws cover nearly all 10,000 campaigns: {}", seen.len());
    }

    /// xxh3 of the first `n` keys and payloads, each followed by a newline.
    fn digest(mut g: Generator, n: usize) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let (mut k, mut j) = (Vec::new(), Vec::new());
        for _ in 0..n {
            g.next_into(|| unreachable!("seeded"), &mut k, &mut j);
            h.update(&k);
            h.update(b"\n");
            h.update(&j);
            h.update(b"\n");
        }
        h.digest()
    }

    #[test]
    fn seeded_output_is_pinned() {
        // Computed on main before the traffic models existed (commit
        // 99d68d7): the seed model must stay byte for byte what it was, so
        // seeded replays and recorded fixtures keep meaning the same events.
        let mut g = seeded(42, 500_000);
        let (mut k, mut j) = (Vec::new(), Vec::new());
        g.next_into(|| unreachable!(), &mut k, &mut j);
        assert_eq!(
            String::from_utf8_lossy(&j),
            "{\"event_id\":\"e018cece-e4e0-c1eb-0000-000000000000\",\"timestamp\":\"2025-12-09T23:59:59.659052\",\
             \"user_id\":\"U40968\",\"campaign_id\":\"C001\",\"ad_format\":\"rewarded_video\",\"country\":\"FR\",\
             \"device\":\"iOS\",\"event_type\":\"impression\",\"revenue\":0.0}"
        );
        assert_eq!(digest(seeded(42, 500_000), 100_000), 0x3a9d_0ad0_b73d_9e29, "seed 42, 0.5 s jitter");
        assert_eq!(digest(seeded(7, 0), 100_000), 0xfb9b_3ec5_584d_0d17, "seed 7, no jitter");
        assert_eq!(
            digest(seeded(9, 1_000_000).with_campaigns(10_000), 100_000),
            0x3e19_d2b1_475d_107a,
            "seed 9, the scaling bench's 10,000 campaigns"
        );
    }

    #[test]
    fn a_million_event_ids_are_unique_and_runs_differ() {
        let mut g = Generator::new(GeneratorConfig { seed: None, start_time_us: 0, event_rate: 1.0, jitter_us: 0 });
        let mut h = Generator::new(GeneratorConfig { seed: None, start_time_us: 0, event_rate: 1.0, jitter_us: 0 });
        let (mut k, mut j) = (Vec::new(), Vec::new());
        let mut ids = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            g.next_into(|| 1, &mut k, &mut j);
            assert!(ids.insert(k.clone()));
        }
        h.next_into(|| 1, &mut k, &mut j);
        assert!(!ids.contains(&k), "a second unseeded run starts with a new id");
    }
}
