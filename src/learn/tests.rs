//! The model against the generator's truth: traffic drawn from the
//! segmented model (`src/generator/model.rs`, the truth export of
//! `src/generator/truth.rs`), aggregated into windows per segment as the
//! engine would, learned window by window with the default parameters.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Context, Features, Ftrl, Params, Quality};
use crate::engine::{AdFormat, Country, Device};
use crate::generator::{truth::SegmentTruth, Traffic, TrafficModel};

/// A segment's truth and its context (the hour is given per window).
struct Truth {
    segment: SegmentTruth,
    ad_format: AdFormat,
    country: Country,
    device: Device,
}

impl Truth {
    fn context(&self, hour: usize) -> Context<'_> {
        Context {
            campaign_id: &self.segment.segment.campaign_id,
            ad_format: self.ad_format,
            country: self.country,
            device: self.device,
            hour: hour as u8,
        }
    }

    /// Expected impressions in `hour`, relative: the weight of its error.
    fn weight(&self, hour: usize) -> f64 {
        self.segment.share * (1.0 - self.segment.hourly_p_click[hour])
    }
}

fn truths(traffic: &Traffic) -> Vec<Truth> {
    let mut out = Vec::new();
    for c in 0..traffic.campaigns as usize {
        for f in AdFormat::ALL {
            for country in Country::ALL {
                for device in Device::ALL {
                    let segment = traffic.segment(c, f, country.index(), device.index());
                    assert_eq!((segment.segment.country, segment.segment.device), (country, device));
                    out.push(Truth { segment, ad_format: f, country, device });
                }
            }
        }
    }
    out
}

/// Impression-weighted sums of per-window figures.
#[derive(Default)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    fn add(&mut self, value: Option<f64>, weight: u64) {
        if let Some(v) = value {
            self.sum += v * weight as f64;
            self.weight += weight as f64;
        }
    }
    fn get(&self) -> f64 {
        self.sum / self.weight
    }
}

/// Three simulated days at 500 events/s, one 10 s window every 10 minutes
/// (432 windows, 90,720 segment examples, ~2.2 M events). During the last
/// day, at the end of each hour, the model's prediction for that hour (what
/// a live model would serve) is compared with the true CTR of every
/// segment. Observed with this seed: weighted MAE 0.0062 against a mean
/// true CTR of 0.1315 (4.7 %), worst segment 24 % off (the model is
/// logistic-additive, the truth is multiplicative in p_click and
/// CTR = p/(1 − p), so high-CTR rewarded-video segments cannot be fitted
/// exactly); NE 0.866 on the last day, where scoring the true CTR itself
/// gives the floor (≈ 0.86). The thresholds leave room for that
/// misspecification and for noise, and fail for a model that learns only
/// the average (its MAE is 0.094).
///
/// Not asserted but printed: the same model at the end of the run predicts
/// *other* hours far worse (MAE ≈ 25 %), because examples arrive in time
/// order and the shared weights (bias, format, ...) track the current hour
/// as much as the hour weights do.
#[test]
fn predicted_ctr_converges_to_the_segmented_truth() {
    const DAYS: usize = 3;
    const WINDOWS_PER_HOUR: usize = 6;
    const EVENTS_PER_WINDOW: usize = 5_000;
    let traffic = Traffic::new(TrafficModel::Segmented, 5);
    let truths = truths(&traffic);
    assert_eq!(truths.len(), 5 * 3 * 7 * 2);
    let cumulative: Vec<f64> = truths
        .iter()
        .scan(0.0, |acc, t| {
            *acc += t.segment.share;
            Some(*acc)
        })
        .collect();
    assert!(cumulative.last().is_some_and(|s| (s - 1.0).abs() < 1e-9));

    let params = Params::default();
    let mut model = Ftrl::new(params).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(20_251_210);
    let mut counts = vec![(0u64, 0u64); truths.len()];
    let (mut ne_first, mut ne_last, mut ne_truth, mut calibration) =
        (Mean::default(), Mean::default(), Mean::default(), Mean::default());
    let (mut err, mut base_err, mut total, mut worst) = (0.0, 0.0, 0.0, 0.0f64);
    let mean_ctr = {
        let w: f64 = truths.iter().flat_map(|t| (0..24).map(|h| t.weight(h))).sum();
        truths.iter().flat_map(|t| (0..24).map(|h| t.weight(h) * t.segment.hourly_ctr[h])).sum::<f64>() / w
    };
    for day in 0..DAYS {
        let last = day == DAYS - 1;
        for hour in 0..24 {
            for _ in 0..WINDOWS_PER_HOUR {
                counts.fill((0, 0));
                for _ in 0..EVENTS_PER_WINDOW {
                    let u: f64 = rng.random();
                    let s = cumulative.partition_point(|&c| c <= u).min(truths.len() - 1);
                    if rng.random::<f64>() < truths[s].segment.hourly_p_click[hour] {
                        counts[s].1 += 1;
                    } else {
                        counts[s].0 += 1;
                    }
                }
                let (mut quality, mut oracle) = (Quality::new(), Quality::new());
                for (t, &(impressions, clicks)) in truths.iter().zip(&counts) {
                    let x = Features::of(&t.context(hour));
                    quality.add(model.learn(&x, impressions, clicks), impressions, clicks);
                    oracle.add(t.segment.hourly_ctr[hour], impressions, clicks);
                }
                let (r, o) = (quality.report(), oracle.report());
                if day == 0 {
                    ne_first.add(r.normalized_entropy, r.impressions);
                } else if last {
                    ne_last.add(r.normalized_entropy, r.impressions);
                    ne_truth.add(o.normalized_entropy, o.impressions);
                    calibration.add(r.calibration, r.impressions);
                }
            }
            if last {
                for t in &truths {
                    let (w, truth) = (t.weight(hour), t.segment.hourly_ctr[hour]);
                    let predicted = model.predict(&Features::of(&t.context(hour)));
                    err += w * (predicted - truth).abs();
                    base_err += w * (mean_ctr - truth).abs();
                    total += w;
                    worst = worst.max((predicted - truth).abs() / truth);
                }
            }
        }
    }
    let (mae, base_mae) = (err / total, base_err / total);
    let (mut other_err, mut other_total) = (0.0, 0.0);
    for t in &truths {
        for h in 0..24 {
            let predicted = model.predict(&Features::of(&t.context(h)));
            other_err += t.weight(h) * (predicted - t.segment.hourly_ctr[h]).abs();
            other_total += t.weight(h);
        }
    }
    let c = model.counters();
    let (ne, floor, cal) = (ne_last.get(), ne_truth.get(), calibration.get());
    println!(
        "learned {} examples ({} impressions, {} clicks); mean true CTR {mean_ctr:.4}; served-hour weighted MAE \
         {mae:.5} ({:.1}%), worst {:.1}%, constant-CTR baseline {base_mae:.5}; all hours from the final model {:.5} \
         ({:.1}%); NE day 1 {:.4}, day {DAYS} {ne:.4} (true CTR: {floor:.4}); calibration day {DAYS} {cal:.4}",
        c.examples,
        c.impressions,
        c.clicks,
        100.0 * mae / mean_ctr,
        100.0 * worst,
        other_err / other_total,
        100.0 * other_err / other_total / mean_ctr,
        ne_first.get(),
    );
    assert!(mae < 0.08 * mean_ctr, "weighted MAE {mae} vs mean CTR {mean_ctr}");
    assert!(mae < 0.15 * base_mae, "weighted MAE {mae} vs the constant-CTR baseline {base_mae}");
    assert!(worst < 0.40, "worst relative error {worst}");
    assert!(ne < 1.0 && ne < floor + 0.02, "NE {ne}, true CTR scores {floor}");
    assert!((cal - 1.0).abs() < 0.03, "calibration {cal}");
}
