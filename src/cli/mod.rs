//! Command-line interface. Every flag can also be set through the
//! environment as `ADSTREAM_<FLAG>` (e.g. `--clickhouse-url` ↔
//! `ADSTREAM_CLICKHOUSE_URL`); a flag on the command line wins.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::secret::{redact_url, Secret};
use crate::config::{ReportBy, SinkKind};

mod app;
mod convert;
pub(crate) mod exit;
mod file;

pub use app::main;

#[derive(Parser, Debug)]
#[command(
    name = "adstream",
    version,
    about = "Real-time ad analytics: Kafka ad events → 10-second CTR/eCPM windows → ClickHouse",
    after_help = crate::cli::exit::TOP
)]
pub struct Cli {
    /// Settings file (TOML; keys are flag names, e.g. `brokers = "k1:9092"`,
    /// optionally under a `[run]`/`[generate]`/... table). Precedence:
    /// flags > ADSTREAM_* environment > this file > defaults. See
    /// adstream.example.toml.
    #[arg(long, global = true, env = "ADSTREAM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr: `text` (human-readable) or `json` (one object
    /// per line, for log shippers). Filter with ADSTREAM_LOG (e.g. debug).
    #[arg(long, global = true, env = "ADSTREAM_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Produce synthetic ad events into Kafka.
    #[command(after_help = crate::cli::exit::GENERATE)]
    Generate(GenerateArgs),
    /// Consume ad events, aggregate 10-second windows, write them to ClickHouse.
    #[command(after_help = crate::cli::exit::RUN)]
    Run(RunArgs),
    /// The embedded default: in-process generator → windows → console. No Kafka, no ClickHouse.
    #[command(after_help = crate::cli::exit::DEMO)]
    Demo(DemoArgs),
    /// Apply the ClickHouse schema (sql/*.sql, embedded in the binary) idempotently.
    #[command(after_help = crate::cli::exit::CLICKHOUSE)]
    Migrate(MigrateArgs),
    /// Print the latest windows from ClickHouse (ad_metrics, at the window
    /// size last written; per country, device or segment with --by) as
    /// console lines, to check the pipeline without a dashboard.
    #[command(after_help = crate::cli::exit::CLICKHOUSE)]
    Report(ReportArgs),
    /// Learn a CTR model online (FTRL-Proximal) from the closed segment
    /// windows in ClickHouse, each counted event exactly once; write its
    /// quality and predictions to ClickHouse and serve them from Redis and
    /// GET /ctr.
    #[command(after_help = crate::cli::exit::LEARN)]
    Learn(LearnArgs),
    /// Print the predicted CTR of one segment, as `learn` cached it in Redis.
    #[command(after_help = crate::cli::exit::PREDICT)]
    Predict(PredictArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 250ms, 1m)"))
}

/// Secrets are [`Secret`]s: the derived `Debug` prints none of them.
#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ADSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic holding the ad events.
    #[arg(long, env = "ADSTREAM_TOPIC", default_value = "ad-events")]
    pub topic: String,
    /// Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(long, env = "ADSTREAM_KAFKA_SECURITY_PROTOCOL")]
    pub kafka_security_protocol: Option<String>,
    /// Kafka sasl.mechanism, e.g. PLAIN, SCRAM-SHA-256, SCRAM-SHA-512.
    #[arg(long, env = "ADSTREAM_KAFKA_SASL_MECHANISM")]
    pub kafka_sasl_mechanism: Option<String>,
    /// Kafka sasl.username.
    #[arg(long, env = "ADSTREAM_KAFKA_SASL_USERNAME", hide_env_values = true)]
    pub kafka_sasl_username: Option<String>,
    /// Kafka sasl.password. Set it through the environment or
    /// --kafka-sasl-password-file, not on the command line (visible in ps).
    #[arg(long, env = "ADSTREAM_KAFKA_SASL_PASSWORD", hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// File holding the Kafka sasl.password (e.g. a mounted secret).
    #[arg(long, env = "ADSTREAM_KAFKA_SASL_PASSWORD_FILE", hide_env_values = true)]
    pub kafka_sasl_password_file: Option<PathBuf>,
    /// Extra librdkafka setting as key=value, one per flag (repeat the
    /// flag), e.g. ssl.ca.location=/etc/ca.pem or debug=consumer,cgrp.
    /// In ADSTREAM_KAFKA_OPTIONS, one per line. Values are never printed.
    #[arg(long = "kafka-option", env = "ADSTREAM_KAFKA_OPTIONS", hide_env_values = true)]
    pub kafka_options: Vec<Secret>,
    /// How long to wait at start for the brokers to answer before giving up
    /// with an error.
    #[arg(long, env = "ADSTREAM_CONNECT_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// PEM file of the CA that signed the brokers' certificates
    /// (ssl.ca.location); unset: the system's trust store. With
    /// --kafka-security-protocol ssl or sasl_ssl.
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_CA_FILE", value_name = "PEM")]
    pub kafka_ssl_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS
    /// (ssl.certificate.location); needs --kafka-ssl-key-file.
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_CERT_FILE", value_name = "PEM")]
    pub kafka_ssl_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (ssl.key.location).
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_KEY_FILE", value_name = "PEM", hide_env_values = true)]
    pub kafka_ssl_key_file: Option<PathBuf>,
    /// Password of an encrypted --kafka-ssl-key-file (ssl.key.password).
    /// Set it through the environment or --kafka-ssl-key-password-file.
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_KEY_PASSWORD", hide_env_values = true)]
    pub kafka_ssl_key_password: Option<Secret>,
    /// File holding the password of an encrypted --kafka-ssl-key-file.
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_KEY_PASSWORD_FILE", hide_env_values = true)]
    pub kafka_ssl_key_password_file: Option<PathBuf>,
    /// Check that the broker's certificate names the host connected to
    /// (ssl.endpoint.identification.algorithm=https). `false` turns the
    /// check off (ssl.endpoint.identification.algorithm=none): only for a
    /// broker whose certificate lacks its address, never across networks.
    #[arg(long, env = "ADSTREAM_KAFKA_SSL_VERIFY_HOSTNAME", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub kafka_ssl_verify_hostname: bool,
}

/// Separates the options in ADSTREAM_KAFKA_OPTIONS (and a settings file's
/// `kafka-option` list): a newline, because librdkafka values use `,`
/// (`debug`, broker lists), `:` (cipher and curve lists) and `;` and spaces
/// (`sasl.kerberos.kinit.cmd`, `sasl.oauthbearer.config`), never a newline.
pub const KAFKA_OPTIONS_SEPARATOR: char = '\n';

impl KafkaArgs {
    /// Every `key=value` given: one per `--kafka-option`, or the lines of
    /// ADSTREAM_KAFKA_OPTIONS (blank lines skipped).
    pub fn options(&self) -> impl Iterator<Item = &str> {
        self.kafka_options
            .iter()
            .flat_map(|o| o.expose().split(KAFKA_OPTIONS_SEPARATOR))
            .map(str::trim)
            .filter(|o| !o.is_empty())
    }

    /// The SASL password from the environment/flag or its file.
    pub fn sasl_password(&self) -> anyhow::Result<Option<Secret>> {
        crate::config::secret::resolve(
            self.kafka_sasl_password.as_ref(),
            self.kafka_sasl_password_file.as_deref(),
            "Kafka SASL password (ADSTREAM_KAFKA_SASL_PASSWORD / --kafka-sasl-password-file)",
        )
    }

    /// The client key's password from the environment/flag or its file.
    pub fn ssl_key_password(&self) -> anyhow::Result<Option<Secret>> {
        crate::config::secret::resolve(
            self.kafka_ssl_key_password.as_ref(),
            self.kafka_ssl_key_password_file.as_deref(),
            "Kafka client key password (ADSTREAM_KAFKA_SSL_KEY_PASSWORD / --kafka-ssl-key-password-file)",
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123", hide_env_values = true)]
    pub clickhouse_url: Secret,
    /// Database that holds adstream's tables and views.
    #[arg(long, env = "ADSTREAM_DATABASE", default_value = "adtech")]
    pub database: String,
    /// ClickHouse user.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password. Set it through the environment or
    /// --clickhouse-password-file, not on the command line (visible in ps).
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<Secret>,
    /// File holding the ClickHouse password (e.g. a mounted secret).
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_PASSWORD_FILE", hide_env_values = true)]
    pub clickhouse_password_file: Option<PathBuf>,
    /// How long a TCP connect to ClickHouse may take before the call fails
    /// (and is retried like an outage).
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_CONNECT_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub clickhouse_connect_timeout: Duration,
    /// How long a ClickHouse request may wait without any progress (nothing
    /// sent, nothing received) before it fails and is retried like an
    /// outage: a server that accepts and never answers costs this, not
    /// TCP's ~12 minutes.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_REQUEST_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub clickhouse_request_timeout: Duration,
    /// PEM file of the CA that signed ClickHouse's certificate, for an
    /// https:// URL; unset: the system's trust store.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_CA_FILE", value_name = "PEM")]
    pub clickhouse_ca_file: Option<PathBuf>,
    /// PEM file of a client certificate for ClickHouse (mutual TLS); needs
    /// --clickhouse-key-file.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_CERT_FILE", value_name = "PEM")]
    pub clickhouse_cert_file: Option<PathBuf>,
    /// PEM file (PKCS#8) of the client certificate's key.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_KEY_FILE", value_name = "PEM", hide_env_values = true)]
    pub clickhouse_key_file: Option<PathBuf>,
}

impl ClickHouseArgs {
    /// The password from the environment/flag or its file.
    pub fn password(&self) -> anyhow::Result<Option<Secret>> {
        crate::config::secret::resolve(
            self.clickhouse_password.as_ref(),
            self.clickhouse_password_file.as_deref(),
            "ClickHouse password (ADSTREAM_CLICKHOUSE_PASSWORD / --clickhouse-password-file)",
        )
    }

    /// The endpoint for log lines: any password in it replaced.
    pub fn display_url(&self) -> String {
        redact_url(self.clickhouse_url.expose())
    }

    /// Checks the URL and the database name before anything is sent.
    pub fn validate(&self) -> anyhow::Result<()> {
        let bad = |why: &str| {
            anyhow::anyhow!(
                "--clickhouse-url {}: {why}; expected http://HOST:PORT or https://HOST:PORT (ADSTREAM_CLICKHOUSE_URL)",
                self.display_url()
            )
        };
        let url = url::Url::parse(self.clickhouse_url.expose()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(&format!("scheme {:?} is not http or https", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        crate::io::clickhouse::schema::validate_identifier("database", &self.database)
    }
}

/// `--cluster`, for the commands that apply the schema.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterArgs {
    /// ClickHouse cluster (a name in the servers' remote_servers) to create
    /// the schema on: ON CLUSTER DDL, ReplicatedReplacingMergeTree tables
    /// (*_local, {shard}/{replica} macros) behind Distributed tables of the
    /// single-node names, the same views. Unset: the single-node schema.
    #[arg(long, env = "ADSTREAM_CLUSTER")]
    pub cluster: Option<String>,
}

impl ClusterArgs {
    pub fn name(&self) -> Option<&str> {
        self.cluster.as_deref()
    }
}

#[derive(Args, Debug, Clone)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print the statements it would run, `;`-terminated (a script for
    /// clickhouse-client --multiquery), and exit; nothing is sent.
    #[arg(long, env = "ADSTREAM_PRINT")]
    pub print: bool,
}

/// The traffic model's knobs, shared by `generate`, `demo` and `run --self-feed`.
#[derive(Args, Debug, Clone)]
pub struct TrafficArgs {
    /// Make the run reproducible: same flags, byte-identical events. Event
    /// time is then simulated from --start-time at --event-rate.
    #[arg(long, env = "ADSTREAM_SEED")]
    pub seed: Option<u64>,
    /// First event's time in seeded runs (RFC 3339).
    #[arg(long, env = "ADSTREAM_START_TIME", default_value = "2025-12-10T00:00:00Z")]
    pub start_time: String,
    /// Events per simulated second in seeded runs [default: the send rate, or 1000 when unthrottled].
    #[arg(long, env = "ADSTREAM_EVENT_RATE")]
    pub event_rate: Option<f64>,
    /// Move each event's timestamp back by a random amount up to this.
    #[arg(long, env = "ADSTREAM_JITTER", value_parser = duration, default_value = "0s")]
    pub jitter: Duration,
    /// Traffic model: `seed` (click share by format only, everything else
    /// uniform; byte-identical to earlier releases for a given --seed) or
    /// `segmented` (click probability by format × country × device ×
    /// campaign × UTC hour, with interactions; non-uniform countries and
    /// devices). Tables: docs/traffic.md; `generate --print-truth`
    /// prints them.
    #[arg(long = "traffic", env = "ADSTREAM_TRAFFIC", value_enum, default_value = "seed")]
    pub model: TrafficKind,
    /// Number of campaigns, drawn uniformly: ids C001..CNNN, zero-padded to
    /// at least 3 digits (C0001..C1000 for 1000). Many campaigns make sparse
    /// data with many segments. 1 to 100000.
    #[arg(long, env = "ADSTREAM_CAMPAIGNS", default_value_t = crate::generator::DEFAULT_CAMPAIGNS.into())]
    pub campaigns: u64,
}

/// `--traffic`: which model the generator draws from.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrafficKind {
    Seed,
    Segmented,
}

#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Events per second; 0 = as fast as possible.
    #[arg(long, env = "ADSTREAM_RATE", default_value_t = 100.0)]
    pub rate: f64,
    /// Stop after this many events.
    #[arg(long, env = "ADSTREAM_COUNT")]
    pub count: Option<u64>,
    /// Stop after this long.
    #[arg(long, env = "ADSTREAM_DURATION", value_parser = duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Also write every successfully delivered event, one JSON per line.
    #[arg(long, env = "ADSTREAM_OUT_JSONL")]
    pub out_jsonl: Option<PathBuf>,
    /// Partitions of the topic when it has to be created.
    #[arg(long, env = "ADSTREAM_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,
    /// Replication factor of the topic when it has to be created.
    #[arg(long, env = "ADSTREAM_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,
    /// Print the true model of --traffic over --campaigns as JSON (per
    /// campaign × format × country × device: the click probability per
    /// event and the CTR as clicks per impression for each UTC hour, plus
    /// the traffic shares) and exit; Kafka is not contacted.
    #[arg(long, env = "ADSTREAM_PRINT_TRUTH")]
    pub print_truth: bool,
}

#[derive(Args, Debug, Clone)]
pub struct WindowArgs {
    /// Tumbling window size (aligned to the Unix epoch).
    #[arg(long, env = "ADSTREAM_WINDOW", value_parser = duration, default_value = "10s")]
    pub window: Duration,
    /// How long a window stays open for late events after the watermark
    /// (the newest corroborated event time of its partition) passed its end. Its rows are
    /// emitted when the watermark passes the end, re-emitted when late events
    /// update them, and final once the watermark passes end + this; events
    /// after that go to the late-events table.
    #[arg(long, env = "ADSTREAM_ALLOWED_LATENESS", value_parser = duration, default_value = "5s")]
    pub allowed_lateness: Duration,
    /// Events further than this ahead of their Kafka message timestamp are
    /// rejected (at least 1s).
    #[arg(long, env = "ADSTREAM_MAX_FUTURE", value_parser = duration, default_value = "1h")]
    pub max_future: Duration,
    /// An event further than this ahead of its partition's watermark is
    /// counted but moves the watermark only once three consecutive events
    /// near it corroborate it, so one fast clock does not make on-time
    /// traffic late (at least 1s).
    #[arg(long, env = "ADSTREAM_MAX_AHEAD", value_parser = duration, default_value = "60s")]
    pub max_ahead: Duration,
    /// A rollup to aggregate, repeatable: `DIMENSIONS[:WINDOW]`, the
    /// dimensions a comma list of campaign_id, ad_format, country, device
    /// (or `total`), the window a multiple of --window (default: --window).
    /// Its rows go to ad_window_parts as rollup `DIMENSIONS:WINDOW`, shown by
    /// the view ad_rollup_metrics (column rollup_name). Default: campaign_id,ad_format and
    /// campaign_id,ad_format,country,device at --window, campaign_id,ad_format
    /// at 1m and 1h, campaign_id,ad_format,country,device at 1h (the views
    /// ad_metrics_10s, _segments_10s, _1m, _1h, _segments_1h). In
    /// ADSTREAM_ROLLUPS, separated by `;` or newlines.
    #[arg(long = "rollup", env = "ADSTREAM_ROLLUPS", value_name = "DIMENSIONS[:WINDOW]")]
    pub rollup: Vec<String>,
}

/// Separate the rollups in ADSTREAM_ROLLUPS (values contain commas).
pub const ROLLUPS_SEPARATORS: [char; 2] = [';', '\n'];

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group.
    #[arg(long, env = "ADSTREAM_GROUP", default_value = "adstream")]
    pub group: String,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Where windows go.
    #[arg(long, env = "ADSTREAM_SINK", value_enum, default_value = "clickhouse")]
    pub sink: SinkKind,
    /// Also run the generator in this process at this rate (events/s, 0 =
    /// unthrottled), producing to the topic this process consumes.
    #[arg(long, env = "ADSTREAM_SELF_FEED")]
    pub self_feed: Option<f64>,
    /// Stop the self-feed generator after this many events.
    #[arg(long, env = "ADSTREAM_SELF_FEED_COUNT")]
    pub self_feed_count: Option<u64>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    /// Exit once every assigned partition is read to its end (and the
    /// self-feed, if any, is done), emitting all open windows first. For
    /// backfills and tests.
    #[arg(long, env = "ADSTREAM_DRAIN")]
    pub drain: bool,
    /// Longest time results wait in memory before being written as a batch.
    #[arg(long, env = "ADSTREAM_FLUSH_INTERVAL", value_parser = duration, default_value = "250ms")]
    pub flush_interval: Duration,
    /// Messages larger than this are rejected unparsed.
    #[arg(long, env = "ADSTREAM_MAX_EVENT_BYTES", default_value_t = crate::engine::DEFAULT_MAX_EVENT_BYTES)]
    pub max_event_bytes: usize,
    /// A partition that received nothing for this long (wall clock) emits
    /// its open windows as they stand instead of waiting for the next event
    /// to move its watermark; later events still update them within the
    /// allowed lateness.
    #[arg(long, env = "ADSTREAM_IDLE_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub idle_timeout: Duration,
    /// How often to log a stats line.
    #[arg(long, env = "ADSTREAM_STATS_INTERVAL", value_parser = duration, default_value = "10s")]
    pub stats_interval: Duration,
    /// Dead-letter topic: every rejected message is forwarded here, original
    /// bytes and key, with the reason and source position in headers,
    /// before its offset is committed. Empty disables it.
    #[arg(long, env = "ADSTREAM_DLQ_TOPIC", default_value = "ad-events-dlq")]
    pub dlq_topic: String,
    /// Serve GET /metrics (Prometheus) and GET /healthz here, as IP:PORT
    /// (0.0.0.0:9464 for all interfaces, port 0 for any free port); `off`
    /// disables the endpoint.
    #[arg(long, env = "ADSTREAM_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: ListenAddr,
    /// /healthz answers 503 once Kafka or ClickHouse has been failing for
    /// this long (200 before).
    #[arg(long, env = "ADSTREAM_UNHEALTHY_AFTER", value_parser = duration, default_value = "30s")]
    pub unhealthy_after: Duration,
}

/// `--metrics-addr`: a socket address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<std::net::SocketAddr>);

impl std::str::FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "false" | "" => Ok(ListenAddr(None)),
            a => a
                .parse()
                .map(|a| ListenAddr(Some(a)))
                .map_err(|_| "expected IP:PORT (e.g. 127.0.0.1:9464, 0.0.0.0:9464) or off".to_string()),
        }
    }
}

/// Where `learn` publishes and `predict` reads.
#[derive(Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis holding the served predictions (redis://HOST:PORT[/DB];
    /// rediss:// for TLS). Only a cache: the model lives in ClickHouse.
    #[arg(long, env = "ADSTREAM_REDIS_URL", default_value = "redis://127.0.0.1:6379", hide_env_values = true)]
    pub redis_url: Secret,
    /// The model's name: its rows in ClickHouse (`model` column) and its
    /// Redis keys (`adstream:<database>:<model>:...`). Letters, digits,
    /// `_`, `-`.
    #[arg(long, env = "ADSTREAM_MODEL", default_value = "ctr")]
    pub model: String,
    /// How long a Redis connect or command may take before it fails (a
    /// publish that fails is reported and redone by the next one).
    #[arg(long, env = "ADSTREAM_REDIS_TIMEOUT", value_parser = duration, default_value = "2s")]
    pub redis_timeout: Duration,
    /// Prefix of the model's Redis keys; by default
    /// `adstream:<database>:<model>`, so models of two databases never
    /// share a key.
    #[arg(long, env = "ADSTREAM_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// PEM file of the CA that signed Redis's certificate, for a rediss://
    /// URL; unset: the system's trust store.
    #[arg(long, env = "ADSTREAM_REDIS_CA_FILE", value_name = "PEM")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM file of a client certificate for Redis (tls-auth-clients);
    /// needs --redis-key-file.
    #[arg(long, env = "ADSTREAM_REDIS_CERT_FILE", value_name = "PEM")]
    pub redis_cert_file: Option<PathBuf>,
    /// PEM file (PKCS#8) of the client certificate's key.
    #[arg(long, env = "ADSTREAM_REDIS_KEY_FILE", value_name = "PEM", hide_env_values = true)]
    pub redis_key_file: Option<PathBuf>,
    /// Redis ACL user (AUTH user password); overrides one in the URL.
    #[arg(long, env = "ADSTREAM_REDIS_USER", hide_env_values = true)]
    pub redis_user: Option<String>,
    /// Redis password; overrides one in the URL. Set it through the
    /// environment or --redis-password-file, not on the command line.
    #[arg(long, env = "ADSTREAM_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,
    /// File holding the Redis password (e.g. a mounted secret).
    #[arg(long, env = "ADSTREAM_REDIS_PASSWORD_FILE", hide_env_values = true)]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The password from the environment/flag or its file.
    pub fn password(&self) -> anyhow::Result<Option<Secret>> {
        crate::config::secret::resolve(
            self.redis_password.as_ref(),
            self.redis_password_file.as_deref(),
            "Redis password (ADSTREAM_REDIS_PASSWORD / --redis-password-file)",
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct LearnArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// FTRL-Proximal α (per-coordinate learning rate scale; VW --ftrl_alpha).
    #[arg(long, env = "ADSTREAM_FTRL_ALPHA", default_value_t = 0.1)]
    pub ftrl_alpha: f64,
    /// FTRL-Proximal β (VW --ftrl_beta).
    #[arg(long, env = "ADSTREAM_FTRL_BETA", default_value_t = 1.0)]
    pub ftrl_beta: f64,
    /// L1 regularization λ1 (VW --l1 is per example; this is the paper's λ1).
    #[arg(long, env = "ADSTREAM_L1", default_value_t = 1.0)]
    pub l1: f64,
    /// L2 regularization λ2.
    #[arg(long, env = "ADSTREAM_L2", default_value_t = 1.0)]
    pub l2: f64,
    /// Hash bits: the model has 2^bits weights (VW -b). 1 to 24.
    #[arg(long, env = "ADSTREAM_BITS", default_value_t = 20)]
    pub bits: u8,
    /// How often to look for newly closed windows.
    #[arg(long, env = "ADSTREAM_POLL_INTERVAL", value_parser = duration, default_value = "1s")]
    pub poll_interval: Duration,
    /// A source partition that wrote nothing for this long is idle: it no
    /// longer holds learning back (Flink's withIdleness). What it writes
    /// later into learned windows is learned as the difference.
    #[arg(long, env = "ADSTREAM_IDLE_AFTER", value_parser = duration, default_value = "30s")]
    pub idle_after: Duration,
    /// How long a learned window stays open to such differences while a
    /// partition has not closed it; older ones are let go (counted in
    /// adstream_learn_windows_abandoned_total).
    #[arg(long, env = "ADSTREAM_REVISE_HORIZON", value_parser = duration, default_value = "1h")]
    pub revise_horizon: Duration,
    /// Predictions are published for every segment seen within this much
    /// event time before the newest learned window.
    #[arg(long, env = "ADSTREAM_SERVE_SEGMENTS_SEEN", value_parser = duration, default_value = "1h")]
    pub serve_segments_seen: Duration,
    /// TTL of every published Redis key.
    #[arg(long, env = "ADSTREAM_REDIS_TTL", value_parser = duration, default_value = "1h")]
    pub redis_ttl: Duration,
    /// Serve GET /ctr, /metrics and /healthz here (IP:PORT, or `off`).
    #[arg(long, env = "ADSTREAM_METRICS_ADDR", default_value = "127.0.0.1:9465")]
    pub metrics_addr: ListenAddr,
    /// /healthz answers 503 once ClickHouse or Redis has been failing for
    /// this long (200 before, naming what fails).
    #[arg(long, env = "ADSTREAM_UNHEALTHY_AFTER", value_parser = duration, default_value = "30s")]
    pub unhealthy_after: Duration,
    /// /healthz answers 503 while the learner is more than this much event
    /// time behind the frontier, the newest window closed on every active
    /// partition (adstream_learn_frontier_lag_seconds).
    #[arg(long, env = "ADSTREAM_MAX_LAG", value_parser = duration, default_value = "15m")]
    pub max_lag: Duration,
    /// One learner per model writes: it holds a lease in Redis, renewed
    /// every poll; another one waits as a hot standby and takes over at
    /// most this long after the holder died.
    #[arg(long, env = "ADSTREAM_LEASE_TTL", value_parser = duration, default_value = "10s")]
    pub lease_ttl: Duration,
    /// Snapshot versions kept in ad_ctr_model (older ones are deleted;
    /// restore reads the newest).
    #[arg(long, env = "ADSTREAM_KEEP_SNAPSHOTS", default_value_t = 100)]
    pub keep_snapshots: u64,
    /// Learn what is learnable now, publish, save the model, and exit.
    #[arg(long, env = "ADSTREAM_ONCE")]
    pub once: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// The database `learn` learns from (part of the Redis key prefix).
    #[arg(long, env = "ADSTREAM_DATABASE", default_value = "adtech")]
    pub database: String,
    /// Campaign, e.g. C001.
    #[arg(long, env = "ADSTREAM_CAMPAIGN")]
    pub campaign: String,
    /// Ad format.
    #[arg(long = "format", env = "ADSTREAM_FORMAT", value_parser = ["banner", "interstitial", "rewarded_video"])]
    pub ad_format: String,
    /// Country (US KR JP UK DE FR CA).
    #[arg(long, env = "ADSTREAM_COUNTRY", value_parser = ["US", "KR", "JP", "UK", "DE", "FR", "CA"])]
    pub country: String,
    /// Device (iOS, Android).
    #[arg(long, env = "ADSTREAM_DEVICE", value_parser = ["iOS", "Android"])]
    pub device: String,
    /// Refuse a prediction published longer ago than this (exit code 4).
    #[arg(long, env = "ADSTREAM_MAX_AGE", value_parser = duration, default_value = "5m")]
    pub max_age: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// How many of the latest windows to print (each window prints one line
    /// per campaign and format).
    #[arg(long, env = "ADSTREAM_LAST", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub last: u32,
    /// Only this campaign (e.g. C001).
    #[arg(long, env = "ADSTREAM_CAMPAIGN")]
    pub campaign: Option<String>,
    /// Only this ad format.
    #[arg(long = "format", env = "ADSTREAM_FORMAT", value_parser = ["banner", "interstitial", "rewarded_video"])]
    pub ad_format: Option<String>,
    /// Window size to report (as `run --window`); default: the size of the
    /// latest window written.
    #[arg(long, env = "ADSTREAM_WINDOW", value_parser = duration)]
    pub window: Option<Duration>,
    /// What one line is: campaign-format (window x campaign x format, from
    /// ad_metrics), or country, device, segment (window x campaign x format
    /// x country x device), read from the segment rollup
    /// `campaign_id,ad_format,country,device:<window>` and summed exactly.
    /// --campaign and --format still filter.
    #[arg(long, env = "ADSTREAM_REPORT_BY", value_enum, default_value = "campaign-format")]
    pub by: ReportBy,
}

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Events per second; 0 = as fast as possible.
    #[arg(long, env = "ADSTREAM_RATE", default_value_t = 2000.0)]
    pub rate: f64,
    /// How long to run.
    #[arg(long, env = "ADSTREAM_DURATION", value_parser = duration, default_value = "35s")]
    pub duration: Duration,
    /// Stop after this many events instead (or earlier).
    #[arg(long, env = "ADSTREAM_COUNT")]
    pub count: Option<u64>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub window: WindowArgs,
}

#[cfg(test)]
mod tests;
