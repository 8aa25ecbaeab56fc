//! How good the predictions of one window were, by progressive validation
//! (Blum et al. 1999; McMahan et al. 2013, §5): each example is scored by
//! the prediction made *before* the model learned it, which
//! [`Ftrl::learn`](super::ftrl::Ftrl::learn) returns.
//!
//! Every figure counts impressions, the unit of the label (see
//! [`ftrl`](super::ftrl)):
//! - **log loss**: per impression, `Σ[−c·ln p − (i − c)·ln(1 − p)] / Σi`,
//!   the loss the model minimizes, also when `c > i`;
//! - **normalized entropy** (He et al., "Practical Lessons from Predicting
//!   Clicks on Ads at Facebook", ADKDD 2014): log loss ÷ the entropy of the
//!   window's background CTR `q = Σc / Σi`, i.e. relative to always
//!   predicting `q`: below 1 means better than that;
//! - **calibration**: predicted clicks `Σ p·i` ÷ observed clicks `Σc` (1 is
//!   calibrated);
//! - **AUC**: the probability that a click scores above a non-click, ties
//!   counting half, with `c` positives and `max(i − c, 0)` negatives per
//!   example (the one place the negatives are clamped at 0), exact: a sort
//!   and integer pair counts.
//!
//! A figure that is undefined for the window (no impressions, no clicks,
//! no negatives, a background CTR of 0 or ≥ 1) is `None`.

/// Probabilities are kept this far from 0 and 1 in the log loss.
const EPS: f64 = 1e-15;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored {
    p: f64,
    positives: u64,
    negatives: u64,
}

/// The running tally of one window.
#[derive(Debug, Clone, Default)]
pub struct Quality {
    examples: u64,
    impressions: u64,
    clicks: u64,
    log_loss: f64,
    predicted_clicks: f64,
    scored: Vec<Scored>,
}

/// The figures of one window (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    pub examples: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub log_loss: Option<f64>,
    pub normalized_entropy: Option<f64>,
    pub calibration: Option<f64>,
    pub auc: Option<f64>,
}

fn entropy(q: f64) -> Option<f64> {
    (q > 0.0 && q < 1.0).then(|| -q * q.ln() - (1.0 - q) * (1.0 - q).ln())
}

impl Quality {
    pub fn new() -> Self {
        Quality::default()
    }

    /// Scores one example by `p`, the prediction made before learning it.
    /// An example with neither impressions nor clicks is skipped, as the
    /// model skips it.
    pub fn add(&mut self, p: f64, impressions: u64, clicks: u64) {
        if impressions == 0 && clicks == 0 {
            return;
        }
        let (i, c) = (impressions as f64, clicks as f64);
        let q = p.clamp(EPS, 1.0 - EPS);
        self.examples += 1;
        self.impressions = self.impressions.saturating_add(impressions);
        self.clicks = self.clicks.saturating_add(clicks);
        self.log_loss += -c * q.ln() - (i - c) * (1.0 - q).ln();
        self.predicted_clicks += p * i;
        self.scored.push(Scored { p, positives: clicks, negatives: impressions.saturating_sub(clicks) });
    }

    /// The figures so far.
    pub fn report(&self) -> Report {
        let i = self.impressions as f64;
        let log_loss = (self.impressions > 0).then(|| self.log_loss / i);
        let background = entropy(self.clicks as f64 / i);
        Report {
            examples: self.examples,
            impressions: self.impressions,
            clicks: self.clicks,
            log_loss,
            normalized_entropy: log_loss.zip(background).map(|(l, h)| l / h),
            calibration: (self.clicks > 0).then(|| self.predicted_clicks / self.clicks as f64),
            auc: self.auc(),
        }
    }

    fn auc(&self) -> Option<f64> {
        let mut s = self.scored.clone();
        s.sort_unstable_by(|a, b| a.p.total_cmp(&b.p));
        // Twice the count of (positive, negative) pairs ordered right, plus
        // the ties (each counts half, so once in the doubled count).
        let (mut twice, mut below, mut pos, mut neg) = (0u128, 0u128, 0u128, 0u128);
        for group in s.chunk_by(|a, b| a.p == b.p) {
            let gp: u128 = group.iter().map(|e| u128::from(e.positives)).sum();
            let gn: u128 = group.iter().map(|e| u128::from(e.negatives)).sum();
            twice += 2 * gp * below + gp * gn;
            below += gn;
            pos += gp;
            neg += gn;
        }
        (pos > 0 && neg > 0).then(|| twice as f64 / (2 * pos * neg) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(examples: &[(f64, u64, u64)]) -> Report {
        let mut q = Quality::new();
        for &(p, i, c) in examples {
            q.add(p, i, c);
        }
        q.report()
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn figures_match_a_hand_computation() {
        let r = report(&[(0.1, 10, 1), (0.2, 5, 2), (0.5, 5, 1), (0.3, 0, 0)]);
        assert_eq!((r.examples, r.impressions, r.clicks), (3, 20, 4), "the empty example is skipped");
        // −(ln .1 + 9 ln .9) − (2 ln .2 + 3 ln .8) − (ln .5 + 4 ln .5), ÷ 20.
        assert!(close(r.log_loss, 0.530243605776252), "{r:?}");
        // Background CTR 4/20 = 0.2: entropy 0.5004024235381879.
        assert!(close(r.normalized_entropy, 0.530243605776252 / 0.5004024235381879), "{r:?}");
        // Predicted clicks 0.1·10 + 0.2·5 + 0.5·5 = 4.5 over 4 observed.
        assert!(close(r.calibration, 1.125), "{r:?}");
        // Positives/negatives 1/9 at .1, 2/3 at .2, 1/4 at .5: 16 pairs × 4.
        // Ordered right: 2·9 + 1·(9 + 3) = 30; tied: (1·9 + 2·3 + 1·4)/2 = 9.5.
        assert!(close(r.auc, 39.5 / 64.0), "{r:?}");
    }

    #[test]
    fn auc_handles_ties_across_examples_and_perfect_order() {
        assert!(close(report(&[(0.9, 3, 3), (0.1, 2, 0)]).auc, 1.0));
        assert!(close(report(&[(0.1, 3, 3), (0.9, 2, 0)]).auc, 0.0));
        assert!(close(report(&[(0.3, 10, 1), (0.3, 10, 5), (0.3, 4, 0)]).auc, 0.5));
        // Tie across two examples at 0.2: 1 positive vs 2 + 3 negatives tie.
        // (0.1: 0 pos / 4 neg) (0.2: 1/2) (0.2: 0/3) (0.7: 1/0)
        // right: 1·4 + 1·(4 + 5) = 13; tied: 1·5/2 = 2.5; pairs 2 × 9.
        assert!(close(report(&[(0.1, 4, 0), (0.2, 3, 1), (0.2, 3, 0), (0.7, 0, 1)]).auc, 15.5 / 18.0));
    }

    #[test]
    fn undefined_figures_are_none_and_clicks_beyond_impressions_count() {
        let none = report(&[]);
        assert_eq!((none.log_loss, none.normalized_entropy, none.calibration, none.auc), (None, None, None, None));
        let no_clicks = report(&[(0.1, 10, 0)]);
        assert!(close(no_clicks.log_loss, -(0.9f64.ln())));
        assert_eq!((no_clicks.normalized_entropy, no_clicks.calibration, no_clicks.auc), (None, None, None));
        // 3 clicks on 1 impression: 3 positives, 0 negatives (clamped); the
        // loss is −3 ln .5 − (1 − 3) ln .5 = −ln .5 per impression.
        let more = report(&[(0.5, 1, 3)]);
        assert!(close(more.log_loss, 2f64.ln()));
        assert_eq!((more.normalized_entropy, more.auc), (None, None), "background CTR 3 ≥ 1, no negatives");
        // Always predicting the background CTR scores NE = 1, calibration 1.
        let flat = report(&[(0.25, 8, 1), (0.25, 4, 2), (0.25, 4, 1)]);
        assert!(close(flat.normalized_entropy, 1.0), "{flat:?}");
        assert!(close(flat.calibration, 1.0));
    }
}
