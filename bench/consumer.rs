//! Consumer end-to-end bench, with the peers: Spark Structured Streaming,
//! Apache Flink (SQL), Kafka Streams and Quix Streams.
//!
//! One topic (3 partitions) is preloaded with seeded events. Then, per run,
//! `adstream run --drain` consumes it from the start with a fresh group into
//! a fresh ClickHouse database; the run is timed from spawn to exit, and
//! exits once every partition is read to its high watermark and the last
//! batch is acknowledged by ClickHouse (and the DLQ) and committed. Each
//! adstream run is followed by one run of every configured peer over the
//! same topic (fresh group / application id each), so the ratios compare
//! neighbours under the same machine load. A peer is measured over its
//! whole process tree (CPU, peak RSS), from spawn to exit; it reports its
//! own start-up time (process start to the job running: JVM, session,
//! group join) in a `PEER_SUMMARY {json}` line, so the processing rate is
//! also given without it.
//!
//! Every peer's windows are compared with adstream's, row by row
//! (impressions, clicks, exact revenue; Spark's CTR and eCPM too). Spark
//! and Flink flush the windows still open at the end of the input, as
//! `--drain` does, so every window is compared. Kafka Streams and Quix
//! Streams emit a window only once their stream time passes its end plus
//! the grace, and have no end-of-input flush: their last window(s) never
//! close. For them the comparison covers every window that starts before
//! the latest window start they emitted, and the windows left out are
//! counted (`not_closed`). The topic has no stragglers (jitter 1 s, lateness
//! 5 s) and adstream, Spark and Flink keep a watermark per input
//! partition, so nothing is late for them. Kafka Streams and Quix Streams
//! window a repartition topic into which the input partitions are written
//! interleaved: when one input partition runs ahead of another by more
//! than the grace, they drop the other's events as late. Those windows
//! (from Kafka Streams' warnings, Quix's `on_late` count) are left out of
//! the comparison and counted (`late_excluded`); every event must be
//! counted or reported dropped.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::peer_windows::{clickhouse_windows, compare, expired_window_starts, peer_windows, Windows};
use crate::procstat::run_measured;
use crate::report::{finish, median, Figure, Run, Target};
use crate::services::{
    brokers, clickhouse_url, delete_topic, delete_topics_containing, number_after, preload, query_tsv, unique,
};

pub struct ConsumerArgs {
    pub events: u64,
    pub reps: usize,
    pub adstream: String,
    /// Simulated events per second of event time: 10,000 puts 100,000
    /// events in each 10 s window.
    pub event_rate: f64,
    /// The peers to run beside adstream, in this order.
    pub peers: Vec<Peer>,
    pub keep_topic: bool,
}

/// How to start one peer.
pub enum Peer {
    /// pyspark's Python, the job, the directory of the Kafka connector jars.
    Spark { python: String, job: PathBuf, jars: String },
    /// apache-flink's Python, the job, the directory of the Kafka SQL connector jar.
    Flink { python: String, job: PathBuf, jars: String },
    /// `java`, and the class path of the compiled peer and its jars.
    KStreams { java: String, classpath: String },
    /// quixstreams' Python, the job.
    Quix { python: String, job: PathBuf },
}

/// A peer's names: the metric keys of its figures (static, as `Run` keys are).
pub struct PeerSpec {
    pub key: &'static str,
    pub name: &'static str,
    /// Flushes the windows still open at the end of the input.
    pub flushes_at_end: bool,
    wall_s: &'static str,
    events_per_s: &'static str,
    query_events_per_s: &'static str,
    startup_s: &'static str,
    cpu_s: &'static str,
    cpu_s_per_million: &'static str,
    peak_rss_mb: &'static str,
    windows_equal: &'static str,
    ratio_events_per_s: &'static str,
    ratio_events_per_cpu_s: &'static str,
    labels: [&'static str; 7],
}

macro_rules! peer_spec {
    ($key:literal, $name:literal, $flush:expr) => {
        PeerSpec {
            key: $key,
            name: $name,
            flushes_at_end: $flush,
            wall_s: concat!($key, "_wall_s"),
            events_per_s: concat!($key, "_events_per_s"),
            query_events_per_s: concat!($key, "_query_events_per_s"),
            startup_s: concat!($key, "_startup_s"),
            cpu_s: concat!($key, "_cpu_s"),
            cpu_s_per_million: concat!($key, "_cpu_s_per_million"),
            peak_rss_mb: concat!($key, "_peak_rss_mb"),
            windows_equal: concat!($key, "_windows_equal"),
            ratio_events_per_s: concat!($key, "_ratio_events_per_s"),
            ratio_events_per_cpu_s: concat!($key, "_ratio_events_per_cpu_s"),
            labels: [
                concat!($name, " events/s (incl. start-up)"),
                concat!($name, " events/s (after start-up)"),
                concat!($name, " start-up"),
                concat!($name, " CPU s per million events"),
                concat!($name, " peak RSS (process tree)"),
                concat!("ratio events per CPU s adstream / ", $name),
                concat!($name, " windows equal adstream's (1 = yes)"),
            ],
        }
    };
}

pub static SPARK: PeerSpec = peer_spec!("spark", "Spark", true);
pub static FLINK: PeerSpec = peer_spec!("flink", "Flink", true);
pub static KSTREAMS: PeerSpec = peer_spec!("kstreams", "Kafka Streams", false);
pub static QUIX: PeerSpec = peer_spec!("quix", "Quix Streams", false);

impl Peer {
    pub fn spec(&self) -> &'static PeerSpec {
        match self {
            Peer::Spark { .. } => &SPARK,
            Peer::Flink { .. } => &FLINK,
            Peer::KStreams { .. } => &KSTREAMS,
            Peer::Quix { .. } => &QUIX,
        }
    }

    /// The command of one run; its windows go to `result`, its state under `state`.
    fn command(&self, topic: &str, events: u64, result: &Path, state: &Path, id: &str) -> Command {
        let b = brokers();
        let mut c;
        match self {
            Peer::Spark { python, job, jars } => {
                c = Command::new(python);
                c.arg(job).args(["--brokers", &b, "--topic", topic, "--jars", jars]);
                c.arg("--out").arg(result).arg("--checkpoint").arg(state);
            }
            Peer::Flink { python, job, jars } => {
                c = Command::new(python);
                c.arg(job).args(["--brokers", &b, "--topic", topic, "--jars", jars, "--group", id]);
                c.arg("--out").arg(result);
            }
            Peer::KStreams { java, classpath } => {
                c = Command::new(java);
                c.args(["-Xmx1g", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath]);
                c.arg("adstream.bench.KStreamsPeer");
                c.args(["--brokers", &b, "--topic", topic, "--app-id", id, "--events", &events.to_string()]);
                c.arg("--out").arg(result).arg("--state-dir").arg(state);
            }
            Peer::Quix { python, job } => {
                c = Command::new(python);
                c.arg(job).args(["--brokers", &b, "--topic", topic, "--group", id, "--events", &events.to_string()]);
                c.arg("--out").arg(result).arg("--state-dir").arg(state);
            }
        }
        c
    }
}

pub fn run(args: &ConsumerArgs, out: &Path) -> anyhow::Result<Value> {
    let topic = unique("bench_e2e", 0);
    println!("consumer: preloading {} events into {topic} (3 partitions) ...", args.events);
    preload(&args.adstream, &topic, args.events, args.event_rate, None, out, "consumer-preload")?;

    let result = measure(args, out, &topic);
    if !args.keep_topic {
        if let Err(e) = delete_topic(&topic) {
            eprintln!("  (could not delete {topic}: {e:#})");
        }
    }
    result
}

fn measure(args: &ConsumerArgs, out: &Path, topic: &str) -> anyhow::Result<Value> {
    let n = args.events as f64;
    let mut runs = Vec::new();
    let mut checks = Vec::new();
    let mut last_db: Option<String> = None;
    for rep in 0..args.reps {
        let (db, group) = (unique("bench_e2e_db", rep), unique("bench_e2e_g", rep));
        let log = out.join(format!("consumer-{rep}"));
        let spawned_at = chrono::Utc::now();
        let usage = run_measured(
            Command::new(&args.adstream)
                .args(["run", "--drain", "--topic", topic, "--group", &group, "--database", &db])
                .args(["--stats-interval", "5s"])
                .env("ADSTREAM_BROKERS", brokers())
                .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
                .env("ADSTREAM_LOG", "info"),
            &log,
            Duration::from_secs(3600),
            false,
        )?;
        let stderr = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
        anyhow::ensure!(usage.exit_code == 0, "adstream run exited {}: see {}", usage.exit_code, log.display());
        let stats = stderr.lines().rev().find(|l| l.contains("final stats:")).unwrap_or("").to_string();
        let counted = number_after(&stats, "counted").unwrap_or(0.0);
        let in_ch: f64 = query_tsv(&format!("SELECT sum(impressions) + sum(clicks) FROM {db}.ad_metrics_10s"))?
            .trim()
            .parse()
            .context("counting events in ClickHouse")?;
        anyhow::ensure!(
            counted == n && in_ch == n,
            "adstream counted {counted}, ClickHouse holds {in_ch}, expected {n}: {stats}"
        );
        let mut run = Run::new();
        run.insert("events", n);
        run.insert("wall_s", usage.wall_s);
        run.insert("events_per_s", n / usage.wall_s);
        run.insert("cpu_s", usage.cpu_s);
        run.insert("cpu_s_per_million", usage.cpu_s / n * 1e6);
        run.insert("events_per_cpu_s", n / usage.cpu_s.max(1e-9));
        run.insert("peak_rss_mb", usage.peak_rss_mb);
        let startup = adstream_startup_s(&stderr, spawned_at);
        if let Some(s) = startup {
            run.insert("startup_s", s);
            run.insert("query_events_per_s", n / (usage.wall_s - s).max(1e-9));
        }
        if let Some(p50) = number_after(&stats, "due-to-visible p50") {
            run.insert("latency_p50_ms", p50);
        }
        if let Some(p99) = number_after(&stats, "ms p99") {
            run.insert("latency_p99_ms", p99);
        }
        println!(
            "  adstream run {}: {:.1} s (start-up {:.1} s), {:.0} events/s, {:.2} CPU s/M events, peak RSS {:.0} MiB, \
             due-to-visible p50 {} ms p99 {} ms",
            rep + 1,
            usage.wall_s,
            startup.unwrap_or(f64::NAN),
            n / usage.wall_s,
            usage.cpu_s / n * 1e6,
            usage.peak_rss_mb,
            run.get("latency_p50_ms").copied().unwrap_or(f64::NAN),
            run.get("latency_p99_ms").copied().unwrap_or(f64::NAN),
        );
        let mut check = json!({ "database": db, "counted": counted, "events_in_clickhouse": in_ch });
        if !args.peers.is_empty() {
            let ours = clickhouse_windows(&db)?;
            for peer in &args.peers {
                peer_run(peer, args, out, topic, &ours, rep, &mut run, &mut check)?;
            }
        }
        if let Some(prev) = last_db.replace(db) {
            let _ = query_tsv(&format!("DROP DATABASE IF EXISTS {prev}"));
        }
        runs.push(run);
        checks.push(check);
    }
    let mut figures = vec![
        Figure {
            label: "consumer events/s (Kafka → ClickHouse)",
            metric: "events_per_s",
            unit: "events/s",
            target: Target::AtLeast(3e5),
        },
        Figure {
            label: "consumer events/s (after start-up)",
            metric: "query_events_per_s",
            unit: "events/s",
            target: Target::None,
        },
        Figure { label: "consumer start-up (spawn → reading)", metric: "startup_s", unit: "s", target: Target::None },
        Figure {
            label: "consumer CPU s per million events",
            metric: "cpu_s_per_million",
            unit: "CPU s",
            target: Target::AtMost(0.40),
        },
        Figure { label: "consumer peak RSS", metric: "peak_rss_mb", unit: "MiB", target: Target::AtMost(150.0) },
        Figure { label: "due-to-visible latency p50", metric: "latency_p50_ms", unit: "ms", target: Target::None },
        Figure {
            label: "due-to-visible latency p99",
            metric: "latency_p99_ms",
            unit: "ms",
            target: Target::AtMost(1000.0),
        },
    ];
    for peer in &args.peers {
        let p = peer.spec();
        let l = &p.labels;
        figures.extend([
            Figure { label: l[0], metric: p.events_per_s, unit: "events/s", target: Target::None },
            Figure { label: l[1], metric: p.query_events_per_s, unit: "events/s", target: Target::None },
            Figure { label: l[2], metric: p.startup_s, unit: "s", target: Target::None },
            Figure { label: l[3], metric: p.cpu_s_per_million, unit: "CPU s", target: Target::None },
            Figure { label: l[4], metric: p.peak_rss_mb, unit: "MiB", target: Target::None },
            // Ahead of every peer per CPU second (the goal).
            Figure { label: l[5], metric: p.ratio_events_per_cpu_s, unit: "×", target: Target::AtLeast(1.0) },
            Figure { label: l[6], metric: p.windows_equal, unit: "", target: Target::AtLeast(1.0) },
        ]);
    }
    let config = json!({
        "events": args.events, "reps": args.reps, "event_rate": args.event_rate, "partitions": 3, "jitter_s": 1,
        "brokers": brokers(), "clickhouse": clickhouse_url(), "topic": topic,
        "peers": args.peers.iter().map(|p| p.spec().key).collect::<Vec<_>>(),
        "last_database": last_db,
    });
    let mut doc = finish(
        out,
        "consumer",
        "Consumer end to end: Kafka → adstream run --drain → ClickHouse",
        config,
        &runs,
        &figures,
        json!(checks),
    )?;
    let specs: Vec<&PeerSpec> = args.peers.iter().map(Peer::spec).collect();
    doc["peers"] = peer_rows(&runs, &specs);
    let path = out.join("consumer.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    print_peer_table(&doc);
    Ok(doc)
}

/// Seconds from spawn to the first partition read (the first `partition
/// started` log line): process start, metadata, group join, assignment and
/// the committed-offset look-up.
fn adstream_startup_s(stderr: &str, spawned_at: chrono::DateTime<chrono::Utc>) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains("partition started"))?;
    let ts = chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok()?;
    Some((ts.with_timezone(&chrono::Utc) - spawned_at).num_microseconds()? as f64 / 1e6)
}

/// One row per system (adstream first): medians and min–max of each figure
/// over the runs, and the ratio per CPU second.
fn peer_rows(runs: &[Run], peers: &[&PeerSpec]) -> Value {
    let stat = |metric: &str| {
        let v: Vec<f64> = runs.iter().filter_map(|r| r.get(metric).copied()).filter(|x| x.is_finite()).collect();
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        json!({ "median": median(v.clone()), "min": if v.is_empty() { f64::NAN } else { min },
                "max": if v.is_empty() { f64::NAN } else { max }, "runs": v.len() })
    };
    let mut rows = vec![json!({
        "system": "adstream", "key": "adstream",
        "events_per_s": stat("events_per_s"), "query_events_per_s": stat("query_events_per_s"),
        "startup_s": stat("startup_s"), "cpu_s_per_million": stat("cpu_s_per_million"),
        "peak_rss_mb": stat("peak_rss_mb"), "ratio_events_per_cpu_s": Value::Null, "windows_equal": Value::Null,
    })];
    for p in peers {
        rows.push(json!({
            "system": p.name, "key": p.key,
            "events_per_s": stat(p.events_per_s), "query_events_per_s": stat(p.query_events_per_s),
            "startup_s": stat(p.startup_s), "cpu_s_per_million": stat(p.cpu_s_per_million),
            "peak_rss_mb": stat(p.peak_rss_mb), "ratio_events_per_cpu_s": stat(p.ratio_events_per_cpu_s),
            "windows_equal": stat(p.windows_equal),
            "windows_equal_runs": runs.iter().filter(|r| r.get(p.windows_equal) == Some(&1.0)).count(),
        }));
    }
    json!(rows)
}

/// The peer table (Markdown) from `consumer.json`'s `peers`: median and,
/// in brackets, min–max over the runs.
pub fn print_peer_table(doc: &Value) {
    let Some(rows) = doc["peers"].as_array().filter(|r| r.len() > 1) else { return };
    let reps = doc["runs"].as_array().map_or(0, Vec::len);
    let cell = |v: &Value, digits: usize| {
        let (m, lo, hi) = (
            v["median"].as_f64().unwrap_or(f64::NAN),
            v["min"].as_f64().unwrap_or(f64::NAN),
            v["max"].as_f64().unwrap_or(f64::NAN),
        );
        if !m.is_finite() {
            return "n/a".to_string();
        }
        let f = |x: f64| if x >= 1000.0 { crate::report::fmt_num(x) } else { format!("{x:.digits$}") };
        format!("{} ({}–{})", f(m), f(lo), f(hi))
    };
    println!(
        "\nPeers on the same topic, same run ({} events, median (min–max) of {reps} runs; CPU and RSS of the process tree)",
        doc["config"]["events"]
    );
    println!(
        "| system | events/s | events/s after start-up | start-up s | CPU s per million events | peak RSS MiB | \
         adstream ahead per CPU s | windows equal |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let equal = match r["windows_equal_runs"].as_u64() {
            None => "(reference)".to_string(),
            Some(k) if k as usize == reps => format!("yes, {k} of {reps} runs"),
            Some(k) => format!("{k} of {reps} runs (see consumer.json checks)"),
        };
        let ratio = if r["ratio_events_per_cpu_s"].is_null() {
            "1×".to_string()
        } else {
            format!("{}×", cell(&r["ratio_events_per_cpu_s"], 1))
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r["system"].as_str().unwrap_or(""),
            cell(&r["events_per_s"], 0),
            cell(&r["query_events_per_s"], 0),
            cell(&r["startup_s"], 1),
            cell(&r["cpu_s_per_million"], 2),
            cell(&r["peak_rss_mb"], 0),
            ratio,
            equal
        );
    }
}

/// What a peer printed on its `PEER_SUMMARY` line.
fn peer_summary(stdout: &str) -> Value {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("PEER_SUMMARY "))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null)
}

#[allow(clippy::too_many_arguments)]
fn peer_run(
    peer: &Peer,
    args: &ConsumerArgs,
    out: &Path,
    topic: &str,
    ours: &Windows,
    rep: usize,
    run: &mut Run,
    check: &mut Value,
) -> anyhow::Result<()> {
    let p = peer.spec();
    let n = args.events as f64;
    let result = out.join(format!("{}-{rep}.jsonl", p.key));
    let state = out.join(format!("{}-state-{rep}", p.key));
    let _ = std::fs::remove_dir_all(&state);
    let log = out.join(format!("{}-{rep}", p.key));
    let id = unique(&format!("bench_{}", p.key), rep);
    let usage = run_measured(
        &mut peer.command(topic, args.events, &result, &state, &id),
        &log,
        Duration::from_secs(3600),
        true,
    )?;
    anyhow::ensure!(
        usage.exit_code == 0,
        "{} exited {}: see {}",
        p.name,
        usage.exit_code,
        log.with_extension("err").display()
    );
    let _ = std::fs::remove_dir_all(&state);
    // Kafka Streams' and Quix's repartition and changelog topics carry the id.
    match delete_topics_containing(&id) {
        Ok(0) => {}
        Ok(k) => println!("  ({k} internal topics of {} deleted)", p.name),
        Err(e) => println!("  (could not delete {}'s internal topics: {e:#})", p.name),
    }
    let summary = peer_summary(&std::fs::read_to_string(log.with_extension("out")).unwrap_or_default());
    let startup_s = summary["startup_s"].as_f64().unwrap_or(f64::NAN);
    let theirs = peer_windows(&result)?;
    // The windows in which the peer dropped events as late: from its
    // summary (Quix) or its log (Kafka Streams' "Skipping record for
    // expired window" warnings); left out of the comparison and counted.
    let mut late_windows: BTreeSet<i64> =
        summary["late_windows"].as_array().into_iter().flatten().filter_map(Value::as_i64).collect();
    late_windows.extend(expired_window_starts(&std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()));
    let late_dropped = summary["late_dropped"].as_f64().unwrap_or(0.0);
    let cmp = compare(ours, &theirs, p.flushes_at_end, p.name, &late_windows);
    // Every event must be counted in the windows or dropped as late.
    let counted = summary["counted"].as_f64().or_else(|| summary["input_rows"].as_f64()).unwrap_or(f64::NAN);
    let equal = cmp.diffs.is_empty() && cmp.compared > 0 && counted + late_dropped == n;
    run.insert(p.wall_s, usage.wall_s);
    run.insert(p.events_per_s, n / usage.wall_s);
    run.insert(p.startup_s, startup_s);
    run.insert(p.query_events_per_s, n / (usage.wall_s - startup_s).max(1e-9));
    run.insert(p.cpu_s, usage.cpu_s);
    run.insert(p.cpu_s_per_million, usage.cpu_s / n * 1e6);
    run.insert(p.peak_rss_mb, usage.peak_rss_mb);
    run.insert(p.windows_equal, if equal { 1.0 } else { 0.0 });
    let ours_rate = run.get("events_per_s").copied().unwrap_or(f64::NAN);
    let ours_eff = run.get("events_per_cpu_s").copied().unwrap_or(f64::NAN);
    run.insert(p.ratio_events_per_s, ours_rate / (n / usage.wall_s));
    run.insert(p.ratio_events_per_cpu_s, ours_eff / (n / usage.cpu_s.max(1e-9)));
    println!(
        "  {} run {}: {:.1} s (start-up {:.1} s), {:.0} events/s, {:.2} CPU s/M events, peak RSS {:.0} MiB; \
         {} windows compared, {} differ, {} not closed by the end; {} events counted, {} dropped as late \
         (in {} windows, left out)",
        p.name,
        rep + 1,
        usage.wall_s,
        startup_s,
        n / usage.wall_s,
        usage.cpu_s / n * 1e6,
        usage.peak_rss_mb,
        cmp.compared,
        cmp.diffs.len(),
        cmp.not_closed,
        counted,
        late_dropped,
        cmp.late_excluded
    );
    for d in cmp.diffs.iter().take(5) {
        println!("    {d}");
    }
    check[p.key] = json!({
        "counted": counted, "windows_adstream": ours.len(), "windows_peer": theirs.windows.len(), "compared": cmp.compared,
        "not_closed": cmp.not_closed, "late_dropped": late_dropped, "late_excluded": cmp.late_excluded,
        "late_window_starts": late_windows, "differences": cmp.diffs.len(),
        "first_differences": cmp.diffs.iter().take(10).collect::<Vec<_>>(), "summary": summary,
    });
    Ok(())
}
