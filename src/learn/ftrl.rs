//! Logistic regression learned online with FTRL-Proximal: McMahan et al.,
//! "Ad Click Prediction: a View from the Trenches", KDD 2013, Algorithm 1
//! (per-coordinate learning rates; the same update as Vowpal Wabbit's
//! `--ftrl`). Per coordinate it keeps `z_i` and `n_i`; the weight is lazy:
//!
//! ```text
//! w_i = 0                                               if |z_i| <= λ1
//! w_i = -(z_i - sign(z_i)·λ1) / ((β + √n_i)/α + λ2)    otherwise
//! ```
//!
//! and after a gradient `g_i`: `σ_i = (√(n_i + g_i²) − √n_i)/α`,
//! `z_i += g_i − σ_i·w_i`, `n_i += g_i²`.
//!
//! **The training unit** is an aggregated example: one segment
//! ([`Context`](super::features::Context)) with `impressions` and `clicks`
//! in one window. **The label**: the model predicts clicks per impression
//! (the CTR the dashboard shows), `p = σ(w·x)`. An example counts as
//! `clicks` positives and `impressions − clicks` negatives, learned in ONE
//! step with the summed gradient
//!
//! ```text
//! g = (p·impressions − clicks)·x
//! ```
//!
//! and `n_i += g_i²` (the squared summed gradient, not the sum of the
//! per-impression squares: an example is one step). This is the gradient
//! of `L(z) = impressions·ln(1 + e^z) − clicks·z`, which equals the
//! binomial log loss `−clicks·ln p − (impressions − clicks)·ln(1 − p)`.
//!
//! **Clicks > impressions** (it happens in small windows: clicks and
//! impressions are separate events, and few per segment): the
//! gradient is used as written, not clamped. `L` stays convex for any
//! counts (its second derivative in `z` is `impressions·p·(1 − p) ≥ 0`),
//! and its minimum over many examples stays at `p = Σclicks /
//! Σimpressions`, the dashboard's CTR, however the counts split into
//! windows. Clamping the negatives at 0 in the gradient (`g = p·clicks −
//! clicks` for such an example) would not: a segment so sparse that each
//! window holds one event would be pulled to clicks per *event*,
//! CTR/(1 + CTR), instead of its CTR. The count of negatives is clamped at
//! 0 only where a count is needed: the AUC in [`quality`](super::quality).
//!
//! An example with neither impressions nor clicks is not learned (its
//! gradient is 0) and not counted.

use super::features::{Features, Slots};

/// Learning parameters (McMahan et al.'s names; Vowpal Wabbit's
/// `--ftrl_alpha`, `--ftrl_beta`, `--l1`, `--l2`, `-b`). The defaults are
/// α = 0.1, β = 1 (which the paper finds usually good enough), λ1 = 1,
/// λ2 = 1 and 2^20 weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub alpha: f64,
    pub beta: f64,
    pub l1: f64,
    pub l2: f64,
    /// The table has `2^bits` coordinates.
    pub bits: u8,
}

/// Largest table: 2^24 coordinates (z and n: 256 MiB).
pub const MAX_BITS: u8 = 24;

/// Logits are clamped to ±35 (as common FTRL implementations do), so `p`
/// stays strictly inside (0, 1) and every loss stays finite.
const MAX_LOGIT: f64 = 35.0;

impl Default for Params {
    fn default() -> Self {
        Params { alpha: 0.1, beta: 1.0, l1: 1.0, l2: 1.0, bits: 20 }
    }
}

/// Parameters [`Params::validate`] refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParamsError {
    /// α ≤ 0, a negative β, λ1 or λ2, or one not finite.
    #[error("FTRL parameters out of range: {0:?} (α > 0; β, λ1, λ2 ≥ 0, all finite)")]
    OutOfRange(Params),
    /// Hashed-feature bits outside 1..=[`MAX_BITS`].
    #[error("bits {0} outside 1..={MAX_BITS}")]
    Bits(u8),
}

impl Params {
    /// α > 0; β, λ1, λ2 ≥ 0 and finite; bits in 1..=[`MAX_BITS`].
    pub fn validate(&self) -> Result<(), ParamsError> {
        let finite = [self.alpha, self.beta, self.l1, self.l2].iter().all(|v| v.is_finite());
        if !finite || self.alpha <= 0.0 || self.beta < 0.0 || self.l1 < 0.0 || self.l2 < 0.0 {
            return Err(ParamsError::OutOfRange(*self));
        }
        if !(1..=MAX_BITS).contains(&self.bits) {
            return Err(ParamsError::Bits(self.bits));
        }
        Ok(())
    }
}

/// What the model has learned from, in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub examples: u64,
    pub impressions: u64,
    pub clicks: u64,
}

/// The model: plain data (parameters, `z` and `n` per coordinate,
/// counters). See the module docs for the update.
#[derive(Debug, Clone, PartialEq)]
pub struct Ftrl {
    pub(super) params: Params,
    pub(super) z: Vec<f64>,
    pub(super) n: Vec<f64>,
    pub(super) counters: Counters,
}

fn sigmoid(logit: f64) -> f64 {
    1.0 / (1.0 + (-logit.clamp(-MAX_LOGIT, MAX_LOGIT)).exp())
}

impl Ftrl {
    /// A model that knows nothing (every weight 0: predicts 0.5).
    pub fn new(params: Params) -> Result<Ftrl, ParamsError> {
        params.validate()?;
        let len = 1usize << params.bits;
        Ok(Ftrl { params, z: vec![0.0; len], n: vec![0.0; len], counters: Counters::default() })
    }

    pub fn params(&self) -> Params {
        self.params
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The weight of coordinate `i` (computed from `z_i`, `n_i`).
    pub fn weight(&self, i: usize) -> f64 {
        let (z, n) = (self.z[i], self.n[i]);
        let Params { alpha, beta, l1, l2, .. } = self.params;
        if z.abs() <= l1 {
            0.0
        } else {
            -(z - z.signum() * l1) / ((beta + n.sqrt()) / alpha + l2)
        }
    }

    /// Predicted clicks per impression for an example's features (folded
    /// into this model's `2^bits` slots here, so they cannot mismatch).
    pub fn predict(&self, x: &Features) -> f64 {
        self.predict_slots(&x.slots(self.params.bits))
    }

    fn predict_slots(&self, x: &Slots) -> f64 {
        sigmoid(x.iter().map(|(i, xi)| self.weight(i) * xi).sum())
    }

    /// Learns one aggregated example; returns the prediction made before
    /// learning it (what progressive validation scores).
    pub fn learn(&mut self, x: &Features, impressions: u64, clicks: u64) -> f64 {
        let x = x.slots(self.params.bits);
        let p = self.predict_slots(&x);
        if impressions == 0 && clicks == 0 {
            return p;
        }
        // Counts far beyond 2^53 lose precision as f64, harmlessly.
        let g = p * impressions as f64 - clicks as f64;
        let alpha = self.params.alpha;
        for (i, xi) in x.iter() {
            let gi = g * xi;
            let w = self.weight(i);
            let n = self.n[i];
            let sigma = ((n + gi * gi).sqrt() - n.sqrt()) / alpha;
            self.z[i] += gi - sigma * w;
            self.n[i] = n + gi * gi;
        }
        let c = &mut self.counters;
        c.examples += 1;
        c.impressions = c.impressions.saturating_add(impressions);
        c.clicks = c.clicks.saturating_add(clicks);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::features::Features;

    /// Features with chosen hashes: below `2^bits`, a hash is its slot.
    fn features(hashes: [u64; 9]) -> Features {
        Features { hashes }
    }

    #[test]
    fn one_step_follows_algorithm_1_by_hand() {
        let p = Params { alpha: 0.5, beta: 1.0, l1: 1.0, l2: 1.0, bits: 4 };
        let mut m = Ftrl::new(p).unwrap();
        // Nine features in four slots: 0 ×3, 1 ×2, 2 ×2, 3 ×2.
        let x = features([0, 1, 2, 3, 0, 1, 2, 3, 0]);
        // Before: w = 0, p = 0.5. 10 impressions, 2 clicks: g = 0.5·10 − 2 = 3.
        assert_eq!(m.learn(&x, 10, 2), 0.5);
        // Slot 0 (x = 3): g0 = 9, σ = (√81 − 0)/0.5 = 18, z = 9 − 18·0 = 9, n = 81.
        assert_eq!((m.z[0], m.n[0]), (9.0, 81.0));
        // Slot 1 (x = 2): g1 = 6, z = 6, n = 36.
        assert_eq!((m.z[1], m.n[1]), (6.0, 36.0));
        // w0 = −(9 − 1)/((1 + 9)/0.5 + 1) = −8/21; w1 = −(6 − 1)/((1 + 6)/0.5 + 1) = −5/15.
        assert!((m.weight(0) + 8.0 / 21.0).abs() < 1e-15);
        assert!((m.weight(1) + 1.0 / 3.0).abs() < 1e-15);
        // p = σ(3·w0 + 2·(w1 + w2 + w3)) = σ(−24/21 − 2).
        let want = 1.0 / (1.0 + (24.0f64 / 21.0 + 2.0).exp());
        assert!((m.predict(&x) - want).abs() < 1e-15, "{}", m.predict(&x));
        assert_eq!(m.counters(), Counters { examples: 1, impressions: 10, clicks: 2 });
        // Second step: w0 ≠ 0 now enters σ·w.
        let p1 = m.predict(&x);
        m.learn(&x, 10, 2);
        let g0 = 3.0 * (p1 * 10.0 - 2.0);
        let sigma = ((81.0f64 + g0 * g0).sqrt() - 9.0) / 0.5;
        assert!((m.z[0] - (9.0 + g0 - sigma * (-8.0 / 21.0))).abs() < 1e-12);
    }

    #[test]
    fn l1_keeps_small_z_at_zero_weight() {
        let mut m = Ftrl::new(Params { bits: 3, ..Params::default() }).unwrap();
        let x = features([0, 1, 2, 3, 4, 5, 6, 7, 8]);
        // p = 0.5, 1 impression, 0 clicks: g = 0.5 per feature, |z| = 0.5 ≤ λ1.
        m.learn(&x, 1, 0);
        assert!((0..8).all(|i| m.weight(i) == 0.0));
        assert_eq!(m.predict(&x), 0.5);
    }

    #[test]
    fn empty_examples_are_not_learned_and_clicks_beyond_impressions_are() {
        let mut m = Ftrl::new(Params { bits: 8, ..Params::default() }).unwrap();
        let x = features([1, 2, 3, 4, 5, 6, 7, 8, 9]);
        m.learn(&x, 0, 0);
        assert_eq!(m.counters(), Counters::default());
        m.learn(&x, 0, 3); // g = −3: pushes p up, no panic, no clamp
        assert_eq!(m.counters(), Counters { examples: 1, impressions: 0, clicks: 3 });
        assert!(m.predict(&x) > 0.5);
    }

    #[test]
    fn it_converges_to_the_ratio_of_clicks_to_impressions() {
        // One segment, CTR exactly 0.2 per impression, including windows
        // with more clicks than impressions.
        let mut m = Ftrl::new(Params { bits: 10, ..Params::default() }).unwrap();
        let x = features([11, 22, 33, 44, 55, 66, 77, 88, 99]);
        for _ in 0..4000 {
            m.learn(&x, 4, 0);
            m.learn(&x, 0, 1);
        }
        assert!((m.predict(&x) - 0.25).abs() < 0.005, "{}", m.predict(&x));
        for _ in 0..4000 {
            m.learn(&x, 10, 2);
        }
        let p = m.predict(&x);
        assert!((p - 0.2).abs() < 0.005, "{p}");
    }

    #[test]
    fn parameters_are_checked() {
        assert!(Ftrl::new(Params::default()).is_ok());
        assert!(Ftrl::new(Params { alpha: 0.0, ..Params::default() }).is_err());
        assert!(Ftrl::new(Params { l1: f64::NAN, ..Params::default() }).is_err());
        assert!(Ftrl::new(Params { bits: 0, ..Params::default() }).is_err());
        assert!(Ftrl::new(Params { bits: MAX_BITS + 1, ..Params::default() }).is_err());
    }
}
