//! `adstream` — see `adstream --help` and README.md.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;

use adstream::cli::{Cli, Command};
use adstream::source::kafka;
use adstream::source::producer::{self, thousands, thousands_f, ProduceConfig, ProduceStats};
use adstream::{demo, pipeline, schema, sink};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("ADSTREAM_LOG").unwrap_or_else(|_| "info".into()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli.command));
    // Blocking work still running (a final commit to an unreachable broker)
    // must not hold the exit; what it did not finish is replayed.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
        Command::Migrate(args) => {
            schema::migrate(&sink::clickhouse::client(&args)?, &args.database)
                .await
                .with_context(|| format!("ClickHouse at {}", args.display_url()))?;
            println!("schema applied: database {} at {}", args.database, args.display_url());
        }
        Command::Run(args) => {
            let stop = stop_flag();
            pipeline::run(args, stop).await?;
        }
        Command::Generate(args) => {
            let stop = stop_flag();
            anyhow::ensure!(args.rate >= 0.0 && args.rate.is_finite(), "--rate must be >= 0");
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
