//! Plain configuration, converted once from the command line
//! (`cli::convert`, where everything is validated and secrets are resolved)
//! and handed to the I/O code: no clap type travels past the edge.

pub mod secret;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::engine::{Rollup, WindowConfig};
use crate::generator::{GeneratorConfig, Traffic};
use secret::{redact_url, Secret};

/// How to reach Kafka.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    pub security_protocol: Option<String>,
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// Resolved from the flag, the environment or the password file.
    pub sasl_password: Option<Secret>,
    /// Extra librdkafka settings (`--kafka-option key=value`).
    pub options: Vec<KafkaOption>,
    pub connect_timeout: Duration,
    /// `--kafka-ssl-*`: CA, client certificate and key (checked readable).
    pub tls: TlsFiles,
    /// `ssl.key.password`, for an encrypted client key.
    pub ssl_key_password: Option<Secret>,
    /// `ssl.endpoint.identification.algorithm`: `https` (true) or `none`.
    pub ssl_verify_hostname: bool,
}

/// One `--kafka-option key=value`: the key printable, the value perhaps a
/// secret (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.config`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOption {
    pub key: String,
    pub value: Secret,
}

/// PEM files of one TLS connection: the CA that signed the server's
/// certificate (unset: the system's trust store) and an optional client
/// certificate with its key (mutual TLS). Paths only, checked readable at
/// the edge; the clients read them when they connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }
}

/// How `learn` and `predict` authenticate to Redis, beside the URL: TLS
/// files (with `rediss://`), and an ACL user and password that override
/// any in the URL.
#[derive(Debug, Clone, Default)]
pub struct RedisAuth {
    pub tls: TlsFiles,
    pub user: Option<String>,
    pub password: Option<Secret>,
}

/// How to reach ClickHouse; the URL and database are validated.
#[derive(Debug, Clone)]
pub struct ClickHouseConfig {
    /// May carry a password in its userinfo: see [`Self::display_url`].
    pub url: Secret,
    pub database: String,
    pub user: String,
    /// Resolved from the flag, the environment or the password file.
    pub password: Option<Secret>,
    /// How long a TCP connect may take (`--clickhouse-connect-timeout`).
    pub connect_timeout: Duration,
    /// How long a request may wait without progress, sending or receiving
    /// (`--clickhouse-request-timeout`).
    pub request_timeout: Duration,
    /// `--clickhouse-ca-file` etc., for an `https://` URL.
    pub tls: TlsFiles,
}

impl ClickHouseConfig {
    /// The endpoint for log lines: any password in it replaced.
    pub fn display_url(&self) -> String {
        redact_url(self.url.expose())
    }
}

/// `run --sink`: where the windows go.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    #[value(name = "clickhouse")]
    ClickHouse,
    Console,
}

/// The in-process generator of `run --self-feed`.
#[derive(Debug, Clone)]
pub struct SelfFeed {
    /// Events per second, 0 = unthrottled.
    pub rate: f64,
    pub count: Option<u64>,
    pub generator: GeneratorConfig,
    /// `--traffic` and `--campaigns`.
    pub traffic: Traffic,
}

/// `adstream run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub kafka: KafkaConfig,
    pub group: String,
    pub clickhouse: ClickHouseConfig,
    /// A ClickHouse cluster to create the schema on (`--cluster`).
    pub cluster: Option<String>,
    pub window: WindowConfig,
    /// What to aggregate (`--rollup`), each a multiple of `window`.
    pub rollups: Vec<Rollup>,
    pub sink: SinkKind,
    pub self_feed: Option<SelfFeed>,
    pub drain: bool,
    pub flush_interval: Duration,
    pub max_event_bytes: usize,
    pub idle_timeout: Duration,
    pub stats_interval: Duration,
    /// Empty: no dead-letter topic.
    pub dlq_topic: String,
    /// `None`: no metrics server.
    pub metrics_addr: Option<SocketAddr>,
    pub unhealthy_after: Duration,
}

/// `adstream learn`.
#[derive(Debug, Clone)]
pub struct LearnConfig {
    pub clickhouse: ClickHouseConfig,
    /// Validated `redis://` URL (may carry a password: never logged).
    pub redis_url: Secret,
    /// TLS files, ACL user and password of Redis.
    pub redis_auth: RedisAuth,
    pub model: String,
    pub params: crate::learn::Params,
    pub poll_interval: Duration,
    pub idle_after: Duration,
    pub revise_horizon: Duration,
    pub serve_segments_seen: Duration,
    pub redis_ttl: Duration,
    /// Connect and command timeout (`--redis-timeout`).
    pub redis_timeout: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub unhealthy_after: Duration,
    /// `/healthz` is 503 past this lag behind the frontier.
    pub max_lag: Duration,
    /// Prefix of the Redis keys (`--redis-prefix`, or database and model).
    pub redis_prefix: String,
    /// The writer's lease in Redis.
    pub lease_ttl: Duration,
    /// Snapshot versions kept in `ad_ctr_model`.
    pub keep_snapshots: u64,
    pub once: bool,
}

/// `adstream predict`.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    /// May carry a password, as [`LearnConfig::redis_url`].
    pub redis_url: Secret,
    pub redis_timeout: Duration,
    /// TLS files, ACL user and password of Redis.
    pub redis_auth: RedisAuth,
    pub model: String,
    pub redis_prefix: String,
    pub campaign: String,
    pub ad_format: String,
    pub country: String,
    pub device: String,
    pub max_age: Duration,
}

/// `adstream demo`.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub rate: f64,
    pub duration: Duration,
    pub count: Option<u64>,
    pub generator: GeneratorConfig,
    /// `--traffic` and `--campaigns`.
    pub traffic: Traffic,
    pub window: WindowConfig,
    pub rollups: Vec<Rollup>,
}

/// `adstream generate`.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    pub kafka: KafkaConfig,
    pub rate: f64,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub generator: GeneratorConfig,
    /// `--traffic` and `--campaigns`.
    pub traffic: Traffic,
    pub out_jsonl: Option<PathBuf>,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Print the model's truth as JSON and exit, without Kafka.
    pub print_truth: bool,
}

/// `adstream migrate`.
#[derive(Debug, Clone)]
pub struct MigrateConfig {
    pub clickhouse: ClickHouseConfig,
    pub cluster: Option<String>,
    /// Print the statements instead of running them.
    pub print: bool,
}

/// `adstream report`.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    pub clickhouse: ClickHouseConfig,
    /// The window size to report; `None`: the latest one written.
    pub window: Option<Duration>,
    pub last: u32,
    pub campaign: Option<String>,
    pub ad_format: Option<String>,
    /// What one line is (`--by`).
    pub by: ReportBy,
}

/// `report --by`: the group of one line. Every grouping other than
/// campaign × format is read from the segment rollup
/// (`campaign_id,ad_format,country,device:<size>`) and summed in SQL.
/// (The variants' notes are plain comments: clap would print doc comments
/// in `--help` as the values' descriptions.)
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReportBy {
    // Window × campaign × format, from `ad_metrics` (the default).
    #[default]
    CampaignFormat,
    // Window × country, summed over campaigns, formats and devices.
    Country,
    // Window × device, summed over campaigns, formats and countries.
    Device,
    // Window × campaign × format × country × device.
    Segment,
}
