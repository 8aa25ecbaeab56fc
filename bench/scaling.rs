//! Scaling bench: the engine bench's loop (parse + validate + window, one
//! thread, in memory, three partitions) over a grid of key counts and window
//! sizes, to show that the cost per event stays flat as the work grows and
//! that memory follows open windows × keys, never the number of events.
//!
//! Keys are (campaign, format): the generator draws campaigns from
//! `C00001`..`Cnnnnn` (`adstream::generator::Generator::with_campaigns`), so a point with `n`
//! campaigns has `3n` keys. The input of one campaign count is built once
//! (the largest event count needed) and every point uses a prefix of it.
//!
//! Memory is measured with the counting allocator: the peak of heap bytes
//! in use during the run, above what was in use before it (so the input
//! buffer is excluded). That peak holds the engine state (open windows'
//! dense cell arrays and dedup id sets), the batch being filled, and this
//! bench's own check map (the latest row of each cell not yet final, so
//! itself bounded by open cells). The memory check runs the biggest point
//! again with twice the events: if anything grew with events, it would
//! double.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use adstream::engine::Processor;
use adstream::engine::DEFAULT_MAX_EVENT_BYTES;

use crate::engine::build_input;
use adstream::engine::WindowConfig;
use anyhow::Context as _;
use serde_json::{json, Value};

use crate::procstat::{reset_peak_rss, self_status_kb, thread_cpu_secs};
use crate::report::{machine, median, Run};

pub struct ScalingArgs {
    /// Events per point.
    pub events: u64,
    /// Events of the memory check's second run (the biggest point again).
    pub memory_events: u64,
    pub campaigns: Vec<u32>,
    pub window_s: Vec<u32>,
    pub reps: usize,
    pub event_rate: f64,
    pub flush_every: u64,
    pub seed: u64,
}

/// ns/event at the biggest point ÷ at the smallest, at most this to call the
/// cost flat. Runs of the same build differ by up to ±20 % on this shared
/// machine (BENCHMARKS.md), so two points measured apart can differ by about
/// 1.5× from noise alone; anything above that is a real trend.
const FLAT_LIMIT: f64 = 1.5;
/// Heap peak with 2× the events ÷ with 1×, at most this to say memory does
/// not grow with events (hash-set capacities round to powers of two, so a
/// window with a few more events can take a bigger table).
const MEMORY_LIMIT: f64 = 1.25;
const ALLOWED_LATENESS_US: i64 = 5_000_000;
/// Events between samples of open windows and dedup bytes (a few ns each).
const SAMPLE_EVERY: u64 = 1000;

/// One point of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    campaigns: u32,
    window_s: u32,
    events: u64,
}

pub fn run(args: &ScalingArgs, out: &Path) -> anyhow::Result<Value> {
    for &w in &args.window_s {
        anyhow::ensure!(w > 0 && 60 % w == 0, "window size {w} s does not divide 60 s");
    }
    anyhow::ensure!(!args.campaigns.is_empty() && !args.window_s.is_empty(), "no points to run");
    let (min_c, max_c) = (*args.campaigns.iter().min().unwrap_or(&1), *args.campaigns.iter().max().unwrap_or(&1));
    let (min_w, max_w) = (*args.window_s.iter().min().unwrap_or(&1), *args.window_s.iter().max().unwrap_or(&1));
    let mut campaigns = args.campaigns.clone();
    campaigns.sort_unstable();
    campaigns.dedup();
    let mut windows = args.window_s.clone();
    windows.sort_unstable();
    windows.dedup();

    // Every point, then the memory check: the biggest key count at the
    // smallest and the largest window, with `memory_events`.
    let mut points: Vec<Point> = Vec::new();
    for &c in &campaigns {
        for &w in &windows {
            points.push(Point { campaigns: c, window_s: w, events: args.events });
        }
    }
    let mem_points: Vec<Point> = [min_w, max_w]
        .iter()
        .map(|&w| Point { campaigns: max_c, window_s: w, events: args.memory_events })
        .filter(|p| p.events != args.events)
        .collect::<Vec<_>>();
    let mut mem_points = mem_points;
    mem_points.dedup();

    // The reps go round the whole grid (rep 1 of every point, then rep 2…)
    // rather than one point at a time: this machine's noise comes in bursts
    // of a minute or so, and a burst should cost each point one run (the
    // median drops it), not all the runs of one point.
    let mut results: Vec<(Point, Vec<Run>, Value)> = Vec::new();
    for &c in &campaigns {
        for p in points.iter().chain(&mem_points).filter(|p| p.campaigns == c) {
            results.push((*p, Vec::new(), Value::Null));
        }
    }
    for rep in 0..args.reps {
        for &c in &campaigns {
            let n = results.iter().filter(|r| r.0.campaigns == c).map(|r| r.0.events).max().unwrap_or(0);
            let t = Instant::now();
            let (buf, spans) = build_input(n, args.event_rate, args.seed, Some(c));
            if rep == 0 {
                println!(
                    "scaling: {c} campaigns ({} keys): {n} events, {:.1} MiB of JSON built in {:.1} s",
                    3 * c,
                    buf.len() as f64 / 1048576.0,
                    t.elapsed().as_secs_f64()
                );
            }
            for (p, runs, check) in results.iter_mut().filter(|r| r.0.campaigns == c) {
                let (run, chk) = once(&buf, &spans[..p.events as usize], *p, args)?;
                runs.push(run);
                *check = chk;
            }
        }
        println!("scaling: round {} of {} done", rep + 1, args.reps);
    }
    for (p, runs, _) in &results {
        let m = |k: &str| median(runs.iter().filter_map(|r| r.get(k).copied()).collect());
        println!(
            "  {:>6} campaigns, {:>2} s windows, {:>8} events: {:>5.2} M events/s per core, {:>6.1} ns/event, \
             heap peak {:>7.1} MiB",
            p.campaigns,
            p.window_s,
            p.events,
            m("events_per_s_per_core") / 1e6,
            m("ns_per_event"),
            m("heap_peak_mb")
        );
    }

    let find = |p: Point| results.iter().find(|r| r.0 == p);
    let smallest = Point { campaigns: min_c, window_s: min_w, events: args.events };
    let largest = Point { campaigns: max_c, window_s: max_w, events: args.events };
    let (Some(small), Some(large)) = (find(smallest), find(largest)) else {
        anyhow::bail!("smallest or largest point missing");
    };
    // Per-rep ratios (rep i of one point against rep i of the other), whose
    // median is the figure.
    let ratio = |a: &[Run], b: &[Run], k: &str| -> Vec<f64> {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.get(k).copied().unwrap_or(f64::NAN) / y.get(k).copied().unwrap_or(f64::NAN))
            .collect()
    };
    let flat_runs = ratio(&large.1, &small.1, "ns_per_event");
    let flat = median(flat_runs.clone());
    let point_medians: Vec<f64> =
        results.iter().filter(|r| r.0.events == args.events).map(|r| median(col(&r.1, "ns_per_event"))).collect();
    let spread =
        point_medians.iter().cloned().fold(f64::MIN, f64::max) / point_medians.iter().cloned().fold(f64::MAX, f64::min);

    let mut mem_checks = Vec::new();
    for mp in &mem_points {
        let base = Point { events: args.events, ..*mp };
        if let (Some(a), Some(b)) = (find(*mp), find(base)) {
            let r = ratio(&a.1, &b.1, "heap_peak_mb");
            mem_checks.push((base, *mp, median(r.clone()), r));
        }
    }
    let mem_worst = mem_checks.iter().map(|m| m.2).fold(f64::NAN, f64::max);
    let mem_worst_runs: Vec<f64> = mem_checks
        .iter()
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|m| m.3.clone())
        .unwrap_or_else(|| vec![f64::NAN; args.reps]);

    print_table(&results, args.reps);
    let pass = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!(
        "\n  flatness: ns/event at {} campaigns × {} s ÷ at {} campaigns × {} s = {:.2} (limit ≤ {FLAT_LIMIT}: {})",
        max_c,
        max_w,
        min_c,
        min_w,
        flat,
        pass(flat <= FLAT_LIMIT)
    );
    println!(
        "  spread:   slowest point ÷ fastest point over the whole grid = {:.2} (limit ≤ {FLAT_LIMIT}: {})",
        spread,
        pass(spread <= FLAT_LIMIT)
    );
    for (a, b, r, _) in &mem_checks {
        println!(
            "  memory:   heap peak at {} campaigns × {} s with {} events ÷ with {} events = {:.2} \
             (limit ≤ {MEMORY_LIMIT}: {})",
            a.campaigns,
            a.window_s,
            b.events,
            a.events,
            r,
            pass(*r <= MEMORY_LIMIT)
        );
    }

    let figure = |label: &str, metric: &str, runs: &[f64], limit: f64| {
        let m = median(runs.to_vec());
        json!({"label": label, "metric": metric, "unit": "×", "median": m, "runs": runs,
               "target": {"at_most": limit}, "target_met": m <= limit})
    };
    let mut figures =
        vec![figure("scaling: ns/event biggest ÷ smallest point", "flatness_ratio", &flat_runs, FLAT_LIMIT)];
    if !mem_checks.is_empty() {
        figures.push(figure("scaling: heap peak at 2× events ÷ 1×", "memory_ratio", &mem_worst_runs, MEMORY_LIMIT));
    }
    let top_runs: Vec<Value> = (0..args.reps)
        .map(|i| json!({"flatness_ratio": flat_runs.get(i), "memory_ratio": mem_worst_runs.get(i)}))
        .collect();
    let doc = json!({
        "bench": "scaling",
        "title": "Scaling: engine cost and memory vs key count and window size, 1 thread, in memory",
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": machine(),
        "config": {
            "events": args.events, "memory_events": args.memory_events, "campaigns": campaigns,
            "window_s": windows, "reps": args.reps, "event_rate": args.event_rate,
            "flush_every": args.flush_every, "seed": args.seed, "partitions": 3,
            "allowed_lateness_s": ALLOWED_LATENESS_US / 1_000_000, "flat_limit": FLAT_LIMIT,
            "memory_limit": MEMORY_LIMIT,
        },
        "runs": top_runs,
        "figures": figures,
        "flatness": {"smallest": point_json(smallest), "largest": point_json(largest), "ratio": flat,
                     "limit": FLAT_LIMIT, "pass": flat <= FLAT_LIMIT, "grid_spread": spread},
        "memory": mem_checks.iter().map(|(a, b, r, rs)| json!({"point": point_json(*a), "events": b.events,
                     "ratio": r, "runs": rs, "limit": MEMORY_LIMIT, "pass": *r <= MEMORY_LIMIT})).collect::<Vec<_>>(),
        "memory_worst_ratio": mem_worst,
        "points": results.iter().map(|(p, runs, check)| {
            let medians: serde_json::Map<String, Value> = runs.first().map(|r| r.keys().map(|k| (k.to_string(), json!(median(col(runs, k))))).collect()).unwrap_or_default();
            json!({"point": point_json(*p), "median": medians, "runs": runs, "check": check})
        }).collect::<Vec<_>>(),
    });
    let path = out.join("scaling.json");
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("  -> {}", path.display());
    Ok(doc)
}

fn point_json(p: Point) -> Value {
    json!({"campaigns": p.campaigns, "keys": 3 * p.campaigns, "window_s": p.window_s, "events": p.events})
}

fn col(runs: &[Run], k: &str) -> Vec<f64> {
    runs.iter().filter_map(|r| r.get(k).copied()).collect()
}

fn print_table(results: &[(Point, Vec<Run>, Value)], reps: usize) {
    println!("\nScaling: parse + validate + window, 1 thread, in memory (median of {reps} runs)");
    println!(
        "  {:>9} {:>6} {:>7} {:>9} {:>14} {:>9} {:>9} {:>12} {:>7} {:>11} {:>10} {:>9} {:>9}",
        "campaigns",
        "keys",
        "window",
        "events",
        "events/s/core",
        "ns/event",
        "rows/ev",
        "ns/(ev+row)",
        "open w.",
        "cells",
        "heap MiB",
        "dedup MiB",
        "RSS+ MiB"
    );
    for (p, runs, _) in results {
        let m = |k: &str| median(col(runs, k));
        println!(
            "  {:>9} {:>6} {:>6}s {:>9} {:>14.0} {:>9.1} {:>9.3} {:>12.1} {:>7.0} {:>11.0} {:>10.2} {:>9.2} {:>9.1}",
            p.campaigns,
            3 * p.campaigns,
            p.window_s,
            p.events,
            m("events_per_s_per_core"),
            m("ns_per_event"),
            m("rows_per_event"),
            m("ns_per_event_or_row"),
            m("open_windows"),
            m("open_cells"),
            m("heap_peak_mb"),
            m("dedup_mb"),
            m("state_rss_mb"),
        );
    }
}

fn once(buf: &[u8], spans: &[(usize, usize)], p: Point, args: &ScalingArgs) -> anyhow::Result<(Run, Value)> {
    let n = spans.len() as u64;
    let mut counts = adstream::engine::Counts::default();
    // Every message carries a Kafka timestamp in production: the future
    // guard's comparison is part of the measured work.
    let produced = Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64);
    let cfg = WindowConfig::new(i64::from(p.window_s) * 1_000_000, ALLOWED_LATENESS_US, 3_600_000_000);
    let heap_before = crate::alloc::live();
    crate::alloc::reset_peak();
    let rss_before = self_status_kb("VmRSS").unwrap_or(0);
    let peak_reset = reset_peak_rss();
    // The campaign × format rollup alone: this bench measures how the
    // engine scales with keys and window sizes (bench engine compares the
    // rollup sets).
    let rollups = vec![adstream::engine::Rollup::new(adstream::engine::Dims::CAMPAIGN_FORMAT, cfg.size_us)];
    let mut proc = Processor::with_rollups(cfg, rollups, DEFAULT_MAX_EVENT_BYTES).map_err(anyhow::Error::msg)?;
    for part in 0..3 {
        proc.init_partition(part, None);
    }
    // The check: every event must be in exactly one row that downstream
    // keeps. Final rows carry a cell's total and come once; a cell's latest
    // non-final row is kept only until its final row arrives, so this map
    // stays within the open cells (else it would itself grow with events).
    let mut open_rows: HashMap<(i64, adstream::engine::SegmentKey, i32), (u64, u64)> = HashMap::new();
    let (mut in_final, mut rows, mut final_rows) = (0u64, 0u64, 0u64);
    let (mut max_open, mut max_dedup) = (0u64, 0u64);
    // CPU time spent in the check, taken out of the engine's figure: at
    // 10,000 campaigns × 1 s windows there is more than one row per event,
    // and this map's work per row is the bench's, not the engine's.
    let mut check_cpu = 0.0;
    let mut keep = |b: adstream::engine::Batch| {
        counts.add(&b.counts);
        let c = thread_cpu_secs();
        for r in b.rows {
            rows += 1;
            let k = (r.row.window_start_us, r.row.key, r.partition);
            let events = r.row.totals.impressions + r.row.totals.clicks;
            if r.row.is_final {
                open_rows.remove(&k);
                in_final += events;
                final_rows += 1;
            } else {
                let e = open_rows.entry(k).or_insert((0, 0));
                if r.row.version >= e.0 {
                    *e = (r.row.version, events);
                }
            }
        }
        check_cpu += thread_cpu_secs() - c;
    };
    let c0 = thread_cpu_secs();
    let t0 = Instant::now();
    let mut offsets = [0i64; 3];
    for (i, &(at, len)) in spans.iter().enumerate() {
        let part = i % 3;
        let payload = &buf[at..at + len];
        // The generator keys each record by its event id (bytes 13..49).
        proc.process(part as i32, offsets[part], produced, payload.get(13..49), payload);
        offsets[part] += 1;
        // Sampled between batches too: at batch boundaries alone, a flush
        // interval in step with the window grid would always see the
        // moment just after a window closed.
        if (i as u64 + 1).is_multiple_of(SAMPLE_EVERY) {
            let f = proc.footprint();
            let (open, dedup) = (f.open_windows, f.dedup_bytes);
            max_open = max_open.max(open as u64);
            max_dedup = max_dedup.max(dedup as u64);
        }
        if (i as u64 + 1).is_multiple_of(args.flush_every) {
            keep(proc.take_batch());
        }
    }
    proc.fire_all();
    keep(proc.take_batch());
    let wall = t0.elapsed().as_secs_f64() - check_cpu;
    let cpu = thread_cpu_secs() - c0 - check_cpu;
    let heap_peak = crate::alloc::peak().saturating_sub(heap_before);
    let peak_kb = self_status_kb("VmHWM").unwrap_or(0);
    let counted = counts.counted;
    let in_rows = in_final + open_rows.values().map(|v| v.1).sum::<u64>();
    anyhow::ensure!(counted == n, "scaling: counted {counted} of {n} events ({counts:?})");
    anyhow::ensure!(in_rows == n, "scaling: window rows hold {in_rows} events, expected {n}");
    let cells = final_rows + open_rows.len() as u64;
    drop(proc);
    let mut run = Run::new();
    run.insert("events", n as f64);
    run.insert("wall_s", wall);
    run.insert("cpu_s", cpu);
    run.insert("events_per_s_per_core", n as f64 / cpu.max(1e-9));
    run.insert("ns_per_event", cpu * 1e9 / n as f64);
    run.insert("rows_per_event", rows as f64 / n as f64);
    // The engine's work is per event plus per output row; when rows per
    // event approach 1 (many keys, short windows), this stays flat while
    // ns/event does not.
    run.insert("ns_per_event_or_row", cpu * 1e9 / (n + rows) as f64);
    run.insert("check_cpu_s", check_cpu);
    run.insert("open_windows", max_open as f64);
    run.insert("open_cells", max_open as f64 * 3.0 * f64::from(p.campaigns));
    run.insert("heap_peak_mb", heap_peak as f64 / 1048576.0);
    run.insert("dedup_mb", max_dedup as f64 / 1048576.0);
    if peak_reset {
        run.insert("state_rss_mb", peak_kb.saturating_sub(rss_before) as f64 / 1024.0);
    }
    let check = json!({
        "events": n, "counted": counted, "rejected": counts.rejected_total(), "late": counts.late,
        "duplicates": counts.duplicates, "rows_emitted": rows, "cells_touched": cells,
        "events_in_rows": in_rows,
    });
    Ok((run, check))
}
