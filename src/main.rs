//! `adstream` — see `adstream --help` and README.md.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches};

use adstream::cli::{Cli, Command, LogFormat};
use adstream::source::kafka;
use adstream::source::producer::{self, thousands, thousands_f, ProduceConfig, ProduceStats};
use adstream::{config, demo, pipeline, report, schema_cluster, sink};

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let format = cli.log_format;
    init_logging(format);
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
    if let Err(e) = config::apply(&args, &Cli::command()) {
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

/// A flag set on the first SIGINT/SIGTERM; a second one exits at once.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            for _ in 0..2 {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if s.swap(true, Ordering::SeqCst) {
                    eprintln!("second signal: exiting now");
                    std::process::exit(130);
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            s.store(true, Ordering::SeqCst);
        }
    });
    stop
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Demo(args) => {
            let stop = stop_flag();
            tokio::task::spawn_blocking(move || demo::demo(args, stop)).await??;
        }
        Command::Report(args) => {
            let lines = report::lines(&args).await?;
            if lines.is_empty() {
                eprintln!(
                    "no windows in {}.ad_metrics_10s{} yet",
                    args.clickhouse.database,
                    if args.campaign.is_some() || args.ad_format.is_some() { " for this filter" } else { "" }
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
            let (ch, cluster) = (&args.clickhouse, args.cluster.name());
            if args.print {
                ch.validate()?;
                let script = schema_cluster::script(&ch.database, cluster)?;
                // A closed pipe (| head) is not an error.
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), script.as_bytes());
                return Ok(ExitCode::SUCCESS);
            }
            schema_cluster::migrate(&sink::clickhouse::client(ch)?, &ch.database, cluster)
                .await
                .with_context(|| format!("ClickHouse at {}", ch.display_url()))?;
            let on = cluster.map(|c| format!(" on cluster {c}")).unwrap_or_default();
            println!("schema applied{on}: database {} at {}", ch.database, ch.display_url());
        }
        Command::Run(args) => {
            let stop = stop_flag();
            pipeline::run(args, stop).await?;
        }
        Command::Generate(args) => {
            let stop = stop_flag();
            anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be >= 0");
            let kafka_args = args.kafka.clone();
            tokio::task::spawn_blocking(move || kafka::check_reachable(&kafka_args)).await??;
            kafka::ensure_topic(&args.kafka, args.partitions, args.replication_factor).await?;
            let pc = ProduceConfig {
                kafka: args.kafka.clone(),
                generator: args.traffic.generator_config(args.rate)?,
                rate: args.rate,
                count: args.count,
                duration: args.duration,
                out_jsonl: args.out_jsonl.clone(),
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
                return Ok(ExitCode::from(2));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
