//! The process around the commands: the settings file and clap, logging,
//! the runtime, and dispatch to each command with its plain configuration.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches};

use super::{file, Cli, Command, LogFormat};
use crate::config::{DemoConfig, GenerateConfig, LearnConfig, MigrateConfig, PredictConfig, ReportConfig, RunConfig};
use crate::io::clickhouse::{report, schema_cluster};
use crate::io::kafka;
use crate::io::kafka::producer::{self, thousands, thousands_f, ProduceConfig, ProduceStats};
use crate::shutdown::Shutdown;
use crate::{demo, pipeline};

/// `adstream`'s `main`.
pub fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let format = cli.log_format;
    init_logging(format);
    crate::obs::panic::install();
    crate::obs::panic::test_trigger();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(format, &format!("starting runtime: {e}")),
    };
    let result = rt.block_on(dispatch(cli.command));
    // Blocking work still running (a final commit to an unreachable broker)
    // must not hold the exit; what it did not finish is replayed.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => fail(format, &format!("{e:#}")),
    }
}

/// The settings file into the environment, then clap. A usage error is
/// printed as one line (clap's message, its hints folded in), so that a
/// misconfiguration reads as a single instruction; `--help` and `--version`
/// print as usual.
fn parse() -> Result<Cli, ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Err(e) = file::apply(&args, &Cli::command()) {
        eprintln!("error: {e:#}");
        return Err(ExitCode::from(2));
    }
    // Built after the file is applied: clap reads the environment when the
    // command is defined.
    let mut cmd = Cli::command();
    let matches = match cmd.try_get_matches_from_mut(&args) {
        Ok(m) => m,
        Err(e) => return Err(usage_error(e)),
    };
    Cli::from_arg_matches(&matches).map_err(|e| usage_error(e.with_cmd(&cmd)))
}

fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || matches!(e.kind(), ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand)
    {
        let _ = e.print();
        return ExitCode::from(e.exit_code() as u8);
    }
    let text = e.render().to_string();
    let line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("Usage:"))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("{line} (see --help)");
    ExitCode::from(2)
}

/// Human-readable lines by default (colour only on a terminal); with
/// `--log-format json`, one JSON object per line for log shippers.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ADSTREAM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// A fatal error: one line, as text or as a JSON log record.
fn fail(format: LogFormat, msg: &str) -> ExitCode {
    let msg = msg.replace('\n', " ");
    match format {
        LogFormat::Text => eprintln!("error: {msg}"),
        LogFormat::Json => tracing::error!("{msg}"),
    }
    ExitCode::FAILURE
}

/// The process's [`Shutdown`], triggered by SIGINT/SIGTERM.
fn shutdown_on_signals() -> Shutdown {
    let s = Shutdown::new();
    s.on_signals();
    s
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Demo(args) => {
            let cfg = DemoConfig::try_from(&args)?;
            let stop = shutdown_on_signals();
            tokio::task::spawn_blocking(move || demo::demo(cfg, stop)).await??;
        }
        Command::Report(args) => {
            let cfg = ReportConfig::try_from(&args)?;
            let lines = report::lines(&cfg).await?;
            if lines.is_empty() {
                eprintln!(
                    "no windows in {}{} yet",
                    report::source(&cfg),
                    if cfg.campaign.is_some() || cfg.ad_format.is_some() { " for this filter" } else { "" }
                );
            }
            let mut out = std::io::stdout().lock();
            for l in lines {
                use std::io::Write as _;
                if writeln!(out, "{l}").is_err() {
                    break; // a closed pipe (| head) is not an error
                }
            }
        }
        Command::Migrate(args) => {
            let cfg = MigrateConfig::try_from(&args)?;
            let (ch, cluster) = (&cfg.clickhouse, cfg.cluster.as_deref());
            if cfg.print {
                let script = schema_cluster::script(&ch.database, cluster)?;
                // A closed pipe (| head) is not an error.
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), script.as_bytes());
                return Ok(ExitCode::SUCCESS);
            }
            schema_cluster::migrate(&crate::io::clickhouse::client(ch)?, &ch.database, cluster)
                .await
                .map_err(|e| crate::io::clickhouse::retry::schema_error(e, ch))?;
            let on = cluster.map(|c| format!(" on cluster {c}")).unwrap_or_default();
            println!("schema applied{on}: database {} at {}", ch.database, ch.display_url());
        }
        Command::Learn(args) => {
            let cfg = LearnConfig::try_from(&args)?;
            pipeline::learn(cfg, shutdown_on_signals()).await?;
        }
        Command::Predict(args) => {
            let cfg = PredictConfig::try_from(&args)?;
            return predict(&cfg).await;
        }
        Command::Run(args) => {
            let cfg = RunConfig::try_from(&args)?;
            pipeline::run(cfg, shutdown_on_signals()).await?;
        }
        Command::Generate(args) => {
            let cfg = GenerateConfig::try_from(&args)?;
            if cfg.print_truth {
                // No Kafka: the model only. A closed pipe (| head) is not an error.
                if let Err(e) = cfg.traffic.write_truth(std::io::stdout().lock()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(anyhow::anyhow!("--print-truth: writing to stdout: {e}"));
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let stop = shutdown_on_signals();
            let kafka_cfg = cfg.kafka.clone();
            tokio::task::spawn_blocking(move || kafka::check_reachable(&kafka_cfg)).await??;
            kafka::ensure_topic(&cfg.kafka, cfg.partitions, cfg.replication_factor).await?;
            let pc = ProduceConfig {
                kafka: cfg.kafka.clone(),
                generator: cfg.generator,
                traffic: cfg.traffic,
                rate: cfg.rate,
                count: cfg.count,
                duration: cfg.duration,
                out_jsonl: cfg.out_jsonl.clone(),
                progress: true,
            };
            let s = tokio::task::spawn_blocking(move || producer::produce(pc, stop, Arc::new(ProduceStats::default())))
                .await??;
            let secs = s.elapsed.as_secs_f64();
            println!(
                "Done: {} events delivered in {secs:.2} s | Average rate: {} events/sec | Failed deliveries: {}",
                thousands(s.delivered),
                thousands_f(s.delivered as f64 / secs.max(1e-9)),
                thousands(s.failed)
            );
            if s.failed > 0 {
                return Ok(ExitCode::from(super::exit::DELIVERY_FAILED));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `adstream predict`: the cached prediction, as the dashboard shows CTR.
async fn predict(cfg: &PredictConfig) -> anyhow::Result<ExitCode> {
    let client = crate::io::redis::client_with(&cfg.redis_url, &cfg.redis_auth)?;
    let segment = (cfg.campaign.as_str(), cfg.ad_format.as_str(), cfg.country.as_str(), cfg.device.as_str());
    let tls = cfg.redis_url.trim_start().to_ascii_lowercase().starts_with("rediss:");
    let cached =
        crate::io::redis::lookup(client, cfg.redis_timeout, &cfg.redis_prefix, segment).await.map_err(|e| {
            anyhow::anyhow!(
                "Redis at {}: {}: {}",
                crate::config::secret::redact_url(&cfg.redis_url),
                e.to_string().replace('\n', " "),
                crate::io::redis::hint(&format!("{e:#}"), tls).0
            )
        })?;
    let name = format!("{} | {} | {} | {}", cfg.campaign, cfg.ad_format, cfg.country, cfg.device);
    let Some(c) = cached else {
        eprintln!(
            "no prediction cached for {name} (model {:?}: `adstream learn` has not published it, or it expired)",
            cfg.model
        );
        return Ok(ExitCode::from(super::exit::NO_PREDICTION));
    };
    let age_ms = chrono::Utc::now().timestamp_millis().saturating_sub(c.published_ms).max(0);
    let age = std::time::Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
    let window = crate::engine::time::format_seconds(c.window_ms.saturating_mul(1000));
    if age > cfg.max_age {
        eprintln!(
            "the cached prediction for {name} is {:.0} s old, more than --max-age {} (is `adstream learn` running?)",
            age.as_secs_f64(),
            humantime::format_duration(cfg.max_age)
        );
        return Ok(ExitCode::from(super::exit::STALE));
    }
    println!(
        "{name} | CTR {:.2}% | model v{} | learned through {window} | age {:.1} s",
        c.ctr * 100.0,
        c.version,
        age.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
