//! adstream: ad events from Kafka → event-time windows → ClickHouse.
//!
//! The flow, from `main`: [`cli`] parses flags and converts them into plain
//! [`config`], then hands it to the command's file in `cmd` (one per
//! subcommand). `cmd::run` wires the Kafka source (`io::kafka`) through the
//! pure [`engine`] (parse + windows) into a sink (`io::clickhouse` or
//! `io::console`) by way of `pipeline`'s stages, which own offsets and
//! backpressure; `obs` holds the counters, health and the metrics server.
//! [`generator`] is the traffic model behind `generate`, `demo` and
//! `run --self-feed`. [`learn`] is the CTR model, learned online from the
//! windows by `cmd::learn` (its step in `pipeline`) and served from Redis.

pub mod cli;
pub mod clock;
mod cmd;
mod config;
pub mod engine;
pub mod generator;
mod io;
pub mod learn;
mod obs;
mod pipeline;
mod shutdown;

/// Internals the integration tests in `tests/` drive directly (the sink and
/// its schema, against a real ClickHouse). Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::config::secret::Secret;
    pub use crate::config::ClickHouseConfig;
    pub use crate::io::clickhouse::schema_cluster::SHARDING;
    pub use crate::io::clickhouse::ClickHouseSink;

    use clap::Parser as _;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> anyhow::Result<Command> {
        Ok(Cli::try_parse_from(std::iter::once("adstream").chain(args.iter().copied()))?.command)
    }

    /// A Kafka client configuration from the `ADSTREAM_*` environment, as
    /// `adstream generate` reads it (TLS and SASL included): for the bench's
    /// own admin calls.
    pub fn kafka_client_config_from_env() -> anyhow::Result<rdkafka::ClientConfig> {
        let Command::Generate(a) = parse(&["generate"])? else { anyhow::bail!("generate") };
        crate::io::kafka::client_config(&crate::config::KafkaConfig::try_from(&a.kafka)?)
    }

    /// A ClickHouse client from the `ADSTREAM_*` environment, as
    /// `adstream migrate` reads it (HTTPS, CA, password included).
    pub fn clickhouse_client_from_env() -> anyhow::Result<clickhouse::Client> {
        let Command::Migrate(a) = parse(&["migrate"])? else { anyhow::bail!("migrate") };
        crate::io::clickhouse::client(&ClickHouseConfig::try_from(&a.clickhouse)?)
    }

    /// A Redis client for `url` with the rest of the Redis settings (TLS
    /// files, ACL user, password) from the `ADSTREAM_*` environment.
    pub fn redis_client_from_env(url: &str) -> anyhow::Result<redis::Client> {
        let Command::Predict(a) = parse(&[
            "predict",
            "--campaign",
            "C001",
            "--format",
            "banner",
            "--country",
            "US",
            "--device",
            "iOS",
            "--redis-url",
            url,
        ])?
        else {
            anyhow::bail!("predict")
        };
        let cfg = crate::config::PredictConfig::try_from(&a)?;
        crate::io::redis::client_with(cfg.redis_url.expose(), &cfg.redis_auth)
    }
}
