//! Human-readable window lines, the format of the project's origin:
//!
//! `2025-12-10 00:46:00 ~ 00:46:10 | C001 | banner | impressions 85 | clicks 4 | CTR 4.7% | revenue $0.23 | eCPM $2.71`
//!
//! Every line carries the labels so it can be grepped. `CTR n/a` and
//! `eCPM n/a` mean the window had no impressions.

use std::io::Write;
use std::sync::Arc;

use crate::engine::batch::{campaign_name, Batch, OutRow};
use crate::engine::event::{AdFormat, Country, Device};
use crate::engine::time::{format_seconds, format_time_of_day};
use crate::engine::window::{ctr_percent, ecpm_usd, Totals};

/// One window line.
pub fn format_line(window_start_us: i64, window_end_us: i64, campaign: &str, ad_format: &str, t: &Totals) -> String {
    format_labeled_line(window_start_us, window_end_us, &[campaign, ad_format], t)
}

/// One window line with any labels where [`format_line`] has campaign and
/// format (`US`, or `C001 | banner | US | iOS`), for `report --by`.
pub fn format_labeled_line(window_start_us: i64, window_end_us: i64, labels: &[&str], t: &Totals) -> String {
    let ctr = ctr_percent(t).map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}%"));
    let ecpm = ecpm_usd(t).map_or_else(|| "n/a".to_string(), |v| format!("${v:.2}"));
    let mut out = format!("{} ~ {}", format_seconds(window_start_us), format_time_of_day(window_end_us));
    for l in labels {
        out.push_str(" | ");
        out.push_str(l);
    }
    out.push_str(&format!(
        " | impressions {} | clicks {} | CTR {ctr} | revenue ${:.2} | eCPM {ecpm}",
        t.impressions,
        t.clicks,
        t.revenue_micros as f64 / 1e6,
    ));
    out
}

impl OutRow {
    /// Readable order for consoles: window, campaign, format, partition
    /// (`names`: the batch's campaign names). Only the printers sort; a
    /// batch stays in emission order, which costs nothing on the way to
    /// ClickHouse.
    #[allow(clippy::type_complexity)]
    pub fn display_key<'a>(
        &self,
        names: &'a [Arc<str>],
    ) -> (i64, &'a str, Option<AdFormat>, Option<Country>, Option<Device>, i32) {
        let k = &self.row.key;
        let campaign = k.campaign.map_or("", |c| campaign_name(names, c));
        (self.row.window_start_us, campaign, k.ad_format, k.country, k.device, self.partition)
    }

    /// This row as a console line (without the partition). A rollup that
    /// leaves a dimension out shows `*` there; country and device follow
    /// the format when the rollup has them.
    pub fn console_line(&self, campaign: &str) -> String {
        let k = &self.row.key;
        let mut label = k.ad_format.map_or("*", |f| f.as_str()).to_string();
        for v in [k.country.map(|c| c.as_str()), k.device.map(|d| d.as_str())].into_iter().flatten() {
            label.push_str(" | ");
            label.push_str(v);
        }
        let campaign = if k.campaign.is_some() { campaign } else { "*" };
        format_line(self.row.window_start_us, self.row.window_end_us, campaign, &label, &self.row.totals)
    }
}

/// Prints batches to stdout: the rows of the campaign × format rollup at
/// the base window (all rows when that rollup is not configured). In `run` mode a line is one source
/// partition's contribution, so it is tagged with the partition. The output
/// is a changelog: a window's rows are printed when it fires (tagged
/// `(early)`), again when late events update them, and a last time when the
/// window closes; the latest line for a window × campaign × format ×
/// partition replaces the earlier ones.
#[derive(Default)]
pub struct ConsoleSink;

impl ConsoleSink {
    pub fn write(&mut self, batch: &Batch) {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut rows: Vec<&OutRow> = batch.console_rows().collect();
        rows.sort_by(|a, b| a.display_key(&batch.names).cmp(&b.display_key(&batch.names)));
        for r in rows {
            let line = r.console_line(batch.campaign(r));
            let tag = if r.row.is_final { "" } else { " (early)" };
            let _ = writeln!(out, "{line} | partition {}{tag}", r.partition);
        }
        for l in &batch.late {
            let _ = writeln!(
                out,
                "late event {} (partition {} offset {}): {}",
                l.event_id, l.partition, l.offset, l.reason
            );
        }
        for r in &batch.rejected {
            let _ = writeln!(
                out,
                "rejected (partition {} offset {}): {}: {}",
                r.partition,
                r.offset,
                r.reason.as_str(),
                r.detail
            );
        }
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::time::parse_timestamp_micros;

    #[test]
    fn matches_the_documented_line() {
        let s = parse_timestamp_micros("2025-12-10T00:46:00Z").unwrap();
        let t = Totals { impressions: 85, clicks: 4, revenue_micros: 230_000 };
        assert_eq!(
            format_line(s, s + 10_000_000, "C001", "banner", &t),
            "2025-12-10 00:46:00 ~ 00:46:10 | C001 | banner | impressions 85 | clicks 4 | CTR 4.7% | revenue $0.23 | eCPM $2.71"
        );
        assert_eq!(
            format_labeled_line(s, s + 10_000_000, &["US"], &t),
            "2025-12-10 00:46:00 ~ 00:46:10 | US | impressions 85 | clicks 4 | CTR 4.7% | revenue $0.23 | eCPM $2.71"
        );
        assert_eq!(
            format_labeled_line(s, s + 10_000_000, &["C001", "banner", "US", "iOS"], &t),
            "2025-12-10 00:46:00 ~ 00:46:10 | C001 | banner | US | iOS | impressions 85 | clicks 4 | CTR 4.7% | revenue $0.23 | eCPM $2.71"
        );
    }

    #[test]
    fn no_impressions_is_not_a_division_by_zero() {
        let t = Totals { impressions: 0, clicks: 2, revenue_micros: 50_000 };
        let line = format_line(0, 10_000_000, "C002", "interstitial", &t);
        assert!(line.ends_with("| clicks 2 | CTR n/a | revenue $0.05 | eCPM n/a"), "{line}");
    }
}
