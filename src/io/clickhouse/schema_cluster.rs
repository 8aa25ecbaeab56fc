//! The schema on a ClickHouse cluster (`migrate --cluster NAME`, `run
//! --cluster NAME`): the single-node statements of `sql/` (see
//! [`crate::io::clickhouse::schema`]), rewritten, so the columns, keys and views are written
//! once:
//!
//! - `CREATE DATABASE` and every view get `ON CLUSTER NAME`; the views are
//!   the same text, over the `Distributed` tables (which keep the single-node
//!   table names, so the sink and the views need no change).
//! - every table `T` becomes a local `T_local` (`ReplicatedReplacingMergeTree`
//!   with the `{shard}`/`{replica}` macros, one Keeper path per shard) plus
//!   `T` itself, `Distributed` over `T_local` with a sharding key from
//!   [`SHARDING`].
//!
//! Why the sharding keys keep the views exact: `ad_metrics` reads
//! `ad_window_parts FINAL` and sums the rows of each (window, campaign,
//! format) over the source partitions. On a `Distributed` table FINAL runs on
//! each shard separately, so every version of one row must land on the same
//! shard. Hashing (window_start, campaign_id, ad_format) does that (the
//! versions of a row share its whole sorting key), and also keeps all the
//! partitions' rows of one (window, key) on one shard; the partition
//! number must NOT be in the key, or one (window, key) would be split over
//! shards (still summed correctly by the distributed GROUP BY, but FINAL
//! would be only as good as the hash of the partition). The late and
//! rejected logs are keyed by (topic, partition, offset), so that is their
//! sharding key.
//!
//! Nothing here talks to a cluster: this machine has none. The rendered
//! statements are parsed by the real engine (`formatQuery`) in
//! tests/cluster_schema.rs; the single-node schema is the one run end to end.

use anyhow::{bail, Context as _};

use crate::config::ClickHouseConfig;
use crate::io::clickhouse::retry::{Boundary, ClickHouseError, Target};
use crate::io::clickhouse::schema::{statements as single_node, validate_identifier};
use crate::io::clickhouse::upgrade;

/// Each table's `Distributed` sharding key. Every `CREATE TABLE` of `sql/`
/// must have one (rendering fails otherwise, and a test renders them all).
pub const SHARDING: &[(&str, &str)] = &[
    ("ad_window_parts", "cityHash64(window_start, campaign_id, ad_format)"),
    ("ad_source_partitions", "cityHash64(topic, partition)"),
    ("ad_late_events_log", "cityHash64(topic, partition, offset)"),
    ("ad_rejected_events_log", "cityHash64(topic, partition, offset)"),
    // The learner's tables: a model's rows on one shard, so FINAL over its
    // snapshots, windows and predictions sees every version of a row.
    ("ad_ctr_model", "cityHash64(model)"),
    ("ad_ctr_quality", "cityHash64(model)"),
    ("ad_ctr_predictions", "cityHash64(model)"),
    ("ad_ctr_settled", "cityHash64(model)"),
];

/// Suffix of the shard-local replicated tables.
pub const LOCAL_SUFFIX: &str = "_local";

/// The Keeper path of a local table: one per shard (`{shard}` macro), the
/// replicas of a shard share it and are told apart by `{replica}`.
pub fn keeper_path(database: &str, local_table: &str) -> String {
    format!("/clickhouse/tables/{{shard}}/{database}/{local_table}")
}

/// The statements to run, each with its source file: the single-node schema
/// without `cluster`, its cluster rendering with it.
pub fn statements(database: &str, cluster: Option<&str>) -> anyhow::Result<Vec<(&'static str, String)>> {
    let base = single_node(database)?;
    let Some(cluster) = cluster else { return Ok(base) };
    validate_identifier("cluster", cluster)?;
    let mut out = Vec::with_capacity(base.len() + SHARDING.len());
    for (file, stmt) in base {
        for s in rewrite(database, cluster, &stmt).with_context(|| format!("rendering {file} for a cluster"))? {
            out.push((file, s));
        }
    }
    Ok(out)
}

/// `migrate --print`: every statement, `;`-terminated, as a script that
/// `clickhouse-client --multiquery` accepts.
pub fn script(database: &str, cluster: Option<&str>) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut last_file = "";
    for (file, stmt) in statements(database, cluster)? {
        if file != last_file {
            out.push_str(&format!("-- {file}\n"));
            last_file = file;
        }
        out.push_str(&stmt);
        out.push_str(";\n\n");
    }
    Ok(out)
}

/// Applies the schema (single-node or cluster) to `config.database`.
/// `client` must not be bound to the database (it may not exist yet). On a
/// cluster each statement is distributed DDL: it returns once every host
/// ran it or `distributed_ddl_task_timeout` (180 s by default) passed.
pub async fn migrate(
    client: &clickhouse::Client,
    config: &ClickHouseConfig,
    cluster: Option<&str>,
) -> Result<(), ClickHouseError> {
    let database = config.database.as_str();
    let statements = statements(database, cluster)?;
    let target = Target::Schema(database.to_string());
    let at = Boundary::new(&target, config);
    let mut copy_old = false;
    for (i, (file, stmt)) in statements.iter().enumerate() {
        if i == 1 {
            // The database exists now: upgrade what an older adstream made.
            copy_old = upgrade::before(client, at, database, cluster).await?;
        }
        client.query(stmt).execute().await.map_err(at.step(format!("applying {file}")))?;
    }
    if copy_old {
        upgrade::after(client, at, database).await?;
    }
    Ok(())
}

/// One single-node statement as its cluster statement(s).
fn rewrite(db: &str, cluster: &str, stmt: &str) -> anyhow::Result<Vec<String>> {
    if stmt == format!("CREATE DATABASE IF NOT EXISTS {db}") {
        return Ok(vec![format!("{stmt} ON CLUSTER {cluster}")]);
    }
    if let Some(rest) = stmt.strip_prefix(&format!("CREATE OR REPLACE VIEW {db}.")) {
        let Some((name, body)) = rest.split_once(" AS\n") else { bail!("view without ` AS` line: {stmt}") };
        validate_identifier("view", name)?;
        return Ok(vec![format!("CREATE OR REPLACE VIEW {db}.{name} ON CLUSTER {cluster} AS\n{body}")]);
    }
    if let Some(rest) = stmt.strip_prefix(&format!("CREATE TABLE IF NOT EXISTS {db}.")) {
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let (name, body) = rest.split_at(name_len);
        let Some(&(_, key)) = SHARDING.iter().find(|(t, _)| *t == name) else {
            bail!("table {name} has no sharding key in schema_cluster::SHARDING")
        };
        let local = format!("{name}{LOCAL_SUFFIX}");
        const ENGINE: &str = "ENGINE = ReplacingMergeTree";
        anyhow::ensure!(body.matches(ENGINE).count() == 1, "table {name}: expected one `{ENGINE}` clause");
        let (cols, after) = body.split_once(ENGINE).unwrap_or((body, ""));
        let replicated = format!("ENGINE = ReplicatedReplacingMergeTree('{}', '{{replica}}'", keeper_path(db, &local));
        let engine = match after.strip_prefix('(') {
            Some(args) => format!("{replicated}, {args}"),
            None => format!("{replicated}){after}"),
        };
        // Replicated tables deduplicate through Keeper; the single-node
        // setting would be inert there.
        let engine: String = engine
            .lines()
            .filter(|l| !l.trim_start().starts_with("SETTINGS non_replicated_deduplication_window"))
            .collect::<Vec<_>>()
            .join("\n");
        return Ok(vec![
            format!("CREATE TABLE IF NOT EXISTS {db}.{local} ON CLUSTER {cluster}{cols}{engine}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{name} ON CLUSTER {cluster} AS {db}.{local}\n\
                 ENGINE = Distributed('{cluster}', '{db}', '{local}', {key})"
            ),
        ]);
    }
    bail!("no cluster rendering for: {}", stmt.lines().next().unwrap_or(stmt))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_cluster_it_is_the_single_node_schema() {
        assert_eq!(statements("adx", None).unwrap(), single_node("adx").unwrap());
    }

    #[test]
    fn every_table_becomes_replicated_local_plus_distributed() {
        let s: Vec<String> = statements("adx", Some("prod")).unwrap().into_iter().map(|(_, s)| s).collect();
        assert!(s.iter().all(|q| q.contains(" ON CLUSTER prod")), "{s:#?}");
        assert!(s.iter().all(|q| !q.contains(" ReplacingMergeTree") && !q.contains("non_replicated")), "{s:#?}");
        for (table, key) in SHARDING {
            let local = s
                .iter()
                .find(|q| q.starts_with(&format!("CREATE TABLE IF NOT EXISTS adx.{table}_local ON CLUSTER prod\n(")))
                .unwrap_or_else(|| panic!("{table}_local"));
            assert!(
                local.contains(&format!(
                    "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/adx/{table}_local', '{{replica}}'"
                )),
                "{local}"
            );
            let dist = format!(
                "CREATE TABLE IF NOT EXISTS adx.{table} ON CLUSTER prod AS adx.{table}_local\n\
                 ENGINE = Distributed('prod', 'adx', '{table}_local', {key})"
            );
            assert!(s.contains(&dist), "{dist}");
        }
        // The version column stays the replacing key of the window rows.
        assert!(s.iter().any(|q| q.contains("/ad_window_parts_local', '{replica}', version)")));
        // Views keep their single-node body and read the Distributed tables.
        let view = s
            .iter()
            .find(|q| q.starts_with("CREATE OR REPLACE VIEW adx.ad_rollup_metrics ON CLUSTER prod AS\n"))
            .unwrap();
        assert!(view.contains("FROM adx.ad_window_parts FINAL"), "{view}");
        let views = single_node("adx").unwrap().iter().filter(|(_, q)| q.contains(" VIEW ")).count();
        assert_eq!(s.len(), 1 + 2 * SHARDING.len() + views);
    }

    #[test]
    fn the_sharding_key_keeps_a_window_and_key_together() {
        // Not the partition: all partitions' rows of one (window, key), and
        // every version of each, must be on one shard.
        let (_, key) = SHARDING.iter().find(|(t, _)| *t == "ad_window_parts").unwrap();
        assert!(!key.contains("partition") && key.contains("window_start") && key.contains("campaign_id"));
    }

    #[test]
    fn cluster_names_are_identifiers() {
        assert!(statements("adx", Some("prod-1")).is_err());
        assert!(statements("adx", Some("a'b")).is_err());
        assert!(statements("adx", Some("")).is_err());
    }

    #[test]
    fn the_script_terminates_every_statement() {
        let text = script("adx", Some("prod")).unwrap();
        assert_eq!(text.matches(";\n").count(), statements("adx", Some("prod")).unwrap().len());
        assert!(text.starts_with("-- 001_database.sql\nCREATE DATABASE IF NOT EXISTS adx ON CLUSTER prod;"));
    }
}
