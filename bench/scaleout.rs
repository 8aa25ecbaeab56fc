//! Scale-out bench: one topic of `--partitions` (12) partitions preloaded
//! with seeded events, consumed by 1, 2 and 3 `adstream run --drain`
//! processes in one consumer group (fresh group and database per run), the
//! process counts taking turns within each repetition so that they are
//! measured side by side under the same machine load.
//!
//! Within a run the processes join one at a time: the next one starts once
//! every partition is being consumed again after the previous join, which
//! is what the rebalance pause measures:
//!
//! - join → all consuming: from the new process's spawn to the moment the
//!   last partition logs `partition started` (its first message after its
//!   (re)assignment). Includes the process start, its schema check and the
//!   group join.
//! - revoke → all consuming: from the first `Revoked` logged by a member
//!   after the spawn (the eager rebalance stops every partition) to the
//!   same moment: the time the group consumed nothing.
//!
//! Both come from the processes' JSON logs (microsecond timestamps); a
//! partition first consumes and then commits, so commit-based views of the
//! pause would add up to one `--flush-interval`.
//!
//! Per process: CPU seconds (exact, `wait4`) over the events it counted
//! (replays after a rebalance count again: that is part of the cost of
//! scaling out), rows and inserts it wrote. The totals in ClickHouse are
//! compared, window by window, with an oracle computed in this process from
//! the same seeded generator (not from anything adstream wrote).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adstream::generator::{Generator, GeneratorConfig, CAMPAIGNS, DEFAULT_SEEDED_START_US};
use anyhow::Context as _;
use serde_json::{json, Value};

use crate::peer_windows::clickhouse_windows;
use crate::procstat::{Spawned, Usage};
use crate::report::{finish, Figure, Run, Target};
use crate::services::{brokers, clickhouse_url, delete_topic, number_after, preload, query_tsv, unique};

pub struct ScaleoutArgs {
    pub events: u64,
    pub reps: usize,
    pub adstream: String,
    pub event_rate: f64,
    pub partitions: i32,
    pub processes: Vec<usize>,
    pub keep_topic: bool,
}

/// `services::preload`'s seed.
const SEED: u64 = 42;
const JITTER_US: i64 = 1_000_000;
/// How long a join may take to bring every partition back before the next
/// process starts anyway (its pause is then not measured).
const JOIN_LIMIT: Duration = Duration::from_secs(90);

/// A join's pause in ms: (from the join, from the first revocation).
type Pause = (Option<f64>, Option<f64>);

/// (window start s, campaign, format) → (impressions, clicks, revenue µ).
type Totals = BTreeMap<(i64, String, String), (u64, u64, i64)>;

pub fn run(args: &ScaleoutArgs, out: &Path) -> anyhow::Result<Value> {
    anyhow::ensure!(!args.processes.is_empty() && args.processes.iter().all(|&n| n >= 1), "--processes");
    let topic = unique("bench_scaleout", 0);
    println!("scaleout: preloading {} events into {topic} ({} partitions) ...", args.events, args.partitions);
    let (p, name) = (Some(args.partitions), "scaleout-preload");
    preload(&args.adstream, &topic, args.events, args.event_rate, p, out, name)?;
    let t = Instant::now();
    let oracle = oracle(args);
    println!("  oracle: {} windows × keys from the generator in {:.1} s", oracle.len(), t.elapsed().as_secs_f64());

    let result = measure(args, out, &topic, &oracle);
    if !args.keep_topic {
        if let Err(e) = delete_topic(&topic) {
            eprintln!("  (could not delete {topic}: {e:#})");
        }
    }
    result
}

/// The expected windows, straight from the generator's event facts (the
/// `generate` above draws the same events: same seed, start, rate, jitter).
fn oracle(args: &ScaleoutArgs) -> Totals {
    let mut g = Generator::new(GeneratorConfig {
        seed: Some(SEED),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate: args.event_rate,
        jitter_us: JITTER_US,
    });
    let (mut key, mut json) = (Vec::new(), Vec::new());
    let mut t = Totals::new();
    for _ in 0..args.events {
        let e = g.next_into(|| 0, &mut key, &mut json);
        let start_s = e.timestamp_us.div_euclid(10_000_000) * 10;
        let c = t.entry((start_s, CAMPAIGNS[e.campaign].to_string(), e.ad_format.as_str().to_string())).or_default();
        match e.event_type {
            adstream::engine::EventType::Impression => c.0 += 1,
            adstream::engine::EventType::Click => c.1 += 1,
        }
        c.2 += e.revenue_micros;
    }
    t
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn measure(args: &ScaleoutArgs, out: &Path, topic: &str, oracle: &Totals) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    let mut checks = Vec::new();
    let mut last_db: Option<String> = None;
    for rep in 0..args.reps {
        let mut run = Run::new();
        for &n in &args.processes {
            let (db, check) = group_run(args, out, topic, n, rep, oracle, &mut run)?;
            if let Some(prev) = last_db.replace(db) {
                let _ = query_tsv(&format!("DROP DATABASE IF EXISTS {prev}"));
            }
            checks.push(check);
        }
        if let Some(base) = run.get("p1_cpu_s_per_million").copied() {
            for &n in &args.processes {
                if let Some(v) = run.get(leak(format!("p{n}_cpu_s_per_million"))).copied() {
                    run.insert(leak(format!("p{n}_cost_ratio")), v / base);
                }
            }
        }
        runs.push(run);
    }
    let mut figures = Vec::new();
    for &n in &args.processes {
        let f = |metric: String, label: String, unit: &'static str, target: Target| Figure {
            label: leak(label),
            metric: leak(metric),
            unit,
            target,
        };
        figures.extend([
            f(format!("p{n}_events_per_s"), format!("{n} proc: events/s (group)"), "events/s", Target::None),
            f(format!("p{n}_rows_per_s"), format!("{n} proc: window rows written/s"), "rows/s", Target::None),
            f(format!("p{n}_inserts_per_s"), format!("{n} proc: window-row inserts/s"), "inserts/s", Target::None),
            f(format!("p{n}_cpu_s_per_million"), format!("{n} proc: CPU s per M events"), "CPU s", Target::None),
            f(
                format!("p{n}_cpu_s_per_million_max"),
                format!("{n} proc: CPU s per M, costliest proc"),
                "CPU s",
                Target::None,
            ),
            f(format!("p{n}_replayed"), format!("{n} proc: events counted twice"), "events", Target::None),
            f(format!("p{n}_exact"), format!("{n} proc: windows equal the oracle"), "", Target::AtLeast(1.0)),
        ]);
        if n > 1 {
            figures.extend([
                f(format!("p{n}_pause_join_ms"), format!("{n} proc: join → all consuming"), "ms", Target::None),
                f(format!("p{n}_pause_revoke_ms"), format!("{n} proc: revoke → all consuming"), "ms", Target::None),
            ]);
        }
        if n > 1 && args.processes.contains(&1) {
            figures.push(f(
                format!("p{n}_cost_ratio"),
                format!("{n} proc: CPU per event vs 1 proc"),
                "×",
                Target::AtMost(1.10),
            ));
        }
    }
    let config = json!({
        "events": args.events, "reps": args.reps, "event_rate": args.event_rate, "partitions": args.partitions,
        "processes": args.processes, "jitter_s": 1, "brokers": brokers(), "clickhouse": clickhouse_url(),
        "topic": topic, "last_database": last_db,
    });
    finish(
        out,
        "scaleout",
        "Scale-out: 1..n adstream run --drain processes in one group, one topic",
        config,
        &runs,
        &figures,
        json!(checks),
    )
}

/// One process's part of a run.
struct Proc {
    log: PathBuf,
    child: Spawned,
    usage: Option<Usage>,
}

#[allow(clippy::too_many_arguments)]
fn group_run(
    args: &ScaleoutArgs,
    out: &Path,
    topic: &str,
    n: usize,
    rep: usize,
    oracle: &Totals,
    run: &mut Run,
) -> anyhow::Result<(String, Value)> {
    let (db, group) = (unique(&format!("bench_so{n}_db"), rep), unique(&format!("bench_so{n}_g"), rep));
    let spawn = |k: usize| -> anyhow::Result<Proc> {
        let log = out.join(format!("scaleout-{n}p-{rep}-{k}"));
        let child = Spawned::start(
            Command::new(&args.adstream)
                .args(["--log-format", "json", "run", "--drain", "--topic", topic, "--group", &group])
                .args(["--database", &db, "--stats-interval", "5s", "--metrics-addr", "off"])
                .env("ADSTREAM_BROKERS", brokers())
                .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
                .env("ADSTREAM_LOG", "info"),
            &log,
        )?;
        Ok(Proc { log: log.with_extension("err"), child, usage: None })
    };
    let t0 = Instant::now();
    let mut procs = vec![spawn(0)?];
    let mut joins = Vec::new();
    let mut since = now_us();
    for k in 1..n {
        wait_all_started(&mut procs, since, args.partitions)?;
        since = now_us();
        joins.push(since);
        procs.push(spawn(k)?);
    }
    let limit = Duration::from_secs(3600);
    while procs.iter().any(|p| p.usage.is_none()) {
        reap(&mut procs)?;
        if t0.elapsed() > limit {
            for p in procs.iter().filter(|p| p.usage.is_none()) {
                let _ = p.child.kill_and_wait();
            }
            anyhow::bail!("{n} processes still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall_s = t0.elapsed().as_secs_f64();

    let mut per_proc = Vec::new();
    let (mut cpu, mut counted, mut rows, mut batches, mut worst) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for (k, p) in procs.iter().enumerate() {
        let u = p.usage.unwrap_or_default();
        let text = std::fs::read_to_string(&p.log).unwrap_or_default();
        anyhow::ensure!(u.exit_code == 0, "process {k} of {n} exited {}: see {}", u.exit_code, p.log.display());
        let stats = log_lines(&text).into_iter().rev().find(|l| l.1.starts_with("final stats:")).map(|l| l.1);
        let stats = stats.with_context(|| format!("no final stats in {}", p.log.display()))?;
        let c = number_after(&stats, "counted").unwrap_or(0.0);
        let (r, b) = rows_and_batches(&stats);
        cpu += u.cpu_s;
        counted += c;
        rows += r;
        batches += b;
        if c > 0.0 {
            worst = worst.max(u.cpu_s / c * 1e6);
        }
        per_proc.push(json!({"counted": c, "cpu_s": u.cpu_s, "wall_s": u.wall_s, "rows_written": r, "inserts": b,
                             "peak_rss_mb": u.peak_rss_mb}));
    }
    let events: Vec<(i64, usize, LogEvent)> = procs
        .iter()
        .enumerate()
        .flat_map(|(k, p)| {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            log_lines(&text).into_iter().filter_map(move |(ts, msg, part)| Some((ts, k, LogEvent::of(&msg, part)?)))
        })
        .collect();
    let pauses: Vec<Pause> = joins.iter().map(|&j| rebalance_pause(&events, j, args.partitions)).collect();

    let actual = clickhouse_windows(&db)?;
    let actual: Totals = actual.into_iter().map(|(k, v)| (k, (v.0, v.1, v.2))).collect();
    let diffs: Vec<String> = oracle
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k:?}: expected {v:?}, ClickHouse {:?}", actual.get(k)))
        .chain(actual.keys().filter(|k| !oracle.contains_key(*k)).map(|k| format!("{k:?}: not in the oracle")))
        .collect();
    anyhow::ensure!(
        diffs.is_empty(),
        "{n} processes: {} windows differ from the oracle: {:?}",
        diffs.len(),
        &diffs[..5.min(diffs.len())]
    );

    let ev = args.events as f64;
    let max_of = |f: fn(&Pause) -> Option<f64>| {
        pauses.iter().map(f).try_fold(0.0f64, |m, v| v.map(|v| m.max(v))).unwrap_or(f64::NAN)
    };
    let m = |s: &str| leak(format!("p{n}_{s}"));
    run.insert(m("events_per_s"), ev / wall_s);
    run.insert(m("rows_per_s"), rows / wall_s);
    run.insert(m("inserts_per_s"), batches / wall_s);
    run.insert(m("cpu_s_per_million"), cpu / counted.max(1.0) * 1e6);
    run.insert(m("cpu_s_per_million_max"), worst);
    run.insert(m("replayed"), counted - ev);
    run.insert(m("exact"), 1.0);
    if n > 1 {
        run.insert(m("pause_join_ms"), max_of(|p| p.0));
        run.insert(m("pause_revoke_ms"), max_of(|p| p.1));
    }
    println!(
        "  {n} process(es), run {}: {wall_s:.1} s, {:.0} events/s, {:.0} rows/s, {:.2} CPU s/M events \
         (costliest process {worst:.2}), {} counted twice, pauses join/revoke → all consuming (ms): {:?}; \
         {} windows × keys equal the oracle",
        rep + 1,
        ev / wall_s,
        rows / wall_s,
        cpu / counted.max(1.0) * 1e6,
        counted - ev,
        pauses,
        oracle.len(),
    );
    let check = json!({ "processes": n, "rep": rep, "database": db, "wall_s": wall_s, "per_process": per_proc,
                        "pauses_ms": pauses.iter().map(|p| json!({"join": p.0, "revoke": p.1})).collect::<Vec<_>>(),
                        "windows_equal_oracle": oracle.len() });
    Ok((db, check))
}

fn reap(procs: &mut [Proc]) -> anyhow::Result<()> {
    for p in procs.iter_mut().filter(|p| p.usage.is_none()) {
        p.usage = p.child.try_wait()?;
    }
    Ok(())
}

fn now_us() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

/// Waits until every partition has logged `partition started` after
/// `since_us` (in any process's log), or a process exited, or
/// [`JOIN_LIMIT`].
fn wait_all_started(procs: &mut [Proc], since_us: i64, partitions: i32) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < JOIN_LIMIT {
        reap(procs)?;
        if procs.iter().any(|p| p.usage.is_some()) {
            return Ok(());
        }
        let mut started = BTreeSet::new();
        for p in procs.iter() {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            for (ts, msg, part) in log_lines(&text) {
                if let (true, Some(LogEvent::Started(q))) = (ts > since_us, LogEvent::of(&msg, part)) {
                    started.insert(q);
                }
            }
        }
        if started.len() as i32 >= partitions {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogEvent {
    Started(i64),
    Revoked,
}

impl LogEvent {
    fn of(msg: &str, partition: Option<i64>) -> Option<Self> {
        match (msg, partition) {
            ("partition started", Some(p)) => Some(LogEvent::Started(p)),
            (m, _) if m.starts_with("Revoked(") => Some(LogEvent::Revoked),
            _ => None,
        }
    }
}

/// (timestamp µs, message, `partition` field) of each JSON log line.
fn log_lines(text: &str) -> Vec<(i64, String, Option<i64>)> {
    text.lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let ts = chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str()?).ok()?.timestamp_micros();
            Some((ts, v["message"].as_str()?.to_string(), v["partition"].as_i64()))
        })
        .collect()
}

/// The pause of the join at `join_us`, in ms: (from the join, from the
/// first revocation after it) to the last partition's first message after
/// it; `None` when some partition never started again, or (revocation)
/// when no member revoked anything in between.
fn rebalance_pause(events: &[(i64, usize, LogEvent)], join_us: i64, partitions: i32) -> Pause {
    let mut first: BTreeMap<i64, i64> = BTreeMap::new();
    for &(ts, _, e) in events.iter().filter(|e| e.0 > join_us) {
        if let LogEvent::Started(p) = e {
            first.entry(p).or_insert(ts);
        }
    }
    if first.len() < partitions as usize {
        return (None, None);
    }
    let all = first.values().copied().max().unwrap_or(join_us);
    // Only a revocation before every partition is back belongs to this
    // join (none: the group was not stopped, e.g. the only member had
    // already drained and left; a later one belongs to the next join).
    let revoke = events.iter().filter(|e| e.0 > join_us && e.0 <= all && e.2 == LogEvent::Revoked).map(|e| e.0).min();
    let ms = |from: i64| (all - from) as f64 / 1000.0;
    (Some(ms(join_us)), revoke.map(ms))
}

/// `rows written R in B batches` of a stats line.
fn rows_and_batches(stats: &str) -> (f64, f64) {
    let rows = number_after(stats, "rows written").unwrap_or(f64::NAN);
    let batches = stats
        .split("rows written")
        .nth(1)
        .and_then(|t| t.split(" in ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(f64::NAN);
    (rows, batches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_line_numbers() {
        let s = "events in 10 | counted 10 (late updates 0) | late 0 | duplicates 0 | rejected 0 | lag 0 | \
                 rows written 1234 in 56 batches | last insert 3 ms";
        assert_eq!(rows_and_batches(s), (1234.0, 56.0));
    }

    #[test]
    fn pause_is_join_to_the_last_partition_back() {
        let ev = vec![
            (90, 0, LogEvent::Started(0)),
            (150, 0, LogEvent::Revoked),
            (300, 1, LogEvent::Started(1)),
            (400, 0, LogEvent::Started(0)),
            (500, 0, LogEvent::Started(1)),
        ];
        assert_eq!(rebalance_pause(&ev, 100, 2), (Some(0.3), Some(0.25)));
        assert_eq!(rebalance_pause(&ev, 100, 3), (None, None));
        // A revocation after every partition is back is the next join's.
        let later =
            [ev[0], (300, 1, LogEvent::Started(1)), (400, 0, LogEvent::Started(0)), (450, 0, LogEvent::Revoked)];
        assert_eq!(rebalance_pause(&later, 100, 2), (Some(0.3), None));
    }
}
