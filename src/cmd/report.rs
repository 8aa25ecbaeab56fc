//! `adstream report`: the latest windows in ClickHouse (read by
//! [`crate::io::clickhouse::report`]) as console lines on stdout, oldest
//! first, to check the pipeline without a dashboard.

use std::io::Write as _;
use std::process::ExitCode;

use crate::config::ReportConfig;
use crate::engine::window::Totals;
use crate::io::clickhouse::report::{self, ReportRow};
use crate::io::console::format_labeled_line;

pub async fn report(config: ReportConfig) -> anyhow::Result<ExitCode> {
    let rows = report::read(&config).await?;
    if rows.is_empty() {
        eprintln!(
            "no windows in {}{} yet",
            report::source(&config),
            if config.campaign.is_some() || config.ad_format.is_some() { " for this filter" } else { "" }
        );
    }
    let mut out = std::io::stdout().lock();
    for r in &rows {
        if writeln!(out, "{}", line(r)).is_err() {
            break; // a closed pipe (| head) is not an error
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A row in the console line format; CTR and eCPM from its exact sums.
fn line(r: &ReportRow) -> String {
    let t = Totals { impressions: r.impressions, clicks: r.clicks, revenue_micros: r.revenue_micros };
    let labels: Vec<&str> = r.labels.iter().map(String::as_str).collect();
    format_labeled_line(r.window_start_ms * 1000, r.window_end_ms * 1000, &labels, &t)
}
