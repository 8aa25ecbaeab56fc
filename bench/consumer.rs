//! Consumer end-to-end bench, with the Spark Structured Streaming peer.
//!
//! One topic (3 partitions) is preloaded with seeded events. Then, per run,
//! `adstream run --drain` consumes it from the start with a fresh group into
//! a fresh ClickHouse database; the run is timed from spawn to exit, and
//! exits once every partition is read to its high watermark and the last
//! batch is acknowledged by ClickHouse (and the DLQ) and committed. Each
//! adstream run is followed by a Spark run over the same topic, so the
//! ratios compare neighbours under the same machine load. Spark's windows
//! are checked against the ones adstream wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::procstat::run_measured;
use crate::report::{finish, Figure, Run, Target};
use crate::services::{brokers, clickhouse_url, delete_topic, number_after, preload, query_tsv, unique};

pub struct ConsumerArgs {
    pub events: u64,
    pub reps: usize,
    pub adstream: String,
    /// Simulated events per second of event time: 10,000 puts 100,000
    /// events in each 10 s window.
    pub event_rate: f64,
    pub spark: Option<SparkArgs>,
    pub keep_topic: bool,
}

pub struct SparkArgs {
    pub python: String,
    pub job: PathBuf,
    pub jars: String,
}

/// (window start s, campaign, format).
type WindowKey = (i64, String, String);
/// (impressions, clicks, revenue µUSD, ctr, ecpm).
type Numbers = (u64, u64, i64, Option<f64>, Option<f64>);
type Windows = BTreeMap<WindowKey, Numbers>;

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
        if let Some(p50) = number_after(&stats, "due-to-visible p50") {
            run.insert("latency_p50_ms", p50);
        }
        if let Some(p99) = number_after(&stats, "ms p99") {
            run.insert("latency_p99_ms", p99);
        }
        println!(
            "  adstream run {}: {:.1} s, {:.0} events/s, {:.2} CPU s/M events, peak RSS {:.0} MiB, due-to-visible p50 {} ms p99 {} ms",
            rep + 1,
            usage.wall_s,
            n / usage.wall_s,
            usage.cpu_s / n * 1e6,
            usage.peak_rss_mb,
            run.get("latency_p50_ms").copied().unwrap_or(f64::NAN),
            run.get("latency_p99_ms").copied().unwrap_or(f64::NAN),
        );
        let mut check = json!({ "database": db, "counted": counted, "events_in_clickhouse": in_ch });
        if let Some(spark) = &args.spark {
            spark_run(spark, args, out, topic, &db, rep, &mut run, &mut check)?;
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
            label: "consumer CPU s per million events",
            metric: "cpu_s_per_million",
            unit: "CPU s",
            target: Target::None,
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
    if args.spark.is_some() {
        figures.extend([
            Figure {
                label: "Spark events/s (incl. JVM start)",
                metric: "spark_events_per_s",
                unit: "events/s",
                target: Target::None,
            },
            Figure {
                label: "Spark events/s (query only)",
                metric: "spark_query_events_per_s",
                unit: "events/s",
                target: Target::None,
            },
            Figure {
                label: "Spark CPU s per million events",
                metric: "spark_cpu_s_per_million",
                unit: "CPU s",
                target: Target::None,
            },
            Figure {
                label: "Spark peak RSS (process tree)",
                metric: "spark_peak_rss_mb",
                unit: "MiB",
                target: Target::None,
            },
            Figure {
                label: "ratio events/s adstream / Spark",
                metric: "ratio_events_per_s",
                unit: "×",
                target: Target::None,
            },
            Figure {
                label: "ratio events per CPU s adstream / Spark",
                metric: "ratio_events_per_cpu_s",
                unit: "×",
                target: Target::AtLeast(20.0),
            },
            Figure {
                label: "Spark windows equal adstream's (1 = yes)",
                metric: "spark_windows_equal",
                unit: "",
                target: Target::AtLeast(1.0),
            },
        ]);
    }
    let config = json!({
        "events": args.events, "reps": args.reps, "event_rate": args.event_rate, "partitions": 3, "jitter_s": 1,
        "brokers": brokers(), "clickhouse": clickhouse_url(), "topic": topic, "spark": args.spark.is_some(),
        "last_database": last_db,
    });
    finish(
        out,
        "consumer",
        "Consumer end to end: Kafka → adstream run --drain → ClickHouse",
        config,
        &runs,
        &figures,
        json!(checks),
    )
}

#[allow(clippy::too_many_arguments)]
fn spark_run(
    spark: &SparkArgs,
    args: &ConsumerArgs,
    out: &Path,
    topic: &str,
    db: &str,
    rep: usize,
    run: &mut Run,
    check: &mut Value,
) -> anyhow::Result<()> {
    let n = args.events as f64;
    let result = out.join(format!("spark-{rep}.jsonl"));
    let checkpoint = out.join(format!("spark-checkpoint-{rep}"));
    let _ = std::fs::remove_dir_all(&checkpoint);
    let log = out.join(format!("spark-{rep}"));
    let usage = run_measured(
        Command::new(&spark.python)
            .arg(&spark.job)
            .args(["--brokers", &brokers(), "--topic", topic, "--jars", &spark.jars])
            .arg("--out")
            .arg(&result)
            .arg("--checkpoint")
            .arg(&checkpoint),
        &log,
        Duration::from_secs(3600),
        true,
    )?;
    anyhow::ensure!(
        usage.exit_code == 0,
        "Spark job exited {}: see {}",
        usage.exit_code,
        log.with_extension("err").display()
    );
    let stdout = std::fs::read_to_string(log.with_extension("out")).unwrap_or_default();
    let summary: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SPARK_SUMMARY "))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Null);
    let input_rows = summary["input_rows"].as_f64().unwrap_or(f64::NAN);
    let query_s = summary["query_s"].as_f64().unwrap_or(f64::NAN);
    let ours = clickhouse_windows(db)?;
    let theirs = spark_windows(&result)?;
    let diffs = compare(&ours, &theirs);
    run.insert("spark_wall_s", usage.wall_s);
    run.insert("spark_events_per_s", n / usage.wall_s);
    run.insert("spark_query_events_per_s", n / query_s);
    run.insert("spark_cpu_s", usage.cpu_s);
    run.insert("spark_cpu_s_per_million", usage.cpu_s / n * 1e6);
    run.insert("spark_peak_rss_mb", usage.peak_rss_mb);
    run.insert("spark_windows_equal", if diffs.is_empty() && input_rows == n { 1.0 } else { 0.0 });
    let ours_rate = run.get("events_per_s").copied().unwrap_or(f64::NAN);
    let ours_eff = run.get("events_per_cpu_s").copied().unwrap_or(f64::NAN);
    run.insert("ratio_events_per_s", ours_rate / (n / usage.wall_s));
    run.insert("ratio_events_per_cpu_s", ours_eff / (n / usage.cpu_s.max(1e-9)));
    println!(
        "  Spark run {}: {:.1} s ({:.1} s in the query), {:.0} events/s, {:.2} CPU s/M events, peak RSS {:.0} MiB; \
         {} windows compared, {} differ",
        rep + 1,
        usage.wall_s,
        query_s,
        n / usage.wall_s,
        usage.cpu_s / n * 1e6,
        usage.peak_rss_mb,
        ours.len().max(theirs.len()),
        diffs.len()
    );
    for d in diffs.iter().take(5) {
        println!("    {d}");
    }
    check["spark"] = json!({
        "input_rows": input_rows, "windows_adstream": ours.len(), "windows_spark": theirs.len(),
        "differences": diffs.len(), "first_differences": diffs.iter().take(10).collect::<Vec<_>>(), "summary": summary,
    });
    Ok(())
}

/// `"12.3456"` → 12_345_600 (decimal text to micro-units, exactly).
fn micros(s: &str) -> Option<i64> {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = int.parse::<i64>().ok()? * 1_000_000 + format!("{frac:0<6}").parse::<i64>().ok()?;
    Some(if neg { -v } else { v })
}

fn opt_f64(s: &str) -> Option<f64> {
    s.parse().ok()
}

pub fn clickhouse_windows(db: &str) -> anyhow::Result<Windows> {
    let text = query_tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), campaign_id, ad_format, impressions, clicks, toString(revenue), \
         ctr, ecpm FROM {db}.ad_metrics_10s"
    ))?;
    let mut w = Windows::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        anyhow::ensure!(f.len() == 8, "unexpected row {l:?}");
        w.insert(
            (f[0].parse()?, f[1].to_string(), f[2].to_string()),
            (f[3].parse()?, f[4].parse()?, micros(f[5]).context("revenue")?, opt_f64(f[6]), opt_f64(f[7])),
        );
    }
    Ok(w)
}

/// Spark's output: every micro-batch's updated rows; a window's last
/// update (highest batch) is its final value.
fn spark_windows(path: &Path) -> anyhow::Result<Windows> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut latest: BTreeMap<WindowKey, (i64, Numbers)> = BTreeMap::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).with_context(|| format!("Spark row {l:?}"))?;
        let key = (
            v["window_start"].as_i64().context("window_start")?,
            v["campaign_id"].as_str().context("campaign_id")?.to_string(),
            v["ad_format"].as_str().context("ad_format")?.to_string(),
        );
        let vals = (
            v["impressions"].as_u64().context("impressions")?,
            v["clicks"].as_u64().context("clicks")?,
            micros(v["revenue"].as_str().context("revenue")?).context("revenue")?,
            v["ctr"].as_f64(),
            v["ecpm"].as_f64(),
        );
        let batch = v["batch"].as_i64().unwrap_or(0);
        let e = latest.entry(key).or_insert((batch, vals));
        if batch >= e.0 {
            *e = (batch, vals);
        }
    }
    Ok(latest.into_iter().map(|(k, (_, v))| (k, v)).collect())
}

fn compare(ours: &Windows, theirs: &Windows) -> Vec<String> {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    };
    let mut diffs = Vec::new();
    for (k, a) in ours {
        match theirs.get(k) {
            None => diffs.push(format!("{k:?}: only adstream has it: {a:?}")),
            Some(b) if a.0 != b.0 || a.1 != b.1 || a.2 != b.2 || !close(a.3, b.3) || !close(a.4, b.4) => {
                diffs.push(format!("{k:?}: adstream {a:?} != Spark {b:?}"))
            }
            Some(_) => {}
        }
    }
    for (k, b) in theirs {
        if !ours.contains_key(k) {
            diffs.push(format!("{k:?}: only Spark has it: {b:?}"));
        }
    }
    diffs
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_text_to_micros() {
        assert_eq!(super::micros("12.3456"), Some(12_345_600));
        assert_eq!(super::micros("0"), Some(0));
        assert_eq!(super::micros("-0.000001"), Some(-1));
        assert_eq!(super::micros("1.0000001"), None);
    }
}
