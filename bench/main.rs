//! `adstream-bench`: the benchmark suite (`scripts/bench.sh` runs it; see
//! docs/benchmarks.md for what each figure includes). Every bench repeats its
//! measurement, prints the medians beside their targets and writes them as
//! JSON to `--out` (default `target/bench/`).
//!
//! - `engine`: parse + validate + window from an in-memory buffer.
//! - `generator`: `adstream generate --rate 0` into the real broker.
//! - `consumer`: preloaded topic → `adstream run --drain` → ClickHouse, with
//!   the peers (Spark Structured Streaming, Flink SQL, Kafka Streams, Quix
//!   Streams) on the same topic, each when configured.
//! - `scaleout`: a 12-partition topic consumed by 1, 2 and 3 `adstream run
//!   --drain` processes in one group: cost per event per process, rows and
//!   inserts per second, exact totals, and the rebalance pause of each join.
//! - `scaling`: the engine loop over key counts × window sizes; cost per
//!   event and heap in use per point.
//! - `churn`: heap and RSS with 100,000 campaigns open at once, and the
//!   campaigns interned while campaigns start and end (issue 18 item 3).
//! - `learner`: the CTR model learned from exact segment windows against
//!   the generator's true model (Bayes-optimal log loss), with `--export`
//!   of the windows for the Python peers (`bench/learner_peers.py`).
//! - `serving`: a live generate → run → learn pipeline: the time from a
//!   window closing on every partition to its predictions readable in
//!   Redis, per `--poll-interval`; then `GET /ctr` and Redis `HGET` latency.
//!
//! Sizes are flags, so `tests/bench_smoke.rs` runs the same code paths with
//! a few thousand events.

mod alloc;
mod churn;
mod consumer;
mod engine;
mod generator;
mod learner;
mod peer_windows;
mod procstat;
mod range;
mod report;
mod scaleout;
mod scaling;
mod services;
mod serving;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

#[derive(Parser)]
#[command(name = "adstream-bench", about = "adstream's benchmark suite (see BENCHMARKS.md)")]
struct Cli {
    /// Where the JSON results (and run logs) go.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    /// Runs per figure (the median is reported).
    #[arg(long, global = true, default_value_t = 3)]
    reps: usize,
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Parse + validate + window from memory (no Kafka, no ClickHouse).
    Engine {
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// Simulated events per second of event time.
        #[arg(long, default_value_t = 10_000.0)]
        event_rate: f64,
        /// Take a batch every this many events, as the consume loop does
        /// every flush interval.
        #[arg(long, default_value_t = 100_000)]
        flush_every: u64,
        /// Spread the events over this many campaigns (default: C001–C005).
        #[arg(long)]
        campaigns: Option<u32>,
        /// Draw from the segmented traffic model (`--traffic segmented`).
        #[arg(long)]
        segmented: bool,
    },
    /// `adstream generate --rate 0` into Kafka.
    Generator {
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        /// The adstream binary to run.
        #[arg(long, default_value = "target/release/adstream")]
        adstream: String,
    },
    /// Preloaded topic → `adstream run --drain` → ClickHouse (and the peers).
    Consumer {
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        #[arg(long, default_value = "target/release/adstream")]
        adstream: String,
        #[arg(long, default_value_t = 10_000.0)]
        event_rate: f64,
        /// Python with pyspark, to run the Spark peer (omit to skip it).
        #[arg(long)]
        spark_python: Option<String>,
        /// The Spark job.
        #[arg(long, default_value = "bench/spark/job.py")]
        spark_job: PathBuf,
        /// Directory of the Kafka connector jars for Spark.
        #[arg(long, default_value = "")]
        spark_jars: String,
        /// Python with apache-flink, to run the Flink peer (omit to skip it).
        #[arg(long)]
        flink_python: Option<String>,
        /// The Flink SQL job.
        #[arg(long, default_value = "bench/flink/job.py")]
        flink_job: PathBuf,
        /// Directory of Flink's Kafka SQL connector jar.
        #[arg(long, default_value = "")]
        flink_jars: String,
        /// Class path of the compiled Kafka Streams peer and its jars, to
        /// run it (omit to skip it).
        #[arg(long)]
        kstreams_classpath: Option<String>,
        /// The java that runs it.
        #[arg(long, default_value = "java")]
        kstreams_java: String,
        /// Python with quixstreams, to run the Quix Streams peer (omit to skip it).
        #[arg(long)]
        quix_python: Option<String>,
        /// The Quix Streams job.
        #[arg(long, default_value = "bench/quix/job.py")]
        quix_job: PathBuf,
        /// Keep the preloaded topic.
        #[arg(long)]
        keep_topic: bool,
    },
    /// The engine loop over key counts × window sizes: cost per event and
    /// memory per point, with the flatness and memory-vs-events checks.
    Scaling {
        /// Events per point.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// Events of the memory check (the most keys, smallest and largest
        /// window, run again with this many events).
        #[arg(long, default_value_t = 4_000_000)]
        memory_events: u64,
        /// Campaign counts (keys = 3 formats × campaigns).
        #[arg(long, value_delimiter = ',', default_value = "5,50,500,5000,10000")]
        campaigns: Vec<u32>,
        /// Window sizes in seconds (each must divide 60).
        #[arg(long, value_delimiter = ',', default_value = "1,10,60")]
        window_s: Vec<u32>,
        #[arg(long, default_value_t = 10_000.0)]
        event_rate: f64,
        #[arg(long, default_value_t = 100_000)]
        flush_every: u64,
    },
    /// Campaign churn: heap and RSS with `--open` campaigns open at once,
    /// and the campaigns interned while they start and end.
    Churn {
        #[arg(long, default_value_t = 100_000)]
        open: u64,
        /// 10 s windows each of the open campaigns has an event in.
        #[arg(long, default_value_t = 6)]
        windows: u64,
        #[arg(long, default_value_t = 300)]
        churn_windows: u64,
        #[arg(long, default_value_t = 1_000)]
        per_window: u64,
    },
    /// 1, 2, 3 `adstream run --drain` processes in one group on one
    /// preloaded topic: CPU per event, rows/s, exactness, rebalance pause.
    Scaleout {
        #[arg(long, default_value_t = 20_000_000)]
        events: u64,
        #[arg(long, default_value = "target/release/adstream")]
        adstream: String,
        #[arg(long, default_value_t = 10_000.0)]
        event_rate: f64,
        #[arg(long, default_value_t = 12)]
        partitions: i32,
        /// Process counts, each measured in every repetition.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        processes: Vec<usize>,
        /// Keep the preloaded topic.
        #[arg(long)]
        keep_topic: bool,
    },
    /// A month of windows through `run --drain`, then one campaign's daily
    /// revenue from the 10 s rows vs the 1 h rollup.
    Range {
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 5_000_000)]
        events: u64,
        #[arg(long, default_value = "target/release/adstream")]
        adstream: String,
        /// Timed queries per view in each repetition.
        #[arg(long, default_value_t = 5)]
        queries: usize,
        /// Keep the preloaded topic.
        #[arg(long)]
        keep_topic: bool,
    },
    /// The CTR learner against the truth: progressive log loss and
    /// calibration vs the Bayes-optimal loss of the same stream.
    Learner {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        /// `seed` or `segmented`.
        #[arg(long, default_value = "seed", value_parser = parse_traffic)]
        traffic: adstream::generator::TrafficModel,
        #[arg(long, default_value_t = adstream::generator::DEFAULT_CAMPAIGNS)]
        campaigns: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Simulated events per second of event time (`generate --seed`'s
        /// default when unthrottled: 1000).
        #[arg(long, default_value_t = learner::DEFAULT_EVENT_RATE)]
        event_rate: f64,
        /// The calibration and "past warm-up" figures count the windows
        /// that start after this many events.
        #[arg(long, default_value_t = 200_000)]
        warmup: u64,
        /// Write the window × segment counts (and both predictions) as CSV,
        /// in stream order, for bench/learner_peers.py.
        #[arg(long)]
        export: Option<PathBuf>,
        /// FTRL α, β, λ1, λ2 (`adstream learn`'s flags and defaults).
        #[arg(long, default_value_t = 0.1)]
        ftrl_alpha: f64,
        #[arg(long, default_value_t = 1.0)]
        ftrl_beta: f64,
        #[arg(long, default_value_t = 1.0)]
        l1: f64,
        #[arg(long, default_value_t = 1.0)]
        l2: f64,
    },
    /// A live pipeline (generate → run → learn): window closed → its
    /// predictions readable in Redis, per learner poll interval; then
    /// `GET /ctr` and Redis `HGET` latency on keep-alive connections.
    Serving {
        #[arg(long, default_value = "target/release/adstream")]
        adstream: String,
        /// Events per second of the generator (event time = wall clock).
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        /// Windows to measure (after the learners' first publish).
        #[arg(long, default_value_t = 24)]
        windows: usize,
        /// One learner per value, all at once on the same database.
        #[arg(long, value_delimiter = ',', default_value = "1s,200ms")]
        poll_intervals: Vec<String>,
        /// GET /ctr (and HGET) requests per connection count.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Concurrent keep-alive connections, each count measured.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        connections: Vec<usize>,
        #[arg(long, env = "ADSTREAM_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
        /// Keep the topic.
        #[arg(long)]
        keep_topic: bool,
    },
    /// Prints every figure of the JSON results in `--out` as one Markdown table.
    Summary,
}

fn parse_traffic(s: &str) -> Result<adstream::generator::TrafficModel, String> {
    use adstream::generator::TrafficModel;
    [TrafficModel::Seed, TrafficModel::Segmented]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("unknown traffic model {s:?} (seed or segmented)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reps = cli.reps.max(1);
    if let Err(e) = std::fs::create_dir_all(&cli.out) {
        eprintln!("adstream-bench: creating {}: {e}", cli.out.display());
        return ExitCode::FAILURE;
    }
    let result = match cli.bench {
        Bench::Engine { events, event_rate, flush_every, campaigns, segmented } => engine::run(
            &engine::EngineArgs {
                events,
                reps,
                event_rate,
                flush_every: flush_every.max(1),
                seed: 42,
                campaigns,
                segmented,
            },
            &cli.out,
        ),
        Bench::Generator { events, adstream } => {
            generator::run(&generator::GeneratorArgs { events, reps, adstream }, &cli.out)
        }
        Bench::Consumer {
            events,
            adstream,
            event_rate,
            spark_python,
            spark_job,
            spark_jars,
            flink_python,
            flink_job,
            flink_jars,
            kstreams_classpath,
            kstreams_java,
            quix_python,
            quix_job,
            keep_topic,
        } => {
            use consumer::Peer;
            let peers = [
                spark_python.map(|python| Peer::Spark { python, job: spark_job, jars: spark_jars }),
                flink_python.map(|python| Peer::Flink { python, job: flink_job, jars: flink_jars }),
                kstreams_classpath.map(|classpath| Peer::KStreams { java: kstreams_java, classpath }),
                quix_python.map(|python| Peer::Quix { python, job: quix_job }),
            ];
            let peers = peers.into_iter().flatten().collect();
            consumer::run(&consumer::ConsumerArgs { events, reps, adstream, event_rate, peers, keep_topic }, &cli.out)
        }
        Bench::Scaling { events, memory_events, campaigns, window_s, event_rate, flush_every } => scaling::run(
            &scaling::ScalingArgs {
                events,
                memory_events,
                campaigns,
                window_s,
                reps,
                event_rate,
                flush_every: flush_every.max(1),
                seed: 42,
            },
            &cli.out,
        ),
        Bench::Churn { open, windows, churn_windows, per_window } => {
            churn::run(&churn::ChurnArgs { open, windows, churn_windows, per_window }, &cli.out)
        }
        Bench::Scaleout { events, adstream, event_rate, partitions, processes, keep_topic } => scaleout::run(
            &scaleout::ScaleoutArgs { events, reps, adstream, event_rate, partitions, processes, keep_topic },
            &cli.out,
        ),
        Bench::Range { days, events, adstream, queries, keep_topic } => {
            range::run(&range::RangeArgs { days, events, reps, adstream, queries, keep_topic }, &cli.out)
        }
        Bench::Learner {
            events,
            traffic,
            campaigns,
            seed,
            event_rate,
            warmup,
            export,
            ftrl_alpha,
            ftrl_beta,
            l1,
            l2,
        } => {
            let params = adstream::learn::Params { alpha: ftrl_alpha, beta: ftrl_beta, l1, l2, ..Default::default() };
            learner::run(
                &learner::LearnerArgs { events, reps, traffic, campaigns, seed, event_rate, warmup, export, params },
                &cli.out,
            )
        }
        Bench::Serving { adstream, rate, windows, poll_intervals, requests, connections, redis_url, keep_topic } => {
            serving::run(
                &serving::ServingArgs {
                    adstream,
                    rate,
                    windows,
                    poll_intervals,
                    requests,
                    connections,
                    redis_url,
                    keep_topic,
                },
                &cli.out,
            )
        }
        Bench::Summary => report::summary(&cli.out).map(|()| serde_json::Value::Null),
    };
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("adstream-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
