//! `adstream report`: the latest windows of `ad_metrics_10s`, printed in the
//! console line format (see [`crate::sink::console::format_line`]), oldest
//! first, so an operator can check what the pipeline wrote without opening
//! a dashboard. The numbers are the view's (final values, partitions
//! summed); CTR and eCPM are recomputed from them exactly as the view does.

use anyhow::Context as _;
use clickhouse::Row;
use serde::Deserialize;

use crate::cli::ReportArgs;
use crate::sink::console::format_line;
use crate::window::Totals;

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
pub async fn lines(args: &ReportArgs) -> anyhow::Result<Vec<String>> {
    let ch = &args.clickhouse;
    let client = crate::sink::clickhouse::client(ch)?;
    let db = &ch.database;
    // Only the validated database name reaches the SQL text; the filters
    // travel as bound parameters.
    let filter = "(? = '' OR campaign_id = ?) AND (? = '' OR ad_format = ?)";
    let sql = format!(
        "SELECT toInt64(toUnixTimestamp64Milli(window_start)) AS window_start_ms, \
                toInt64(toUnixTimestamp64Milli(window_end)) AS window_end_ms, \
                campaign_id, ad_format, impressions, clicks, \
                toInt64(CAST(revenue AS Decimal(38, 6)) * 1000000) AS revenue_micros \
         FROM {db}.ad_metrics_10s \
         WHERE {filter} AND window_start IN ( \
             SELECT DISTINCT window_start FROM {db}.ad_metrics_10s WHERE {filter} \
             ORDER BY window_start DESC LIMIT {last}) \
         ORDER BY window_start, campaign_id, ad_format",
        last = args.last
    );
    let campaign = args.campaign.as_deref().unwrap_or("");
    let format = args.ad_format.as_deref().unwrap_or("");
    let rows: Vec<ReportRow> = client
        .query(&sql)
        .bind(campaign)
        .bind(campaign)
        .bind(format)
        .bind(format)
        .bind(campaign)
        .bind(campaign)
        .bind(format)
        .bind(format)
        .fetch_all()
        .await
        .map_err(|e| crate::sink::retry::explain(e.into(), crate::sink::retry::Target::Read(db.clone()), ch))
        .with_context(|| {
            format!(
                "reading {db}.ad_metrics_10s at {} (is the schema there? `adstream migrate` / `adstream run` create it)",
                ch.display_url()
            )
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            let t = Totals { impressions: r.impressions, clicks: r.clicks, revenue_micros: r.revenue_micros };
            format_line(r.window_start_ms * 1000, r.window_end_ms * 1000, &r.campaign_id, &r.ad_format, &t)
        })
        .collect())
}
