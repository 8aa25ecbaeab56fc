//! What `adstream learn` reads from and writes to ClickHouse: the progress
//! of every source partition, the partitions `run` registered
//! (`ad_source_partitions`, sql/002) and the segment windows (read), and the
//! model snapshots, per-window quality and predictions (written; tables in
//! `sql/006_learn.sql`). Every error is a [`ClickHouseError`], classified
//! where the client's error is met ([`Boundary`]): a refusal (schema,
//! credentials) is permanent and an outage is retried by the caller.

use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use crate::config::ClickHouseConfig;
use crate::io::clickhouse::retry::{Boundary, ClickHouseError, Target};

/// Every call's result: its errors are classified ([`ClickHouseError`]).
type Result<T, E = ClickHouseError> = std::result::Result<T, E>;

/// The rollup the learner learns from (`ad_metrics_segments_10s`).
pub const SEGMENT_ROLLUP: &str = "campaign_id,ad_format,country,device:10s";

/// What the learner reads and writes (sql/003, sql/006).
const NEEDED: &[&str] = &[
    "ad_window_parts",
    "ad_source_partitions",
    "ad_metrics_segments_10s",
    "ad_ctr_model",
    "ad_ctr_quality",
    "ad_ctr_predictions",
    "ad_ctr_settled",
    "ad_ctr_abandoned",
];

/// 1900-01-01T00:00:00Z, the oldest DateTime64, Unix ms.
const MIN_DATETIME64_MS: i64 = -2_208_988_800_000;

/// One source partition's progress on the segment rollup.
#[derive(Row, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// 1 if the partition has closed (written final) any window.
    pub any_final: u8,
    /// Start of its newest closed window, Unix ms (windows close in
    /// order on a partition, so every earlier one is closed too).
    pub closed_ms: i64,
    /// 1 if it wrote a row within the idle timeout.
    pub active: u8,
}

/// One segment of one window, as `ad_metrics_segments_10s` has it.
#[derive(Row, Deserialize, Debug, Clone)]
pub struct SegmentRow {
    pub start_ms: i64,
    pub end_ms: i64,
    pub campaign_id: String,
    pub ad_format: String,
    pub country: String,
    pub device: String,
    pub impressions: u64,
    pub clicks: u64,
}

#[derive(Row, Serialize, Deserialize, Debug, Clone)]
pub struct ModelRow {
    pub model: String,
    pub version: u64,
    pub learned_through: i64,
    pub windows: u64,
    pub revisions: u64,
    pub examples: u64,
    pub impressions: u64,
    pub clicks: u64,
    #[serde(with = "serde_bytes")]
    pub snapshot: Vec<u8>,
}

/// A window the learner let go of (`ad_ctr_settled`).
#[derive(Row, Serialize, Debug, Clone)]
pub struct SettledRow {
    pub model: String,
    pub window_start: i64,
    pub window_end: i64,
    /// `closed` or `revise_horizon`.
    pub reason: String,
    pub impressions: u64,
    pub clicks: u64,
    pub model_version: u64,
}

#[derive(Row, Serialize, Debug, Clone)]
pub struct QualityRow {
    pub model: String,
    pub window_start: i64,
    pub window_end: i64,
    pub model_version: u64,
    pub examples: u64,
    pub impressions: u64,
    pub clicks: u64,
    pub log_loss: Option<f64>,
    pub normalized_entropy: Option<f64>,
    pub calibration: Option<f64>,
    pub auc: Option<f64>,
}

#[derive(Row, Serialize, Debug, Clone)]
pub struct PredictionRow {
    pub model: String,
    pub window_start: i64,
    pub window_end: i64,
    pub campaign_id: String,
    pub ad_format: String,
    pub country: String,
    pub device: String,
    pub model_version: u64,
    /// %.
    pub predicted_ctr: f64,
    pub impressions: u64,
    pub clicks: u64,
    /// %.
    pub observed_ctr: Option<f64>,
}

/// The learner's ClickHouse.
pub struct LearnStore {
    client: Client,
    /// Without a default database (which may not exist yet).
    base: Client,
    config: ClickHouseConfig,
    model: String,
}

impl LearnStore {
    /// Binds the store to `model`. It never creates tables: `adstream
    /// migrate` (with `--cluster` on a cluster) or `run` does; a learner
    /// that created single-node tables before `migrate --cluster` would
    /// split its node from the cluster.
    pub fn new(config: &ClickHouseConfig, model: &str) -> anyhow::Result<LearnStore> {
        let base = super::client(config)?;
        Ok(LearnStore {
            client: base.clone().with_database(&config.database),
            base,
            config: config.clone(),
            model: model.to_string(),
        })
    }

    /// The tables and views the learner needs that the database lacks
    /// (all of them if it does not exist).
    pub async fn missing_tables(&self) -> Result<Vec<&'static str>> {
        let sql = "SELECT toString(name) FROM system.tables WHERE database = {db:String}";
        let have: Vec<String> =
            self.base.query(sql).param("db", self.db()).fetch_all().await.map_err(|e| self.read_error(e))?;
        Ok(NEEDED.iter().copied().filter(|t| !have.iter().any(|h| h == t)).collect())
    }

    fn db(&self) -> &str {
        &self.config.database
    }

    fn read_error(&self, e: clickhouse::error::Error) -> ClickHouseError {
        Boundary::new(&Target::Read(self.db().to_string()), &self.config).error(e)
    }

    fn write_error(&self, table: &str, step: Option<&str>, e: clickhouse::error::Error) -> ClickHouseError {
        let target = Target::Table(format!("{}.{table}", self.db()));
        let at = Boundary::new(&target, &self.config);
        match step {
            Some(step) => at.step(step)(e),
            None => at.error(e),
        }
    }

    /// Every partition that wrote the segment rollup for windows from
    /// `since_ms` on, with its progress; `active` = wrote within `idle_ms`.
    pub async fn progress(&self, since_ms: i64, idle_ms: u64) -> Result<Vec<PartitionProgress>> {
        let sql = format!(
            "SELECT topic, partition, toUInt8(countIf(is_final) > 0) AS any_final, \
             toUnixTimestamp64Milli(maxIf(window_start, is_final)) AS closed_ms, \
             toUInt8(max(inserted_at) > now64(3) - toIntervalMillisecond({{idle_ms:UInt64}})) AS active \
             FROM {db}.ad_window_parts \
             WHERE rollup_name = {{rollup:String}} AND window_start >= fromUnixTimestamp64Milli({{since_ms:Int64}}, 'UTC') \
             GROUP BY topic, partition ORDER BY topic, partition",
            db = self.db()
        );
        self.client
            .query(&sql)
            .param("idle_ms", idle_ms)
            .param("rollup", SEGMENT_ROLLUP)
            .param("since_ms", since_ms)
            .fetch_all()
            .await
            .map_err(|e| self.read_error(e))
    }

    /// Every source partition `run` registered (`ad_source_partitions`,
    /// from the topic's metadata at its start), written rows or not.
    pub async fn registered_partitions(&self) -> Result<Vec<(String, i32)>> {
        let sql = format!(
            "SELECT DISTINCT toString(topic), partition FROM {db}.ad_source_partitions ORDER BY 1, 2",
            db = self.db()
        );
        self.client.query(&sql).fetch_all().await.map_err(|e| self.read_error(e))
    }

    /// The segment rollups `run` wrote (`campaign_id,ad_format,country,
    /// device:<window>`), by name.
    pub async fn segment_rollups(&self) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT DISTINCT toString(rollup_name) FROM {db}.ad_window_parts \
             WHERE startsWith(rollup_name, 'campaign_id,ad_format,country,device:') ORDER BY 1",
            db = self.db()
        );
        self.client.query(&sql).fetch_all().await.map_err(|e| self.read_error(e))
    }

    /// Start of the oldest window of the segment rollup after `after_ms`
    /// (any, if `None`) and at most `upto_ms`, Unix ms: where the next new
    /// window is, however long the gap before it (a quiet night, or old
    /// rows before the live ones), so a poll never reads an empty range
    /// again and again.
    pub async fn next_window(&self, after_ms: Option<i64>, upto_ms: i64) -> Result<Option<i64>> {
        let sql = format!(
            "SELECT toUnixTimestamp64Milli(min(window_start)) AS first_ms, count() AS n \
             FROM {db}.ad_window_parts WHERE rollup_name = {{rollup:String}} \
               AND window_start > fromUnixTimestamp64Milli({{after:Int64}}, 'UTC') \
               AND window_start <= fromUnixTimestamp64Milli({{upto:Int64}}, 'UTC')",
            db = self.db()
        );
        // DateTime64 starts in 1900: below it, every window is after.
        let after = after_ms.unwrap_or(i64::MIN).max(MIN_DATETIME64_MS);
        let (first, n): (i64, u64) = self
            .client
            .query(&sql)
            .param("rollup", SEGMENT_ROLLUP)
            .param("after", after)
            .param("upto", upto_ms)
            .fetch_one()
            .await
            .map_err(|e| self.read_error(e))?;
        Ok((n > 0).then_some(first))
    }

    /// The segment rows of the windows starting in `[lo_ms, hi_ms]`, by
    /// window.
    pub async fn windows(&self, lo_ms: i64, hi_ms: i64) -> Result<Vec<SegmentRow>> {
        let sql = format!(
            "SELECT toUnixTimestamp64Milli(window_start) AS start_ms, toUnixTimestamp64Milli(window_end) AS end_ms, \
             toString(campaign_id) AS campaign_id, toString(ad_format) AS ad_format, toString(country) AS country, \
             toString(device) AS device, impressions, clicks \
             FROM {db}.ad_metrics_segments_10s \
             WHERE window_start >= fromUnixTimestamp64Milli({{lo:Int64}}, 'UTC') \
               AND window_start <= fromUnixTimestamp64Milli({{hi:Int64}}, 'UTC') \
             ORDER BY window_start, campaign_id, ad_format, country, device",
            db = self.db()
        );
        self.client.query(&sql).param("lo", lo_ms).param("hi", hi_ms).fetch_all().await.map_err(|e| self.read_error(e))
    }

    /// The newest snapshot of the model, if any.
    pub async fn latest_snapshot(&self) -> Result<Option<ModelRow>> {
        let sql = format!(
            "SELECT toString(model) AS model, version, toUnixTimestamp64Milli(learned_through) AS learned_through, \
             windows, revisions, examples, impressions, clicks, snapshot \
             FROM {db}.ad_ctr_model WHERE model = {{model:String}} ORDER BY version DESC, saved_at DESC LIMIT 1",
            db = self.db()
        );
        self.client
            .query(&sql)
            .param("model", self.model.as_str())
            .fetch_optional()
            .await
            .map_err(|e| self.read_error(e))
    }

    async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), ClickHouseError>
    where
        T: Serialize + for<'a> Row<Value<'a> = T>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let mut ins = self.client.insert::<T>(table).await.map_err(|e| self.write_error(table, None, e))?;
        for row in rows {
            ins.write(row).await.map_err(|e| self.write_error(table, None, e))?;
        }
        ins.end().await.map_err(|e| self.write_error(table, Some("insert"), e))
    }

    pub async fn save_snapshot(&self, row: &ModelRow) -> Result<()> {
        self.insert("ad_ctr_model", std::slice::from_ref(row)).await
    }

    /// Deletes the model's snapshots older than version `below` (the
    /// newest ones stay: restore reads only the newest).
    pub async fn prune_snapshots(&self, below: u64) -> Result<()> {
        let sql = format!(
            "ALTER TABLE {db}.ad_ctr_model DELETE WHERE model = {{model:String}} AND version < {{below:UInt64}}",
            db = self.db()
        );
        self.client
            .query(&sql)
            .param("model", self.model.as_str())
            .param("below", below)
            .with_setting("mutations_sync", "1")
            .execute()
            .await
            .map_err(|e| self.write_error("ad_ctr_model", None, e))
    }

    /// Bytes on disk of the learner's tables (`ad_ctr_model`, all models).
    pub async fn model_table_bytes(&self) -> Result<u64> {
        let sql = "SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts \
                   WHERE database = {db:String} AND table = 'ad_ctr_model' AND active";
        self.client.query(sql).param("db", self.db()).fetch_one().await.map_err(|e| self.read_error(e))
    }

    pub async fn write_settled(&self, rows: &[SettledRow]) -> Result<()> {
        self.insert("ad_ctr_settled", rows).await
    }

    /// Impressions and clicks of the segment rollup the model never learned
    /// (`ad_ctr_abandoned`), in all.
    pub async fn abandoned(&self) -> Result<(i64, i64)> {
        let sql = format!(
            "SELECT toInt64(sum(impressions)), toInt64(sum(clicks)) FROM {db}.ad_ctr_abandoned \
             WHERE model = {{model:String}}",
            db = self.db()
        );
        self.client.query(&sql).param("model", self.model.as_str()).fetch_one().await.map_err(|e| self.read_error(e))
    }

    pub async fn write_quality(&self, rows: &[QualityRow]) -> Result<()> {
        self.insert("ad_ctr_quality", rows).await
    }

    pub async fn write_predictions(&self, rows: &[PredictionRow]) -> Result<()> {
        self.insert("ad_ctr_predictions", rows).await
    }
}
