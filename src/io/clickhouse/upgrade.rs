//! Upgrading a database created by an adstream from before rollups, in
//! place, by `migrate` (and `run`, which migrates at start):
//!
//! - `ad_window_parts` had no `rollup_name`, `country` or `device` and a sorting
//!   key that did not start with `rollup_name` (which can not be changed in
//!   place). It is renamed to `ad_window_parts_pre_rollups` before the
//!   schema is applied, and its rows are copied into the new table after:
//!   they become rollup `campaign_id,ad_format:<window>` with `''` country
//!   and device, so `ad_metrics_10s` shows the same numbers as before. A
//!   copy interrupted and run again writes the same rows with the same
//!   versions, which FINAL collapses. The old table is then renamed
//!   `ad_window_parts_pre_rollups_copied`, for the operator to drop.
//! - `ad_late_events_log` gets `country` and `device` (empty on old rows).
//!
//! On a cluster the schema is not upgraded automatically: `migrate
//! --cluster` refuses with the statements to run by hand.

use anyhow::anyhow;
use clickhouse::Client;

use crate::io::clickhouse::retry::{Boundary, ClickHouseError};

/// Where the old window table goes.
pub const OLD_PARTS: &str = "ad_window_parts_pre_rollups";

async fn columns(
    client: &Client,
    at: Boundary<'_>,
    database: &str,
    table: &str,
) -> Result<Vec<String>, ClickHouseError> {
    client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(database)
        .bind(table)
        .fetch_all::<String>()
        .await
        .map_err(at.step(format!("reading the columns of {database}.{table}")))
}

/// Before the schema: moves an old window table aside, adds the new late
/// columns. Returns whether there are old rows to copy in afterwards.
pub async fn before(
    client: &Client,
    at: Boundary<'_>,
    database: &str,
    cluster: Option<&str>,
) -> Result<bool, ClickHouseError> {
    let parts = columns(client, at, database, "ad_window_parts").await?;
    let late = columns(client, at, database, "ad_late_events_log").await?;
    let old_parts = !parts.is_empty() && !parts.iter().any(|c| c == "rollup_name");
    let old_late = !late.is_empty() && !late.iter().any(|c| c == "country");
    if (old_parts || old_late) && cluster.is_some() {
        return Err(anyhow!(
            "{database} was created by an adstream from before rollups; on a cluster, upgrade it by hand: \
             RENAME TABLE {database}.ad_window_parts TO {database}.{OLD_PARTS} (and its _local table) ON CLUSTER, \
             run migrate --cluster, then INSERT the old rows as rollup 'campaign_id,ad_format:10s' \
             (see src/io/clickhouse/upgrade.rs)"
        )
        .into());
    }
    if old_late {
        client
            .query(&format!(
                "ALTER TABLE {database}.ad_late_events_log \
                 ADD COLUMN IF NOT EXISTS country LowCardinality(String) AFTER ad_format, \
                 ADD COLUMN IF NOT EXISTS device LowCardinality(String) AFTER country"
            ))
            .execute()
            .await
            .map_err(at.step("adding country and device to ad_late_events_log"))?;
        tracing::info!(database, "upgraded ad_late_events_log: added country and device");
    }
    if old_parts {
        if !columns(client, at, database, OLD_PARTS).await?.is_empty() {
            return Err(anyhow!(
                "{database}.ad_window_parts is from before rollups and {database}.{OLD_PARTS} exists too: \
                 drop one of them (after checking which holds your data) and migrate again"
            )
            .into());
        }
        client
            .query(&format!("RENAME TABLE {database}.ad_window_parts TO {database}.{OLD_PARTS}"))
            .execute()
            .await
            .map_err(at.step("moving the pre-rollup ad_window_parts aside"))?;
        tracing::info!(database, "moved the pre-rollup ad_window_parts to {OLD_PARTS}");
    }
    // Also when an earlier migrate moved it and stopped before the copy.
    Ok(!columns(client, at, database, OLD_PARTS).await?.is_empty())
}

/// After the schema: copies the old window rows in as the campaign ×
/// format rollup of their window length.
pub async fn after(client: &Client, at: Boundary<'_>, database: &str) -> Result<(), ClickHouseError> {
    client
        .query(&format!(
            "INSERT INTO {database}.ad_window_parts \
             (rollup_name, window_start, window_end, campaign_id, ad_format, country, device, topic, partition, \
              impressions, clicks, revenue, version, is_final, inserted_at) \
             SELECT concat('campaign_id,ad_format:', \
                    multiIf(len % 3600 = 0, concat(toString(intDiv(len, 3600)), 'h'), \
                            len % 60 = 0, concat(toString(intDiv(len, 60)), 'm'), \
                            concat(toString(len), 's'))), \
                    window_start, window_end, campaign_id, ad_format, '', '', topic, partition, \
                    impressions, clicks, revenue, version, is_final, inserted_at \
             FROM (SELECT *, dateDiff('second', window_start, window_end) AS len FROM {database}.{OLD_PARTS})"
        ))
        .execute()
        .await
        .map_err(at.step("copying the pre-rollup window rows into ad_window_parts"))?;
    let done = format!("{OLD_PARTS}_copied");
    if columns(client, at, database, &done).await?.is_empty() {
        client
            .query(&format!("RENAME TABLE {database}.{OLD_PARTS} TO {database}.{done}"))
            .execute()
            .await
            .map_err(at.step("marking the pre-rollup window rows as copied"))?;
    }
    tracing::info!(database, "copied the pre-rollup window rows; {database}.{done} can be dropped");
    Ok(())
}
