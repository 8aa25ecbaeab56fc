//! The edge: clap's argument structs become plain [`crate::config`] values,
//! validated once, with secrets resolved. Nothing past this file sees clap.

use std::time::Duration;

use anyhow::{ensure, Context as _};

use super::{
    ClickHouseArgs, DemoArgs, GenerateArgs, KafkaArgs, LearnArgs, MigrateArgs, PredictArgs, RedisArgs, ReportArgs,
    RunArgs, TrafficArgs, TrafficKind, WindowArgs, ROLLUPS_SEPARATORS,
};
use crate::config::secret::Secret;
use crate::config::{
    ClickHouseConfig, DemoConfig, GenerateConfig, KafkaConfig, KafkaOption, LearnConfig, MigrateConfig, PredictConfig,
    RedisAuth, ReportConfig, RunConfig, SelfFeed, TlsFiles,
};
use crate::engine::processor::check_rollups;
use crate::engine::{Dims, Rollup, WindowConfig};
use crate::generator::{GeneratorConfig, Traffic, TrafficModel, MAX_CAMPAIGNS};

/// Longest simulated gap between two generated events: one a year. Beyond
/// it (`--event-rate 1e-12`) event times leave the calendar after a few
/// events.
const MAX_EVENT_GAP_US: f64 = 365.0 * 86_400.0 * 1e6;

pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl TryFrom<&KafkaArgs> for KafkaConfig {
    type Error = anyhow::Error;
    fn try_from(a: &KafkaArgs) -> anyhow::Result<Self> {
        let mut options = Vec::new();
        for o in a.options() {
            let Some((key, value)) = o.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
                // Not the option itself: it may be a mistyped secret.
                anyhow::bail!(
                    "--kafka-option {}: expected key=value (ADSTREAM_KAFKA_OPTIONS)",
                    crate::config::secret::redact_option(o)
                );
            };
            options.push(KafkaOption { key: key.trim().to_string(), value: Secret::new(value.trim()) });
        }
        ensure!(!a.connect_timeout.is_zero(), "--connect-timeout must be more than 0s");
        let tls = tls_files(
            "--kafka-ssl",
            "ADSTREAM_KAFKA_SSL",
            a.kafka_ssl_ca_file.as_deref(),
            a.kafka_ssl_cert_file.as_deref(),
            a.kafka_ssl_key_file.as_deref(),
        )?;
        let protocol = a.kafka_security_protocol.as_deref().map(|p| p.trim().to_ascii_lowercase());
        if !tls.is_empty() {
            ensure!(
                matches!(protocol.as_deref(), Some("ssl" | "sasl_ssl")),
                "--kafka-ssl-ca-file/--kafka-ssl-cert-file/--kafka-ssl-key-file need --kafka-security-protocol ssl or \
                 sasl_ssl (ADSTREAM_KAFKA_SECURITY_PROTOCOL), not {}",
                protocol.as_deref().unwrap_or("the default plaintext")
            );
        }
        Ok(KafkaConfig {
            brokers: a.brokers.clone(),
            topic: a.topic.clone(),
            security_protocol: a.kafka_security_protocol.clone(),
            sasl_mechanism: a.kafka_sasl_mechanism.clone(),
            sasl_username: a.kafka_sasl_username.clone(),
            sasl_password: a.sasl_password()?,
            options,
            connect_timeout: a.connect_timeout,
            tls,
            ssl_key_password: a.ssl_key_password()?,
            ssl_verify_hostname: a.kafka_ssl_verify_hostname,
        })
    }
}

impl TryFrom<&ClickHouseArgs> for ClickHouseConfig {
    type Error = anyhow::Error;
    fn try_from(a: &ClickHouseArgs) -> anyhow::Result<Self> {
        a.validate()?;
        ensure!(!a.clickhouse_connect_timeout.is_zero(), "--clickhouse-connect-timeout must be more than 0s");
        ensure!(
            a.clickhouse_request_timeout >= Duration::from_millis(100),
            "--clickhouse-request-timeout must be at least 100ms (ADSTREAM_CLICKHOUSE_REQUEST_TIMEOUT)"
        );
        let tls = tls_files(
            "--clickhouse",
            "ADSTREAM_CLICKHOUSE",
            a.clickhouse_ca_file.as_deref(),
            a.clickhouse_cert_file.as_deref(),
            a.clickhouse_key_file.as_deref(),
        )?;
        ensure!(
            tls.is_empty() || crate::io::clickhouse::is_https(a.clickhouse_url.expose()),
            "--clickhouse-ca-file/--clickhouse-cert-file/--clickhouse-key-file need an https:// --clickhouse-url \
             (ADSTREAM_CLICKHOUSE_URL), not {}",
            a.display_url()
        );
        if !tls.is_empty() {
            // Checked now (one line naming the flag), not at the first insert.
            crate::io::clickhouse::tls_connector(&tls)?;
        }
        Ok(ClickHouseConfig {
            url: a.clickhouse_url.clone(),
            database: a.database.clone(),
            user: a.clickhouse_user.clone(),
            password: a.password()?,
            connect_timeout: a.clickhouse_connect_timeout,
            request_timeout: a.clickhouse_request_timeout,
            tls,
        })
    }
}

/// The TLS files of one connection, each checked readable now (a typo in
/// a path is one line naming the flag, not a handshake error later), and a
/// client certificate only with its key.
fn tls_files(
    flag: &str,
    env: &str,
    ca: Option<&std::path::Path>,
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<TlsFiles> {
    let check = |what: &str, p: Option<&std::path::Path>| -> anyhow::Result<Option<std::path::PathBuf>> {
        let Some(p) = p.filter(|p| !p.as_os_str().is_empty()) else { return Ok(None) };
        std::fs::File::open(p).map_err(|e| {
            anyhow::anyhow!(
                "{flag}-{what}-file {}: {e} (ADSTREAM_{}_{}_FILE)",
                p.display(),
                env.trim_start_matches("ADSTREAM_"),
                what.to_ascii_uppercase()
            )
        })?;
        Ok(Some(p.to_path_buf()))
    };
    let files = TlsFiles { ca: check("ca", ca)?, cert: check("cert", cert)?, key: check("key", key)? };
    ensure!(
        files.cert.is_some() == files.key.is_some(),
        "{flag}-cert-file and {flag}-key-file go together (a client certificate and its key): set both or neither"
    );
    Ok(files)
}

impl TrafficArgs {
    /// The generator configuration for a given send rate.
    pub fn generator_config(&self, send_rate: f64) -> anyhow::Result<GeneratorConfig> {
        ensure!(send_rate >= 0.0 && send_rate.is_finite(), "--rate must be a number >= 0 (0 = unthrottled)");
        let start = chrono::DateTime::parse_from_rfc3339(&self.start_time)
            .map_err(|e| anyhow::anyhow!("--start-time {:?}: {e}", self.start_time))?;
        let event_rate = self.event_rate.unwrap_or(if send_rate > 0.0 { send_rate } else { 1000.0 });
        ensure!(event_rate > 0.0 && event_rate.is_finite(), "--event-rate must be a positive number");
        ensure!(
            1e6 / event_rate <= MAX_EVENT_GAP_US,
            "--event-rate {event_rate:e} puts more than a year between two events, so event times overflow \
             the calendar: use at least {:.3e} (one event a year)",
            1e6 / MAX_EVENT_GAP_US
        );
        Ok(GeneratorConfig {
            seed: self.seed,
            start_time_us: start.timestamp_micros(),
            event_rate,
            jitter_us: micros(self.jitter),
        })
    }
}

impl TrafficArgs {
    /// The traffic model and campaign count (`--traffic`, `--campaigns`).
    pub fn traffic(&self) -> anyhow::Result<Traffic> {
        let campaigns =
            u32::try_from(self.campaigns).ok().filter(|n| (1..=MAX_CAMPAIGNS).contains(n)).ok_or_else(|| {
                anyhow::anyhow!(
                    "--campaigns {} is out of range: use 1 to {MAX_CAMPAIGNS} (ADSTREAM_CAMPAIGNS)",
                    self.campaigns
                )
            })?;
        let model = match self.model {
            TrafficKind::Seed => TrafficModel::Seed,
            TrafficKind::Segmented => TrafficModel::Segmented,
        };
        Ok(Traffic::new(model, campaigns))
    }
}

impl WindowArgs {
    pub fn config(&self) -> anyhow::Result<WindowConfig> {
        let size = micros(self.window);
        ensure!(size >= 1_000, "--window must be at least 1ms");
        ensure!(size % 1_000 == 0, "--window must be a whole number of milliseconds (ClickHouse stores DateTime64(3))");
        // Windows aligned to the epoch then also align to every minute, so
        // per-minute rollups and dashboards add up whole windows.
        ensure!(
            60_000_000 % size == 0,
            "--window {} does not divide a minute: use one of 1s, 2s, 5s, 10s, 15s, 20s, 30s, 1m (or another divisor of 60 s)",
            humantime::format_duration(self.window)
        );
        // 0 would reject every event produced a moment before its event
        // time (clock skew between hosts): a guard that refuses real traffic.
        ensure!(
            self.max_future >= Duration::from_secs(1),
            "--max-future {} refuses events only just ahead of their Kafka timestamp (clock skew): use at least 1s (default 1h)",
            humantime::format_duration(self.max_future)
        );
        ensure!(
            self.max_ahead >= Duration::from_secs(1),
            "--max-ahead {} would hold back ordinary progress of the watermark: use at least 1s (default 60s)",
            humantime::format_duration(self.max_ahead)
        );
        Ok(WindowConfig::new(size, micros(self.allowed_lateness), micros(self.max_future))
            .with_max_ahead(micros(self.max_ahead)))
    }
}

impl WindowArgs {
    /// The rollups of `--rollup` (default: [`Rollup::defaults`]), each
    /// `DIMENSIONS[:WINDOW]` with the window a multiple of `--window`.
    pub fn rollups(&self) -> anyhow::Result<Vec<Rollup>> {
        let base = micros(self.window);
        let specs: Vec<&str> = self
            .rollup
            .iter()
            .flat_map(|s| s.split(ROLLUPS_SEPARATORS))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let rollups = if specs.is_empty() {
            Rollup::defaults(base)
        } else {
            specs.iter().map(|s| parse_rollup(s, base)).collect::<anyhow::Result<Vec<_>>>()?
        };
        check_rollups(&rollups, base)?;
        Ok(rollups)
    }
}

/// One `--rollup` value: `campaign_id,ad_format:1h`; without `:WINDOW`,
/// the base window.
fn parse_rollup(spec: &str, base_us: i64) -> anyhow::Result<Rollup> {
    let (dims, size) = match spec.split_once(':') {
        Some((d, s)) => (d, Some(s)),
        None => (spec, None),
    };
    let dims = Dims::parse(dims).map_err(|e| anyhow::anyhow!("--rollup {spec}: {e}"))?;
    let size_us = match size {
        Some(s) => micros(
            humantime::parse_duration(s.trim())
                .map_err(|e| anyhow::anyhow!("--rollup {spec}: window {s:?}: {e} (examples: 10s, 1m, 1h)"))?,
        ),
        None => base_us,
    };
    ensure!(size_us > 0, "--rollup {spec}: the window must be more than 0s");
    Ok(Rollup::new(dims, size_us))
}

impl TryFrom<&RunArgs> for RunConfig {
    type Error = anyhow::Error;
    fn try_from(a: &RunArgs) -> anyhow::Result<Self> {
        ensure!(
            !a.idle_timeout.is_zero(),
            "--idle-timeout 0s would flush every partition on every pass, between any two messages: use e.g. 30s"
        );
        ensure!(!a.flush_interval.is_zero(), "--flush-interval must be more than 0s (default 250ms)");
        ensure!(!a.stats_interval.is_zero(), "--stats-interval must be more than 0s (default 10s)");
        ensure!(!a.unhealthy_after.is_zero(), "--unhealthy-after must be more than 0s (default 30s)");
        ensure!(a.max_event_bytes > 0, "--max-event-bytes must be more than 0");
        let self_feed = match a.self_feed {
            Some(rate) => Some(SelfFeed {
                rate,
                count: a.self_feed_count,
                generator: a.traffic.generator_config(rate).context("--self-feed")?,
                traffic: a.traffic.traffic()?,
            }),
            None => None,
        };
        Ok(RunConfig {
            kafka: (&a.kafka).try_into()?,
            group: a.group.clone(),
            clickhouse: (&a.clickhouse).try_into()?,
            cluster: a.cluster.name().map(String::from),
            window: a.window.config()?,
            rollups: a.window.rollups()?,
            sink: a.sink,
            self_feed,
            drain: a.drain,
            flush_interval: a.flush_interval,
            max_event_bytes: a.max_event_bytes,
            idle_timeout: a.idle_timeout,
            stats_interval: a.stats_interval,
            dlq_topic: a.dlq_topic.clone(),
            metrics_addr: a.metrics_addr.0,
            unhealthy_after: a.unhealthy_after,
        })
    }
}

/// A model name: it ends up in Redis keys and a ClickHouse column.
fn model_name(m: &str) -> anyhow::Result<String> {
    let ok = !m.is_empty() && m.len() <= 64 && m.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    ensure!(ok, "--model {m:?}: letters, digits, `_` and `-` only, 1 to 64 of them (ADSTREAM_MODEL)");
    Ok(m.to_string())
}

/// The checked Redis URL, its authentication, the model name and the key
/// prefix of `database`.
fn redis_target(a: &RedisArgs, database: &str) -> anyhow::Result<(Secret, RedisAuth, String, String)> {
    let tls = tls_files(
        "--redis",
        "ADSTREAM_REDIS",
        a.redis_ca_file.as_deref(),
        a.redis_cert_file.as_deref(),
        a.redis_key_file.as_deref(),
    )?;
    let auth = RedisAuth { tls, user: a.redis_user.clone().filter(|u| !u.is_empty()), password: a.password()? };
    crate::io::redis::client_with(a.redis_url.expose(), &auth)?;
    ensure!(
        a.redis_timeout >= Duration::from_millis(10),
        "--redis-timeout must be at least 10ms (ADSTREAM_REDIS_TIMEOUT)"
    );
    let model = model_name(&a.model)?;
    let prefix = match &a.redis_prefix {
        Some(p) => {
            let ok = !p.is_empty() && p.len() <= 200 && p.bytes().all(|b| b.is_ascii_graphic());
            ensure!(ok, "--redis-prefix {p:?}: 1 to 200 printable characters, no spaces (ADSTREAM_REDIS_PREFIX)");
            p.clone()
        }
        None => crate::io::redis::default_prefix(database, &model),
    };
    Ok((a.redis_url.clone(), auth, model, prefix))
}

impl TryFrom<&LearnArgs> for LearnConfig {
    type Error = anyhow::Error;
    fn try_from(a: &LearnArgs) -> anyhow::Result<Self> {
        let (redis_url, redis_auth, model, redis_prefix) = redis_target(&a.redis, &a.clickhouse.database)?;
        let params = crate::learn::Params { alpha: a.ftrl_alpha, beta: a.ftrl_beta, l1: a.l1, l2: a.l2, bits: a.bits };
        params.validate().map_err(|e| anyhow::anyhow!("--ftrl-alpha/--ftrl-beta/--l1/--l2/--bits: {e}"))?;
        for (name, d) in [
            ("--poll-interval", a.poll_interval),
            ("--idle-after", a.idle_after),
            ("--redis-ttl", a.redis_ttl),
            ("--unhealthy-after", a.unhealthy_after),
            ("--max-lag", a.max_lag),
            ("--lease-ttl", a.lease_ttl),
        ] {
            ensure!(!d.is_zero(), "{name} must be more than 0s");
        }
        ensure!(a.keep_snapshots >= 1, "--keep-snapshots must be at least 1 (ADSTREAM_KEEP_SNAPSHOTS)");
        ensure!(a.redis_ttl >= Duration::from_secs(1), "--redis-ttl must be at least 1s (Redis TTLs are in seconds)");
        Ok(LearnConfig {
            clickhouse: (&a.clickhouse).try_into()?,
            redis_url,
            redis_auth,
            model,
            params,
            poll_interval: a.poll_interval,
            idle_after: a.idle_after,
            revise_horizon: a.revise_horizon,
            serve_segments_seen: a.serve_segments_seen,
            redis_ttl: a.redis_ttl,
            redis_timeout: a.redis.redis_timeout,
            metrics_addr: a.metrics_addr.0,
            unhealthy_after: a.unhealthy_after,
            max_lag: a.max_lag,
            redis_prefix,
            lease_ttl: a.lease_ttl,
            keep_snapshots: a.keep_snapshots,
            once: a.once,
        })
    }
}

impl TryFrom<&PredictArgs> for PredictConfig {
    type Error = anyhow::Error;
    fn try_from(a: &PredictArgs) -> anyhow::Result<Self> {
        let (redis_url, redis_auth, model, redis_prefix) = redis_target(&a.redis, &a.database)?;
        ensure!(!a.campaign.trim().is_empty(), "--campaign must not be empty");
        Ok(PredictConfig {
            redis_url,
            redis_timeout: a.redis.redis_timeout,
            redis_auth,
            model,
            redis_prefix,
            campaign: a.campaign.clone(),
            ad_format: a.ad_format.clone(),
            country: a.country.clone(),
            device: a.device.clone(),
            max_age: a.max_age,
        })
    }
}

impl TryFrom<&DemoArgs> for DemoConfig {
    type Error = anyhow::Error;
    fn try_from(a: &DemoArgs) -> anyhow::Result<Self> {
        Ok(DemoConfig {
            rate: a.rate,
            duration: a.duration,
            count: a.count,
            generator: a.traffic.generator_config(a.rate)?,
            traffic: a.traffic.traffic()?,
            window: a.window.config()?,
            rollups: a.window.rollups()?,
        })
    }
}

impl TryFrom<&GenerateArgs> for GenerateConfig {
    type Error = anyhow::Error;
    fn try_from(a: &GenerateArgs) -> anyhow::Result<Self> {
        ensure!(a.partitions > 0, "--partitions must be at least 1");
        ensure!(a.replication_factor > 0, "--replication-factor must be at least 1");
        Ok(GenerateConfig {
            kafka: (&a.kafka).try_into()?,
            rate: a.rate,
            count: a.count,
            duration: a.duration,
            generator: a.traffic.generator_config(a.rate)?,
            traffic: a.traffic.traffic()?,
            out_jsonl: a.out_jsonl.clone(),
            partitions: a.partitions,
            replication_factor: a.replication_factor,
            print_truth: a.print_truth,
        })
    }
}

impl TryFrom<&MigrateArgs> for MigrateConfig {
    type Error = anyhow::Error;
    fn try_from(a: &MigrateArgs) -> anyhow::Result<Self> {
        Ok(MigrateConfig {
            clickhouse: (&a.clickhouse).try_into()?,
            cluster: a.cluster.name().map(String::from),
            print: a.print,
        })
    }
}

impl TryFrom<&ReportArgs> for ReportConfig {
    type Error = anyhow::Error;
    fn try_from(a: &ReportArgs) -> anyhow::Result<Self> {
        Ok(ReportConfig {
            clickhouse: (&a.clickhouse).try_into()?,
            window: a.window,
            last: a.last,
            campaign: a.campaign.clone(),
            ad_format: a.ad_format.clone(),
            by: a.by,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn run_config(extra: &[&str]) -> anyhow::Result<RunConfig> {
        let args: Vec<&str> = ["adstream", "run"].iter().chain(extra).copied().collect();
        let Command::Run(a) = Cli::try_parse_from(args)?.command else { unreachable!("run") };
        RunConfig::try_from(&a)
    }

    #[test]
    fn nonsensical_values_are_refused_with_one_line() {
        for (flags, says) in [
            (&["--max-future", "0s"][..], "--max-future"),
            (&["--max-ahead", "0s"][..], "--max-ahead"),
            (&["--idle-timeout", "0s"], "--idle-timeout"),
            (&["--self-feed", "10", "--event-rate", "1e-300"], "--event-rate"),
            (&["--self-feed", "10", "--event-rate", "0"], "--event-rate"),
            (&["--flush-interval", "0s"], "--flush-interval"),
            (&["--window", "7s"], "--window"),
            (&["--clickhouse-url", "ftp://x"], "--clickhouse-url"),
            (&["--self-feed", "10", "--campaigns", "0"], "--campaigns 0 is out of range"),
            (&["--self-feed", "10", "--campaigns", "4294967296"], "--campaigns 4294967296 is out of range"),
            (
                &["--kafka-security-protocol", "ssl", "--kafka-ssl-ca-file", "/nonexistent/ca.pem"],
                "--kafka-ssl-ca-file",
            ),
            (&["--kafka-ssl-ca-file", "Cargo.toml"], "need --kafka-security-protocol ssl or sasl_ssl"),
            (
                &["--kafka-security-protocol", "sasl_ssl", "--kafka-ssl-cert-file", "Cargo.toml"],
                "--kafka-ssl-cert-file and --kafka-ssl-key-file go together",
            ),
            (&["--clickhouse-ca-file", "Cargo.toml"], "need an https:// --clickhouse-url"),
            (
                &["--clickhouse-url", "https://ch:8443", "--clickhouse-ca-file", "Cargo.toml"],
                "--clickhouse-ca-file: not a PEM certificate",
            ),
        ] {
            let e = format!("{:#}", run_config(flags).expect_err(says));
            assert!(e.contains(says) && !e.contains('\n'), "{flags:?}: {e}");
        }
        let ok =
            run_config(&["--max-future", "1s", "--idle-timeout", "1s", "--self-feed", "0", "--event-rate", "0.0002"])
                .expect("valid");
        assert_eq!(ok.window.max_future_us, 1_000_000);
        let feed = ok.self_feed.expect("self-feed");
        assert_eq!(feed.traffic, crate::generator::Traffic::default(), "seed model, C001..C005 by default");
        let feed = run_config(&["--self-feed", "5", "--traffic", "segmented", "--campaigns", "100000"])
            .expect("valid")
            .self_feed
            .expect("self-feed");
        assert_eq!(feed.traffic, Traffic::new(TrafficModel::Segmented, 100_000));
        assert_eq!(ok.idle_timeout, Duration::from_secs(1));
    }
}
