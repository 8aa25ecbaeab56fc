//! `adstream report`: the latest windows of `ad_metrics` (final values,
//! partitions summed), printed in the console line format (see
//! [`crate::io::console::format_line`]), oldest first, so an operator can
//! check what the pipeline wrote without opening a dashboard. CTR and eCPM
//! are recomputed from the view's numbers exactly as the view does.
//!
//! The window size is `--window` if given, else the size of the latest
//! window in `ad_window_parts` (so a pipeline run with `--window 5s` is
//! reported without further flags).

use anyhow::Context as _;
use clickhouse::Row;
use serde::Deserialize;

use crate::config::ReportConfig;
use crate::engine::window::Totals;
use crate::io::clickhouse::retry::Target;
use crate::io::console::format_line;

#[derive(Row, Deserialize, Debug)]
struct ReportRow {
    window_start_ms: i64,
    window_end_ms: i64,
    campaign_id: String,
    ad_format: String,
    impressions: u64,
    clicks: u64,
    revenue_micros: i64,
}

/// The report's lines, oldest window first, then campaign and format.
pub async fn lines(args: &ReportConfig) -> anyhow::Result<Vec<String>> {
    let ch = &args.clickhouse;
    let client = crate::io::clickhouse::client(ch);
    let db = &ch.database;
    let context = |what: &str| {
        format!(
            "reading {db}.{what} at {} (is the schema there? `adstream migrate` / `adstream run` create it)",
            ch.display_url()
        )
    };
    let explain =
        |e: clickhouse::error::Error| crate::io::clickhouse::retry::explain(e.into(), Target::Read(db.clone()), ch);
    let window_ms = match args.window {
        Some(w) => i64::try_from(w.as_millis()).unwrap_or(i64::MAX),
        None => {
            let latest: Vec<i64> = client
                .query(&format!(
                    "SELECT toInt64(dateDiff('millisecond', window_start, window_end)) \
                     FROM {db}.ad_window_parts ORDER BY window_start DESC LIMIT 1"
                ))
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
    // Only the validated database name and the number --last reach the SQL
    // text; the filters and the window size travel as server-side query
    // parameters (`param_*` in the request, `{name:Type}` in the SQL), which
    // ClickHouse substitutes as typed values after parsing.
    let filter = "({campaign:String} = '' OR campaign_id = {campaign:String}) \
                  AND ({format:String} = '' OR ad_format = {format:String}) \
                  AND dateDiff('millisecond', window_start, window_end) = {window_ms:Int64}";
    let sql = format!(
        "SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS window_start_ms, \
                toInt64(toUnixTimestamp64Milli(window_end)) AS window_end_ms, \
                campaign_id, ad_format, impressions, clicks, \
                toInt64(CAST(revenue AS Decimal(38, 6)) * 1000000) AS revenue_micros \
         FROM {db}.ad_metrics \
         WHERE {filter} AND window_start IN ( \
             SELECT DISTINCT window_start FROM {db}.ad_metrics WHERE {filter} \
             ORDER BY window_start DESC LIMIT {last}) \
         ORDER BY window_start, campaign_id, ad_format",
        last = args.last
    );
    let rows: Vec<ReportRow> = client
        .query(&sql)
        .param("campaign", args.campaign.as_deref().unwrap_or(""))
        .param("format", args.ad_format.as_deref().unwrap_or(""))
        .param("window_ms", window_ms)
        .fetch_all()
        .await
        .map_err(explain)
        .with_context(|| context("ad_metrics"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let t = Totals { impressions: r.impressions, clicks: r.clicks, revenue_micros: r.revenue_micros };
            format_line(r.window_start_ms * 1000, r.window_end_ms * 1000, &r.campaign_id, &r.ad_format, &t)
        })
        .collect())
}
