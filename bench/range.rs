//! Long-range query bench: `--days` of seeded traffic (`generate
//! --start-time`) through `adstream run --drain` with the default rollups
//! into ClickHouse, then one campaign's daily revenue over the whole range,
//! asked of the 10 s rows (`ad_metrics_10s`) and of the 1 h rollup
//! (`ad_metrics_1h`), interleaved; both answers must be equal, to the cent
//! and beyond (the rollups are exact).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::procstat::run_measured;
use crate::report::{finish, Figure, Run, Target};
use crate::services::{brokers, clickhouse_url, delete_topic, query_tsv, unique};

pub struct RangeArgs {
    pub days: u32,
    pub events: u64,
    pub reps: usize,
    pub adstream: String,
    /// Timed queries per view per rep (the median of each rep is a run).
    pub queries: usize,
    pub keep_topic: bool,
}

pub fn run(args: &RangeArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    let (topic, db) = (unique("bench_range", 0), unique("bench_range", 1));
    let span_s = f64::from(args.days) * 86_400.0;
    let event_rate = args.events as f64 / span_s;
    let start = "2025-11-01T00:00:00Z";
    println!("range: {} events over {} days ({event_rate:.2} events per simulated second)", args.events, args.days);
    let mut gen = Command::new(&args.adstream);
    gen.args(["generate", "--topic", &topic, "--rate", "0", "--seed", "42", "--jitter", "1s"])
        .args(["--start-time", start, "--event-rate", &event_rate.to_string(), "--count", &args.events.to_string()])
        .env("ADSTREAM_BROKERS", brokers());
    let g = run_measured(&mut gen, &out.join("range-generate"), Duration::from_secs(3600), false)?;
    anyhow::ensure!(g.exit_code == 0, "generate failed: see {}", out.join("range-generate.err").display());
    let mut run = Command::new(&args.adstream);
    run.args(["run", "--topic", &topic, "--group", &topic, "--database", &db, "--drain"])
        .env("ADSTREAM_BROKERS", brokers())
        .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
        .env("ADSTREAM_METRICS_ADDR", "off");
    let r = run_measured(&mut run, &out.join("range-run"), Duration::from_secs(3600), false)?;
    anyhow::ensure!(r.exit_code == 0, "run failed: see {}", out.join("range-run.err").display());
    println!("  loaded in {:.1} s (generate) + {:.1} s (run --drain)", g.wall_s, r.wall_s);
    let count = |view: &str| -> anyhow::Result<f64> {
        query_tsv(&format!("SELECT count() FROM {db}.{view}"))?.trim().parse::<f64>().context("count")
    };
    let (rows_10s, rows_1h) = (count("ad_metrics_10s")?, count("ad_metrics_1h")?);
    let parts = |rollup: &str| -> anyhow::Result<f64> {
        query_tsv(&format!("SELECT count() FROM {db}.ad_window_parts WHERE rollup_name = '{rollup}'"))?
            .trim()
            .parse::<f64>()
            .context("count")
    };
    let (parts_10s, parts_1h) = (parts("campaign_id,ad_format:10s")?, parts("campaign_id,ad_format:1h")?);
    println!("  ad_metrics_10s {rows_10s} rows ({parts_10s} stored), ad_metrics_1h {rows_1h} rows ({parts_1h} stored)");
    let query = |view: &str| {
        format!(
            "SELECT toDate(window_start) AS day, sum(revenue), sum(impressions), sum(clicks) FROM {db}.{view} \
             WHERE campaign_id = 'C001' AND window_start >= toDateTime64('{}', 3, 'UTC') \
             AND window_start < toDateTime64('{}', 3, 'UTC') + INTERVAL {} DAY GROUP BY day ORDER BY day",
            &start[..10],
            &start[..10],
            args.days
        )
    };
    let (q10, q1h) = (query("ad_metrics_10s"), query("ad_metrics_1h"));
    let a10 = query_tsv(&q10)?;
    let a1h = query_tsv(&q1h)?;
    anyhow::ensure!(a10 == a1h, "the 1 h rollup's daily revenue differs from the 10 s rows':\n{a10}\nvs\n{a1h}");
    let days = a10.lines().count();
    anyhow::ensure!(days as u32 >= args.days, "{days} days answered, expected {}", args.days);
    let timed = |q: &str| -> anyhow::Result<f64> {
        let t = Instant::now();
        query_tsv(q)?;
        Ok(t.elapsed().as_secs_f64() * 1000.0)
    };
    let mut runs = Vec::new();
    for rep in 0..args.reps {
        let (mut t10, mut t1h) = (Vec::new(), Vec::new());
        for _ in 0..args.queries {
            t10.push(timed(&q10)?);
            t1h.push(timed(&q1h)?);
        }
        let (m10, m1h) = (crate::report::median(t10), crate::report::median(t1h));
        println!(
            "  run {}: daily revenue of C001 over {} days: 10 s rows {m10:.0} ms, 1 h rollup {m1h:.1} ms",
            rep + 1,
            args.days
        );
        let mut run = Run::new();
        run.insert("query_10s_ms", m10);
        run.insert("query_1h_ms", m1h);
        run.insert("speedup", m10 / m1h.max(1e-9));
        run.insert("rows_10s", rows_10s);
        run.insert("rows_1h", rows_1h);
        runs.push(run);
    }
    if !args.keep_topic {
        delete_topic(&topic)?;
    }
    let figures = [
        Figure {
            label: "30-day daily revenue from ad_metrics_10s",
            metric: "query_10s_ms",
            unit: "ms",
            target: Target::None,
        },
        Figure {
            label: "30-day daily revenue from ad_metrics_1h",
            metric: "query_1h_ms",
            unit: "ms",
            target: Target::AtMost(1000.0),
        },
        Figure { label: "speed-up of the 1 h rollup", metric: "speedup", unit: "×", target: Target::None },
        Figure { label: "rows in ad_metrics_10s", metric: "rows_10s", unit: "rows", target: Target::None },
        Figure { label: "rows in ad_metrics_1h", metric: "rows_1h", unit: "rows", target: Target::None },
    ];
    let config = json!({
        "days": args.days, "events": args.events, "event_rate": event_rate, "start": start,
        "queries_per_rep": args.queries, "reps": args.reps, "database": db,
    });
    finish(
        out,
        "range",
        &format!("Long-range query: one campaign's daily revenue over {} days", args.days),
        config,
        &runs,
        &figures,
        json!({ "days_answered": days, "answers_equal": true, "parts_10s": parts_10s, "parts_1h": parts_1h }),
    )
}
