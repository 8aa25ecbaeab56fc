//! The ClickHouse sink: one `INSERT` per table per batch (RowBinary over
//! HTTP via the official `clickhouse` crate), into the tables of `sql/`.
//! Every rollup's rows go to `ad_window_parts`, a dimension a rollup
//! leaves out written as `''` ("all").
//!
//! Writes are idempotent by design: window rows are versioned
//! (ReplacingMergeTree keeps the highest version), late and rejected
//! records are keyed by (topic, partition, offset). So a retry after a lost
//! response, or a replay after a crash, never double-counts. Each insert
//! also carries an `insert_deduplication_token` (see [`super::insert_token`])
//! so that a re-sent batch is dropped by ClickHouse instead of written twice.

use clickhouse::{Client, Row};
use serde::Serialize;

use crate::config::ClickHouseConfig;
use crate::engine::Batch;
use crate::io::clickhouse::retry::{self, Boundary, ClickHouseError, Target};
use crate::io::clickhouse::{insert_token, schema_cluster};

/// One row of `ad_source_partitions`.
#[derive(Row, Serialize)]
struct SourcePartitionRow<'a> {
    topic: &'a str,
    partition: i32,
}

#[derive(Row, Serialize)]
struct PartRow<'a> {
    rollup_name: &'a str,
    window_start: i64,
    window_end: i64,
    campaign_id: &'a str,
    ad_format: &'a str,
    country: &'a str,
    device: &'a str,
    topic: &'a str,
    partition: i32,
    impressions: u64,
    clicks: u64,
    revenue: i64,
    version: u64,
    is_final: bool,
}

#[derive(Row, Serialize)]
struct LateRow<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    event_id: &'a str,
    event_time: i64,
    window_start: i64,
    campaign_id: &'a str,
    ad_format: &'a str,
    country: &'a str,
    device: &'a str,
    event_type: &'a str,
    revenue: i64,
    watermark: i64,
    reason: &'a str,
}

#[derive(Row, Serialize)]
struct RejectedRow<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    reason: &'a str,
    detail: &'a str,
    #[serde(with = "serde_bytes")]
    raw: &'a [u8],
    raw_size: u64,
}

/// A client for `config` (validated at the edge), not bound to a database.
///
/// Its HTTP connections are the `clickhouse` crate's defaults (TCP
/// keepalive 60 s, idle connections dropped after 2 s, under ClickHouse's
/// own 3 s keep-alive timeout) plus `TCP_NODELAY`: without it a request
/// whose body goes out in a second segment waits for the server's delayed
/// ACK (Nagle), about 40 ms on Linux, which the serving bench saw on the
/// learner's small inserts. Plus the connect and request timeouts of
/// [`super::timeout`].
///
/// `https://` URLs go through TLS ([`tls_connector`]: the system's OpenSSL,
/// as librdkafka's); `http://` stays plaintext. Fails only on unreadable or
/// invalid `--clickhouse-ca-file`/`-cert-file`/`-key-file`, with one line
/// naming the flag.
pub fn client(config: &ClickHouseConfig) -> anyhow::Result<Client> {
    use hyper_util::client::legacy::{connect::HttpConnector, Client as HttpClient};
    let mut connector = HttpConnector::new();
    connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.enforce_http(false);
    let connector = super::timeout::TimeoutConnector::new(connector, config.request_timeout);
    let mut builder = HttpClient::builder(hyper_util::rt::TokioExecutor::new());
    builder.pool_idle_timeout(std::time::Duration::from_secs(2));
    // A TLS connector loads the system's CA bundle (OpenSSL 3 took 0.18 CPU
    // s per connector here, 0.37 s of each `run`'s start-up with two
    // clients): only made for `https://` or when a TLS file is given (so a
    // bad file is still refused).
    let c = if is_https(config.url.expose()) || !config.tls.is_empty() {
        let tls = tls_connector(&config.tls)?;
        let https = hyper_tls::HttpsConnector::from((connector, tokio_native_tls::TlsConnector::from(tls)));
        Client::with_http_client(builder.build(https))
    } else {
        Client::with_http_client(builder.build(connector))
    };
    let mut c = c.with_url(config.url.expose()).with_user(&config.user);
    if let Some(p) = &config.password {
        c = c.with_password(p.expose());
    }
    Ok(c)
}

/// Whether `url` is an `https://` URL (scheme case-insensitive, leading
/// blanks ignored): the one test of whether ClickHouse is reached over TLS.
pub fn is_https(url: &str) -> bool {
    url.trim_start().get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The TLS settings of ClickHouse's `https://` connections: the CA of
/// `--clickhouse-ca-file` added to the system's roots, and the client
/// certificate of `--clickhouse-cert-file`/`--clickhouse-key-file` (PEM,
/// the key PKCS#8) for mutual TLS. Hostname verification is always on.
pub fn tls_connector(tls: &crate::config::TlsFiles) -> anyhow::Result<native_tls::TlsConnector> {
    crate::io::tls::connector(tls, "--clickhouse", "ADSTREAM_CLICKHOUSE")
}

pub struct ClickHouseSink {
    client: Client,
    topic: String,
    database: String,
    config: ClickHouseConfig,
    /// On a cluster: inserts go through `Distributed` tables, synchronously
    /// (acknowledged once the shards have the rows, not when they are
    /// queued on the receiving node's disk).
    cluster: bool,
}

impl ClickHouseSink {
    /// Applies the schema (the cluster rendering with `cluster`) and returns
    /// a sink bound to `config.database`.
    pub async fn connect(config: &ClickHouseConfig, cluster: Option<&str>, topic: &str) -> anyhow::Result<Self> {
        let base = client(config)?;
        schema_cluster::migrate(&base, config, cluster).await.map_err(|e| retry::schema_error(e, config))?;
        Ok(ClickHouseSink {
            client: base.with_database(&config.database),
            topic: topic.to_string(),
            database: config.database.clone(),
            config: config.clone(),
            cluster: cluster.is_some(),
        })
    }

    /// Registers `partitions` of the topic in `ad_source_partitions` (the
    /// learner's "every partition"), before any row of theirs is written.
    pub async fn register_partitions(&self, partitions: &[i32]) -> Result<(), ClickHouseError> {
        if partitions.is_empty() {
            return Ok(());
        }
        let target = self.table("ad_source_partitions");
        let at = Boundary::new(&target, &self.config);
        let token = format!("source-partitions:{}:{partitions:?}", self.topic);
        let mut ins =
            self.insert::<SourcePartitionRow<'_>>("ad_source_partitions", token).await.map_err(|e| at.error(e))?;
        for &partition in partitions {
            ins.write(&SourcePartitionRow { topic: &self.topic, partition }).await.map_err(|e| at.error(e))?;
        }
        ins.end().await.map_err(at.step("registering the source partitions"))
    }

    /// `database.table`, as a [`Target`].
    fn table(&self, table: &str) -> Target {
        Target::Table(format!("{}.{table}", self.database))
    }

    /// An insert into `table` carrying `token`.
    async fn insert<T: Row>(
        &self,
        table: &str,
        token: String,
    ) -> clickhouse::error::Result<clickhouse::insert::Insert<T>> {
        let mut ins = self.client.insert::<T>(table).await?.with_setting("insert_deduplication_token", token);
        if self.cluster {
            // The older name, which newer servers keep as an alias of
            // distributed_foreground_insert.
            ins = ins.with_setting("insert_distributed_sync", "1");
        }
        Ok(ins)
    }

    /// Writes the batch. A refusal that retrying cannot cure comes back as
    /// a [`ClickHouseError::Permanent`] naming the table and the fix.
    pub async fn write(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        self.write_parts(batch).await?;
        self.write_late(batch).await?;
        self.write_rejected(batch).await
    }

    async fn write_parts(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        if !batch.rows.is_empty() {
            let target = self.table("ad_window_parts");
            let at = Boundary::new(&target, &self.config);
            let mut ins = self
                .insert::<PartRow<'_>>("ad_window_parts", insert_token::window_rows(&self.topic, batch))
                .await
                .map_err(|e| at.error(e))?;
            for r in &batch.rows {
                ins.write(&PartRow {
                    rollup_name: batch.rollup_name(r),
                    window_start: r.row.window_start_us / 1000,
                    window_end: r.row.window_end_us / 1000,
                    campaign_id: batch.campaign(r),
                    ad_format: r.row.key.ad_format.map_or("", |f| f.as_str()),
                    country: r.row.key.country.map_or("", |c| c.as_str()),
                    device: r.row.key.device.map_or("", |d| d.as_str()),
                    topic: &self.topic,
                    partition: r.partition,
                    impressions: r.row.totals.impressions,
                    clicks: r.row.totals.clicks,
                    revenue: r.row.totals.revenue_micros,
                    version: r.row.version,
                    is_final: r.row.is_final,
                })
                .await
                .map_err(|e| at.error(e))?;
            }
            ins.end().await.map_err(at.step("inserting window rows"))?;
        }
        Ok(())
    }

    async fn write_late(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        if !batch.late.is_empty() {
            let target = self.table("ad_late_events_log");
            let at = Boundary::new(&target, &self.config);
            let mut ins = self
                .insert::<LateRow<'_>>("ad_late_events_log", insert_token::late(&self.topic, &batch.late))
                .await
                .map_err(|e| at.error(e))?;
            for l in &batch.late {
                ins.write(&LateRow {
                    topic: &self.topic,
                    partition: l.partition,
                    offset: l.offset,
                    event_id: &l.event_id,
                    event_time: l.event_time_us,
                    window_start: l.window_start_us / 1000,
                    campaign_id: &l.campaign,
                    ad_format: l.ad_format.as_str(),
                    country: l.country.as_str(),
                    device: l.device.as_str(),
                    event_type: l.event_type.as_str(),
                    revenue: l.revenue_micros,
                    watermark: l.watermark_us,
                    reason: l.reason,
                })
                .await
                .map_err(|e| at.error(e))?;
            }
            ins.end().await.map_err(at.step("inserting late events"))?;
        }
        Ok(())
    }

    async fn write_rejected(&self, batch: &Batch) -> Result<(), ClickHouseError> {
        if !batch.rejected.is_empty() {
            let target = self.table("ad_rejected_events_log");
            let at = Boundary::new(&target, &self.config);
            let mut ins = self
                .insert::<RejectedRow<'_>>(
                    "ad_rejected_events_log",
                    insert_token::rejected(&self.topic, &batch.rejected),
                )
                .await
                .map_err(|e| at.error(e))?;
            for r in &batch.rejected {
                ins.write(&RejectedRow {
                    topic: &self.topic,
                    partition: r.partition,
                    offset: r.offset,
                    reason: r.reason.as_str(),
                    detail: &r.detail,
                    raw: r.raw_prefix(),
                    raw_size: r.raw.len() as u64,
                })
                .await
                .map_err(|e| at.error(e))?;
            }
            ins.end().await.map_err(at.step("inserting rejected messages"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::is_https;

    #[test]
    fn https_is_told_by_the_scheme_in_any_case() {
        for yes in ["https://h:8443", "HTTPS://h", "  https://h", "hTTps://"] {
            assert!(is_https(yes), "{yes}");
        }
        for no in ["http://h:8123", "h:8443", "", "https:/h", "ftp://https://", "é"] {
            assert!(!is_https(no), "{no}");
        }
    }
}
