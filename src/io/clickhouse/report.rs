//! What `adstream report` (`cmd::report`) reads: the latest windows (final
//! values, partitions summed), oldest first, which the command prints in
//! the console line format (see [`crate::io::console::format_line`]), so an
//! operator can check what the pipeline wrote without opening a dashboard.
//! CTR and eCPM are recomputed from the summed numbers exactly as the views
//! do.
//!
//! `--by campaign-format` (the default) reads `ad_metrics`: one line per
//! window × campaign × format. `--by country | device | segment` reads the
//! segment rollup (`campaign_id,ad_format,country,device:<size>` in
//! `ad_rollup_metrics`) and sums it in SQL per window × country, window ×
//! device, or keeps every window × campaign × format × country × device:
//! impressions and clicks as UInt64, revenue as Decimal, so the sums are
//! exact; the ratios are computed here from those sums, never averaged.
//! `--campaign` and `--format` filter the rows before they are summed.
//!
//! The window size is `--window` if given, else the size of the latest
//! window of the rollup read (the smallest one at the latest start: every
//! longer rollup window starts with a base window, so a run with
//! `--window 5s` is reported at 5 s without further flags).

use anyhow::Context as _;
use clickhouse::Row;
use serde::Deserialize;

use crate::config::{ReportBy, ReportConfig};
use crate::engine::{Dims, Rollup};
use crate::io::clickhouse::retry::{Boundary, Target};

/// One line of the report: a window × group, its sums exact.
#[derive(Row, Deserialize, Debug)]
pub struct ReportRow {
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// The group's labels, in line order (`[campaign, format]`, `[country]`…).
    pub labels: Vec<String>,
    pub impressions: u64,
    pub clicks: u64,
    pub revenue_micros: i64,
}

/// The grouping columns of one line, in line (and sort) order. Constant
/// column names only: nothing input-derived reaches the SQL text here.
fn group_columns(by: ReportBy) -> &'static [&'static str] {
    match by {
        ReportBy::CampaignFormat => &["campaign_id", "ad_format"],
        ReportBy::Country => &["country"],
        ReportBy::Device => &["device"],
        ReportBy::Segment => &["campaign_id", "ad_format", "country", "device"],
    }
}

/// The dimensions of the rollup `by` is read from.
fn source_dims(by: ReportBy) -> Dims {
    match by {
        ReportBy::CampaignFormat => Dims::CAMPAIGN_FORMAT,
        ReportBy::Country | ReportBy::Device | ReportBy::Segment => Dims::SEGMENT,
    }
}

/// What an empty report read, for the "no windows yet" line.
pub fn source(config: &ReportConfig) -> String {
    let db = &config.clickhouse.database;
    match config.by {
        ReportBy::CampaignFormat => format!("{db}.ad_metrics"),
        by => {
            let size = config.window.map_or_else(
                || "<window>".to_string(),
                |w| crate::engine::time::format_duration_us(i64::try_from(w.as_micros()).unwrap_or(i64::MAX)),
            );
            format!("{db}.ad_rollup_metrics (rollup {}:{size})", source_dims(by).name())
        }
    }
}

/// The SQL of the report. Only the validated database name, the constant
/// grouping columns and the number `--last` reach the SQL text; the
/// filters, the window size and the rollup name travel as server-side
/// query parameters (`param_*` in the request, `{name:Type}` in the SQL),
/// which ClickHouse substitutes as typed values after parsing (the
/// `clickhouse` crate's `.param()`, not `.bind()`, which would splice
/// escaped text into the SQL client-side).
fn query(db: &str, by: ReportBy, last: u32) -> String {
    let filter = "({campaign:String} = '' OR campaign_id = {campaign:String}) \
                  AND ({format:String} = '' OR ad_format = {format:String})";
    let cols = group_columns(by).join(", ");
    match by {
        // Unchanged since before --by: ad_metrics has one row per window ×
        // campaign × format already.
        ReportBy::CampaignFormat => {
            let filter =
                format!("{filter} AND dateDiff('millisecond', window_start, window_end) = {{window_ms:Int64}}");
            format!(
                "SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS window_start_ms, \
                        toInt64(toUnixTimestamp64Milli(window_end)) AS window_end_ms, \
                        CAST([{cols}] AS Array(String)) AS labels, impressions, clicks, \
                        toInt64(CAST(revenue AS Decimal(38, 6)) * 1000000) AS revenue_micros \
                 FROM {db}.ad_metrics \
                 WHERE {filter} AND window_start IN ( \
                     SELECT DISTINCT window_start FROM {db}.ad_metrics WHERE {filter} \
                     ORDER BY window_start DESC LIMIT {last}) \
                 ORDER BY window_start, {cols}"
            )
        }
        // Summed per group: UInt64 and Decimal(38, 6) sums, exact.
        _ => {
            let filter = format!("rollup_name = {{rollup:String}} AND {filter}");
            format!(
                "SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS window_start_ms, \
                        toInt64(toUnixTimestamp64Milli(window_end)) AS window_end_ms, \
                        CAST([{cols}] AS Array(String)) AS labels, \
                        sum(impressions) AS impressions, sum(clicks) AS clicks, \
                        toInt64(sum(CAST(revenue AS Decimal(38, 6))) * 1000000) AS revenue_micros \
                 FROM {db}.ad_rollup_metrics \
                 WHERE {filter} AND window_start IN ( \
                     SELECT DISTINCT window_start FROM {db}.ad_rollup_metrics WHERE {filter} \
                     ORDER BY window_start DESC LIMIT {last}) \
                 GROUP BY window_start, window_end, {cols} \
                 ORDER BY window_start, {cols}"
            )
        }
    }
}

/// The report's rows, oldest window first, then by the group's labels.
pub async fn read(config: &ReportConfig) -> anyhow::Result<Vec<ReportRow>> {
    let ch = &config.clickhouse;
    let client = crate::io::clickhouse::client(ch)?;
    let db = &ch.database;
    let context = |what: &str| {
        format!(
            "reading {db}.{what} at {} (is the schema there? `adstream migrate` / `adstream run` create it)",
            ch.display_url()
        )
    };
    let target = Target::Read(db.clone());
    let explain = |e: clickhouse::error::Error| Boundary::new(&target, ch).error(e);
    let dims = source_dims(config.by);
    let window_ms = match config.window {
        Some(w) => i64::try_from(w.as_millis()).unwrap_or(i64::MAX),
        None => {
            // The smallest window at the latest start of this rollup: a 1 m
            // and a 10 s window can both start at 00:01:00.
            let latest: Vec<i64> = client
                .query(&format!(
                    "SELECT toInt64(dateDiff('millisecond', window_start, window_end)) \
                     FROM {db}.ad_window_parts WHERE startsWith(rollup_name, {{family:String}}) \
                     ORDER BY window_start DESC, window_end ASC LIMIT 1"
                ))
                .param("family", format!("{}:", dims.name()))
                .fetch_all()
                .await
                .map_err(explain)
                .with_context(|| context("ad_window_parts"))?;
            match latest.first() {
                Some(&ms) => ms,
                None => return Ok(Vec::new()),
            }
        }
    };
    let rollup = Rollup::new(dims, window_ms.saturating_mul(1000)).name();
    client
        .query(&query(db, config.by, config.last))
        .param("campaign", config.campaign.as_deref().unwrap_or(""))
        .param("format", config.ad_format.as_deref().unwrap_or(""))
        .param("window_ms", window_ms)
        .param("rollup", rollup.as_str())
        .fetch_all()
        .await
        .map_err(explain)
        .with_context(|| {
            context(if config.by == ReportBy::CampaignFormat { "ad_metrics" } else { "ad_rollup_metrics" })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouped_reports_read_the_segment_rollup_and_sum_it() {
        for by in [ReportBy::Country, ReportBy::Device, ReportBy::Segment] {
            let sql = query("adtech", by, 6);
            assert!(sql.contains("FROM adtech.ad_rollup_metrics"), "{sql}");
            assert!(sql.contains("rollup_name = {rollup:String}"), "{sql}");
            assert!(sql.contains("sum(impressions)") && sql.contains("sum(CAST(revenue AS Decimal(38, 6)))"), "{sql}");
            assert!(
                !sql.contains("avg") && !sql.contains("ctr") && !sql.contains("ecpm"),
                "ratios are not read: {sql}"
            );
            assert!(sql.contains(&format!("GROUP BY window_start, window_end, {}", group_columns(by).join(", "))));
        }
        let sql = query("adtech", ReportBy::CampaignFormat, 6);
        assert!(sql.contains("FROM adtech.ad_metrics ") && !sql.contains("GROUP BY"), "{sql}");
        assert_eq!(
            Rollup::new(source_dims(ReportBy::Country), 10_000_000).name(),
            "campaign_id,ad_format,country,device:10s"
        );
        assert_eq!(
            Rollup::new(source_dims(ReportBy::Device), 3_600_000_000).name(),
            "campaign_id,ad_format,country,device:1h"
        );
    }
}
