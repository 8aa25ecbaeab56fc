//! Command-line interface. Every flag can also be set through the
//! environment as `ADSTREAM_<FLAG>` (e.g. `--clickhouse-url` ↔
//! `ADSTREAM_CLICKHOUSE_URL`); a flag on the command line wins.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "adstream",
    version,
    about = "Real-time ad analytics: Kafka ad events → 10-second CTR/eCPM windows → ClickHouse"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Produce synthetic ad events into Kafka.
    Generate(GenerateArgs),
    /// Consume ad events, aggregate 10-second windows, write them to ClickHouse.
    Run(RunArgs),
    /// The embedded default: in-process generator → windows → console. No Kafka, no ClickHouse.
    Demo(DemoArgs),
    /// Apply the ClickHouse schema (sql/*.sql, embedded in the binary) idempotently.
    Migrate(ClickHouseArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 10s, 250ms, 1m)"))
}

#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "ADSTREAM_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic holding the ad events.
    #[arg(long, env = "ADSTREAM_TOPIC", default_value = "ad-events")]
    pub topic: String,
    /// Extra librdkafka setting as key=value (repeatable), e.g.
    /// security.protocol=SASL_SSL. Secrets belong in the environment:
    /// ADSTREAM_KAFKA_OPTIONS="sasl.username=u,sasl.password=p".
    #[arg(long = "kafka-option", env = "ADSTREAM_KAFKA_OPTIONS", value_delimiter = ',', hide_env_values = true)]
    pub kafka_options: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP endpoint.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123")]
    pub clickhouse_url: String,
    /// Database that holds adstream's tables and views.
    #[arg(long, env = "ADSTREAM_DATABASE", default_value = "adtech")]
    pub database: String,
    /// ClickHouse user.
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    /// ClickHouse password; prefer the environment variable (never logged).
    #[arg(long, env = "ADSTREAM_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,
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
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    Clickhouse,
    Console,
}

#[derive(Args, Debug, Clone)]
pub struct WindowArgs {
    /// Tumbling window size (aligned to the Unix epoch).
    #[arg(long, env = "ADSTREAM_WINDOW", value_parser = duration, default_value = "10s")]
    pub window: Duration,
    /// How long a window stays open for late events after the watermark
    /// (the newest event time of its partition) passed its end. Its rows are
    /// emitted when the watermark passes the end, re-emitted when late events
    /// update them, and final once the watermark passes end + this; events
    /// after that go to the late-events table.
    #[arg(long, env = "ADSTREAM_ALLOWED_LATENESS", value_parser = duration, default_value = "5s")]
    pub allowed_lateness: Duration,
    /// Events further than this ahead of the watermark are rejected.
    #[arg(long, env = "ADSTREAM_MAX_FUTURE", value_parser = duration, default_value = "1h")]
    pub max_future: Duration,
}

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
    #[arg(long, env = "ADSTREAM_MAX_EVENT_BYTES", default_value_t = crate::parse::DEFAULT_MAX_EVENT_BYTES)]
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

impl TrafficArgs {
    /// The generator configuration for a given send rate.
    pub fn generator_config(&self, send_rate: f64) -> anyhow::Result<crate::generator::GeneratorConfig> {
        let start = chrono::DateTime::parse_from_rfc3339(&self.start_time)
            .map_err(|e| anyhow::anyhow!("--start-time {:?}: {e}", self.start_time))?;
        let event_rate = self.event_rate.unwrap_or(if send_rate > 0.0 { send_rate } else { 1000.0 });
        anyhow::ensure!(event_rate > 0.0 && event_rate.is_finite(), "--event-rate must be positive");
        Ok(crate::generator::GeneratorConfig {
            seed: self.seed,
            start_time_us: start.timestamp_micros(),
            event_rate,
            jitter_us: micros(self.jitter),
        })
    }
}

impl WindowArgs {
    pub fn config(&self) -> anyhow::Result<crate::window::WindowConfig> {
        let size = micros(self.window);
        anyhow::ensure!(size >= 1_000, "--window must be at least 1ms");
        anyhow::ensure!(
            size % 1_000 == 0,
            "--window must be a whole number of milliseconds (ClickHouse stores DateTime64(3))"
        );
        Ok(crate::window::WindowConfig::new(size, micros(self.allowed_lateness), micros(self.max_future)))
    }
}

pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
