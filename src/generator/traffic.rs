//! [`Traffic`]: which model and how many campaigns (`--traffic`,
//! `--campaigns`), the generator's only knobs besides time and seed.

use super::model::TrafficModel;

/// Most campaigns `--campaigns` accepts: the engine's limit on distinct
/// campaigns in one base window of one partition
/// (`engine::campaigns::MAX_CAMPAIGNS_PER_WINDOW`; beyond it, events are
/// rejected as `too_many_campaigns`), so generated traffic never meets it.
pub const MAX_CAMPAIGNS: u32 = 100_000;

/// Campaigns when `--campaigns` is not given: C001..C005.
pub const DEFAULT_CAMPAIGNS: u32 = 5;

/// The traffic model and the campaign count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub model: TrafficModel,
    /// Campaigns `C001`..: at least 1 (the CLI also caps it at
    /// [`MAX_CAMPAIGNS`]).
    pub campaigns: u32,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic { model: TrafficModel::Seed, campaigns: DEFAULT_CAMPAIGNS }
    }
}

impl Traffic {
    pub fn new(model: TrafficModel, campaigns: u32) -> Self {
        Traffic { model, campaigns: campaigns.max(1) }
    }

    /// Digits of a campaign number in its id: at least 3 (C001), more when
    /// the count needs them (C0001..C1000), so ids sort as numbers.
    pub fn id_width(&self) -> usize {
        (self.campaigns.max(1).ilog10() as usize + 1).max(3)
    }

    /// The id of campaign `index` (0-based): `C001` for 0.
    pub fn campaign_id(&self, index: usize) -> String {
        format!("C{:0w$}", index + 1, w = self.id_width())
    }

    /// Every campaign is equally likely.
    pub fn campaign_share(&self) -> f64 {
        1.0 / f64::from(self.campaigns.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_padded_to_at_least_three_digits() {
        let t = |n| Traffic::new(TrafficModel::Seed, n);
        assert_eq!(t(5).campaign_id(0), "C001");
        assert_eq!(t(999).campaign_id(998), "C999");
        assert_eq!(t(1000).campaign_id(0), "C0001");
        assert_eq!(t(1000).campaign_id(999), "C1000");
        assert_eq!(t(MAX_CAMPAIGNS).campaign_id(41), "C000042");
        assert_eq!(t(0).campaigns, 1);
        assert_eq!(Traffic::default().campaign_id(4), super::super::model::CAMPAIGNS[4]);
    }
}
