//! The traffic models: who sees which ad and how likely each event is a
//! click. Pure tables and functions, shared by the generator (which draws
//! from them) and the truth export (which prints them), so the two cannot
//! disagree.
//!
//! - [`TrafficModel::Seed`]: the original model. Format, campaign, country
//!   and device uniform; the click share depends on the format only.
//! - [`TrafficModel::Segmented`]: country and device follow
//!   [`COUNTRY_SHARE_PCT`] / [`DEVICE_SHARE_PCT`]; the click probability is
//!   [`FORMAT_BASE`] × [`COUNTRY_FACTOR`] × [`DEVICE_FACTOR`] ×
//!   [`campaign_factor`] × [`HOUR_FACTOR`] (UTC hour of the event time) ×
//!   every matching [`INTERACTIONS`] factor, clamped to
//!   [`P_CLICK_MIN`]..=[`P_CLICK_MAX`].
//!
//! Both models keep the revenue of a click uniform over the country's
//! [`REVENUE_RANGE_E4`], format uniform and campaign uniform.

use crate::engine::event::AdFormat;

pub const CAMPAIGNS: [&str; 5] = ["C001", "C002", "C003", "C004", "C005"];
pub const COUNTRIES: [&str; 7] = ["US", "KR", "JP", "UK", "DE", "FR", "CA"];
pub const DEVICES: [&str; 2] = ["iOS", "Android"];

/// Revenue range per country, in 1e-4 USD, inclusive (index as COUNTRIES).
pub const REVENUE_RANGE_E4: [(u32, u32); 7] =
    [(200, 1000), (100, 500), (150, 800), (150, 700), (100, 600), (100, 500), (150, 700)];

/// Click probability of a format in the seed model.
pub fn click_probability(f: AdFormat) -> f64 {
    match f {
        AdFormat::Banner => 0.05,
        AdFormat::Interstitial => 0.12,
        AdFormat::RewardedVideo => 0.25,
    }
}

/// Which traffic model the generator draws from (`--traffic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficModel {
    /// Today's model, byte for byte: see [`click_probability`].
    #[default]
    Seed,
    /// Click probability by format × country × device × campaign × hour.
    Segmented,
}

/// Segmented model: share of events per country in percent (index as
/// [`COUNTRIES`]; sums to 100).
pub const COUNTRY_SHARE_PCT: [u32; 7] = [35, 12, 15, 12, 10, 8, 8];
/// Segmented model: share of events per device in percent (iOS, Android).
pub const DEVICE_SHARE_PCT: [u32; 2] = [45, 55];

/// Segmented model: base click probability per format (index as
/// [`AdFormat::ALL`]: banner, interstitial, rewarded_video).
pub const FORMAT_BASE: [f64; 3] = [0.04, 0.10, 0.20];
/// Segmented model: factor per country (index as [`COUNTRIES`]).
pub const COUNTRY_FACTOR: [f64; 7] = [1.15, 1.05, 0.85, 1.00, 0.90, 0.95, 1.05];
/// Segmented model: factor per device (iOS, Android).
pub const DEVICE_FACTOR: [f64; 2] = [1.10, 0.92];
/// Segmented model: factor of the named campaigns C001..C005; later
/// campaigns get [`campaign_factor`]'s derived value.
pub const NAMED_CAMPAIGN_FACTOR: [f64; 5] = [1.00, 1.25, 0.80, 1.10, 0.65];
/// Segmented model: the daily curve, a factor per UTC hour 0..23 of the
/// event time (quiet at night, a peak in the evening).
pub const HOUR_FACTOR: [f64; 24] = [
    0.80, 0.70, 0.62, 0.58, 0.58, 0.62, 0.72, 0.85, 0.95, 1.00, 1.02, 1.05, //
    1.08, 1.05, 1.02, 1.00, 1.05, 1.12, 1.22, 1.30, 1.32, 1.25, 1.10, 0.92,
];
/// Segmented model: the click probability is clamped to this range.
pub const P_CLICK_MIN: f64 = 0.005;
pub const P_CLICK_MAX: f64 = 0.60;

/// A factor that applies on top of the main effects when the format and
/// the country or device match.
#[derive(Debug, Clone, Copy)]
pub struct Interaction {
    pub ad_format: AdFormat,
    /// Index into [`COUNTRIES`]; `None` = any country.
    pub country: Option<usize>,
    /// Index into [`DEVICES`]; `None` = any device.
    pub device: Option<usize>,
    pub factor: f64,
}

/// Segmented model: the interactions (every matching one multiplies).
pub const INTERACTIONS: [Interaction; 3] = [
    // Rewarded video converts better on Android.
    Interaction { ad_format: AdFormat::RewardedVideo, country: None, device: Some(1), factor: 1.30 },
    // Interstitials do well in Japan.
    Interaction { ad_format: AdFormat::Interstitial, country: Some(2), device: None, factor: 1.40 },
    // Banners are ignored on iOS.
    Interaction { ad_format: AdFormat::Banner, country: None, device: Some(0), factor: 0.75 },
];

/// SplitMix64's output function: a fixed, well-mixed hash of `x`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Segmented model: factor of campaign `index` (0-based: C001 is 0). The
/// first five are [`NAMED_CAMPAIGN_FACTOR`]; campaign number `n = index + 1`
/// beyond them gets `0.60 + (splitmix64(n) mod 81) / 100`, i.e. one of
/// 0.60, 0.61, .., 1.40, fixed forever for that campaign.
pub fn campaign_factor(index: usize) -> f64 {
    match NAMED_CAMPAIGN_FACTOR.get(index) {
        Some(f) => *f,
        None => 0.60 + (splitmix64(index as u64 + 1) % 81) as f64 / 100.0,
    }
}

/// UTC hour of day (0..23) of a timestamp in microseconds since the epoch.
pub fn hour_of_day(timestamp_us: i64) -> usize {
    timestamp_us.div_euclid(3_600_000_000).rem_euclid(24) as usize
}

/// Picks an index by percent shares from `u` in `0..100`.
fn pick_pct(shares: &[u32], u: u32) -> usize {
    let mut acc = 0;
    for (i, s) in shares.iter().enumerate() {
        acc += s;
        if u < acc {
            return i;
        }
    }
    shares.len() - 1
}

impl TrafficModel {
    pub fn name(self) -> &'static str {
        match self {
            TrafficModel::Seed => "seed",
            TrafficModel::Segmented => "segmented",
        }
    }

    /// Probability that an event of this segment at this UTC hour is a
    /// click (else an impression). `campaign` is 0-based.
    pub fn p_click(self, f: AdFormat, country: usize, device: usize, campaign: usize, hour: usize) -> f64 {
        self.p_click_with_factor(f, country, device, campaign_factor(campaign), hour)
    }

    /// [`p_click`](Self::p_click) with the campaign's factor given instead
    /// of its index (the seed model ignores it): what a learner told
    /// everything but the campaign's factor would compute for a guess of
    /// it (the learner bench's campaign-blind bound).
    pub fn p_click_with_factor(self, f: AdFormat, country: usize, device: usize, factor: f64, hour: usize) -> f64 {
        match self {
            TrafficModel::Seed => click_probability(f),
            TrafficModel::Segmented => {
                let mut p = FORMAT_BASE[f.index()]
                    * COUNTRY_FACTOR[country]
                    * DEVICE_FACTOR[device]
                    * factor
                    * HOUR_FACTOR[hour % 24];
                for i in &INTERACTIONS {
                    if i.ad_format == f
                        && i.country.is_none_or(|c| c == country)
                        && i.device.is_none_or(|d| d == device)
                    {
                        p *= i.factor;
                    }
                }
                p.clamp(P_CLICK_MIN, P_CLICK_MAX)
            }
        }
    }

    /// Share of events from country `c` (0..1).
    pub fn country_share(self, c: usize) -> f64 {
        match self {
            TrafficModel::Seed => 1.0 / COUNTRIES.len() as f64,
            TrafficModel::Segmented => f64::from(COUNTRY_SHARE_PCT[c]) / 100.0,
        }
    }

    /// Share of events from device `d` (0..1).
    pub fn device_share(self, d: usize) -> f64 {
        match self {
            TrafficModel::Seed => 1.0 / DEVICES.len() as f64,
            TrafficModel::Segmented => f64::from(DEVICE_SHARE_PCT[d]) / 100.0,
        }
    }

    /// The country for a draw `u` in `0..100` (segmented model).
    pub fn country_from_pct(u: u32) -> usize {
        pick_pct(&COUNTRY_SHARE_PCT, u)
    }

    /// The device for a draw `u` in `0..100` (segmented model).
    pub fn device_from_pct(u: u32) -> usize {
        pick_pct(&DEVICE_SHARE_PCT, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_pick_follows_them() {
        assert_eq!(COUNTRY_SHARE_PCT.iter().sum::<u32>(), 100);
        assert_eq!(DEVICE_SHARE_PCT.iter().sum::<u32>(), 100);
        let mut n = [0u32; 7];
        for u in 0..100 {
            n[TrafficModel::country_from_pct(u)] += 1;
        }
        assert_eq!(n, COUNTRY_SHARE_PCT);
        assert_eq!(TrafficModel::device_from_pct(44), 0);
        assert_eq!(TrafficModel::device_from_pct(45), 1);
        for m in [TrafficModel::Seed, TrafficModel::Segmented] {
            let c: f64 = (0..7).map(|c| m.country_share(c)).sum();
            let d: f64 = (0..2).map(|d| m.device_share(d)).sum();
            assert!((c - 1.0).abs() < 1e-12 && (d - 1.0).abs() < 1e-12, "{m:?}");
        }
    }

    #[test]
    fn campaign_factors_are_fixed_and_in_range() {
        assert_eq!(campaign_factor(0), 1.00);
        assert_eq!(campaign_factor(4), 0.65);
        let derived: Vec<f64> = (5..10_000).map(campaign_factor).collect();
        assert!(derived.iter().all(|f| (0.60..=1.40 + 1e-12).contains(f)));
        let distinct: std::collections::BTreeSet<u64> = derived.iter().map(|f| (f * 100.0).round() as u64).collect();
        assert_eq!(distinct.len(), 81, "every step of 0.01 in 0.60..=1.40 occurs");
        // Pinned, so the published rule and the code agree.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn hour_of_day_is_utc_and_handles_times_before_1970() {
        assert_eq!(hour_of_day(0), 0);
        assert_eq!(hour_of_day(3_600_000_000 * 25 + 1), 1);
        assert_eq!(hour_of_day(-1), 23);
        // 2025-12-10T00:00:00Z
        assert_eq!(hour_of_day(1_765_324_800_000_000), 0);
    }

    #[test]
    fn segmented_probabilities_follow_the_table() {
        let m = TrafficModel::Segmented;
        // banner, US, Android, C001, hour 9: 0.04 × 1.15 × 0.92 × 1 × 1.
        let p = m.p_click(AdFormat::Banner, 0, 1, 0, 9);
        assert!((p - 0.04 * 1.15 * 0.92).abs() < 1e-15, "{p}");
        // Interactions: banner × iOS, interstitial × JP, rewarded × Android.
        let p = m.p_click(AdFormat::Banner, 0, 0, 0, 9);
        assert!((p - 0.04 * 1.15 * 1.10 * 0.75).abs() < 1e-15, "{p}");
        let p = m.p_click(AdFormat::Interstitial, 2, 1, 0, 9);
        assert!((p - 0.10 * 0.85 * 0.92 * 1.40).abs() < 1e-15, "{p}");
        let p = m.p_click(AdFormat::RewardedVideo, 3, 1, 1, 19);
        assert!((p - 0.20 * 1.00 * 0.92 * 1.25 * 1.30 * 1.30).abs() < 1e-15, "{p}");
        // The clamp never binds with the published table, for any campaign.
        for c in 0..1000 {
            for f in AdFormat::ALL {
                for (country, device, hour) in
                    (0..7).flat_map(|a| (0..2).flat_map(move |b| (0..24).map(move |h| (a, b, h))))
                {
                    let p = m.p_click(f, country, device, c, hour);
                    assert!(p > P_CLICK_MIN && p < P_CLICK_MAX, "{f:?} {country} {device} {c} {hour}: {p}");
                }
            }
        }
    }

    #[test]
    fn the_seed_model_depends_on_the_format_only() {
        for f in AdFormat::ALL {
            for h in 0..24 {
                assert_eq!(TrafficModel::Seed.p_click(f, 3, 1, 7, h), click_probability(f));
            }
        }
    }
}
