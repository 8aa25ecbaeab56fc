//! The process around the commands: the settings file and clap, logging,
//! the runtime, and dispatch to each command with its plain configuration.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use super::{file, Cli, Command, LogFormat};
use crate::cmd;
use crate::config::{DemoConfig, GenerateConfig, LearnConfig, MigrateConfig, PredictConfig, ReportConfig, RunConfig};
use crate::shutdown::Shutdown;

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

/// Each command with its plain configuration, converted at the edge.
async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Generate(a) => cmd::generate(GenerateConfig::try_from(&a)?, shutdown_on_signals()).await,
        Command::Run(a) => cmd::run(RunConfig::try_from(&a)?, shutdown_on_signals()).await,
        Command::Demo(a) => cmd::demo(DemoConfig::try_from(&a)?, shutdown_on_signals()).await,
        Command::Migrate(a) => cmd::migrate(MigrateConfig::try_from(&a)?).await,
        Command::Report(a) => cmd::report(ReportConfig::try_from(&a)?).await,
        Command::Learn(a) => cmd::learn(LearnConfig::try_from(&a)?, shutdown_on_signals()).await,
        Command::Predict(a) => cmd::predict(PredictConfig::try_from(&a)?).await,
    }
}
