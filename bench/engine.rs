//! Engine bench: parse + validate + window from an in-memory buffer of real
//! generator events (JSON bytes exactly as on the wire), one thread, no
//! Kafka, no ClickHouse. The same `Processor` the consumer runs, fed the way
//! the consume loop feeds it (three partitions, a batch taken every
//! `flush_every` events).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use adstream::engine::WindowConfig;
use adstream::engine::DEFAULT_MAX_EVENT_BYTES;
use adstream::engine::{Dims, Processor, Rollup};
use adstream::generator::{Generator, GeneratorConfig, DEFAULT_SEEDED_START_US};
use serde_json::json;

use crate::procstat::{reset_peak_rss, self_status_kb, thread_cpu_secs};
use crate::report::{finish, Figure, Run, Target};

pub struct EngineArgs {
    pub events: u64,
    pub reps: usize,
    /// Simulated events per second of event time (sets events per window).
    pub event_rate: f64,
    pub flush_every: u64,
    pub seed: u64,
    /// Over how many campaigns (default: the origin's five).
    pub campaigns: Option<u32>,
    /// The segmented traffic model (campaign ids `C001`.. then), else the
    /// seed model.
    pub segmented: bool,
}

/// The rollup sets measured side by side: (report name, title, rollups).
fn rollup_sets() -> Vec<(&'static str, &'static str, Vec<Rollup>)> {
    const S: i64 = 1_000_000;
    vec![
        ("engine", "campaign × format 10 s only", vec![Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S)]),
        (
            "engine-segments",
            "campaign × format and segments, 10 s",
            vec![Rollup::new(Dims::CAMPAIGN_FORMAT, 10 * S), Rollup::new(Dims::SEGMENT, 10 * S)],
        ),
        ("engine-all-rollups", "the five default rollups (10 s, 1 m, 1 h)", Rollup::defaults(10 * S)),
    ]
}

/// The wire bytes of `n` seeded events, back to back, and each one's span;
/// over `campaigns` campaigns (`C00001`..) instead of the usual C001–C005
/// when given (the scaling bench).
pub fn build_input(n: u64, event_rate: f64, seed: u64, campaigns: Option<u32>) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut g = seeded(event_rate, seed);
    if let Some(c) = campaigns {
        g = g.with_campaigns(c);
    }
    encode(g, n)
}

/// A seeded generator with 1 s of jitter.
fn seeded(event_rate: f64, seed: u64) -> Generator {
    Generator::new(GeneratorConfig {
        seed: Some(seed),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate,
        jitter_us: 1_000_000,
    })
}

/// `n` events of `g`, back to back, and each one's span.
fn encode(mut g: Generator, n: u64) -> (Vec<u8>, Vec<(usize, usize)>) {
    let (mut key, mut json) = (Vec::new(), Vec::new());
    let mut buf = Vec::with_capacity(n as usize * 260);
    let mut spans = Vec::with_capacity(n as usize);
    for _ in 0..n {
        g.next_into(|| 0, &mut key, &mut json);
        spans.push((buf.len(), json.len()));
        buf.extend_from_slice(&json);
    }
    (buf, spans)
}

/// [`build_input`] from the segmented traffic model over `campaigns`
/// campaigns.
fn build_segmented_input(n: u64, event_rate: f64, seed: u64, campaigns: u32) -> (Vec<u8>, Vec<(usize, usize)>) {
    use adstream::generator::{Traffic, TrafficModel};
    encode(seeded(event_rate, seed).with_traffic(Traffic::new(TrafficModel::Segmented, campaigns)), n)
}

pub fn run(args: &EngineArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let (buf, spans) = if args.segmented {
        build_segmented_input(args.events, args.event_rate, args.seed, args.campaigns.unwrap_or(5))
    } else {
        build_input(args.events, args.event_rate, args.seed, args.campaigns)
    };
    println!(
        "engine: {} events, {:.1} MiB of JSON built in {:.1} s",
        args.events,
        buf.len() as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let sets = rollup_sets();
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); sets.len()];
    let mut checks: Vec<Vec<serde_json::Value>> = vec![Vec::new(); sets.len()];
    let mut parse_runs: Vec<Run> = Vec::new();
    // The sets interleaved in every rep, so a burst of load from the
    // neighbours costs each set one run, which the median drops.
    for rep in 0..args.reps {
        for (i, (_, title, rollups)) in sets.iter().enumerate() {
            let (run, check) = once(&buf, &spans, args, rollups)?;
            println!(
                "  run {} [{title}]: {:.0} events/s per core, {:.1} ns/event, {:.2} allocations/event, {:.0} bytes per open cell",
                rep + 1,
                run["events_per_s_per_core"],
                run["ns_per_event"],
                run["allocs_per_event"],
                run["state_bytes_per_cell"]
            );
            runs[i].push(run);
            checks[i].push(check);
        }
        let f = parse_once(&buf, &spans)?;
        println!(
            "  run {} [parse alone]: serde_json skimming each message {:.1} ns/event, adstream's parse and validation {:.1} ns/event",
            rep + 1,
            f["serde_skim_ns_per_event"],
            f["parse_ns_per_event"]
        );
        parse_runs.push(f);
    }
    let figures = [
        Figure {
            label: "engine events/s per core",
            metric: "events_per_s_per_core",
            unit: "events/s",
            target: Target::AtLeast(2e6),
        },
        Figure { label: "engine ns/event (CPU)", metric: "ns_per_event", unit: "ns", target: Target::AtMost(500.0) },
        Figure {
            label: "heap allocations per event",
            metric: "allocs_per_event",
            unit: "allocs",
            target: Target::AtMost(0.01),
        },
        Figure {
            label: "heap bytes allocated per event",
            metric: "alloc_bytes_per_event",
            unit: "B",
            target: Target::None,
        },
        Figure {
            label: "engine state peak RSS (excl. input)",
            metric: "state_rss_mb",
            unit: "MiB",
            target: Target::None,
        },
        Figure { label: "process peak RSS (incl. input)", metric: "peak_rss_mb", unit: "MiB", target: Target::None },
        Figure { label: "open cells at the peak", metric: "max_open_cells", unit: "cells", target: Target::None },
        Figure {
            label: "engine heap bytes per open cell",
            metric: "state_bytes_per_cell",
            unit: "B",
            target: Target::None,
        },
    ];
    let mut results = Vec::new();
    for (i, (name, title, rollups)) in sets.iter().enumerate() {
        let names: Vec<String> = rollups.iter().map(Rollup::name).collect();
        let config = json!({
            "events": args.events, "reps": args.reps, "event_rate": args.event_rate, "flush_every": args.flush_every,
            "seed": args.seed, "input_bytes": buf.len(), "partitions": 3, "window_s": 10, "allowed_lateness_s": 5,
            "campaigns": args.campaigns.unwrap_or(5), "rollups": names,
            "traffic": if args.segmented { "segmented" } else { "seed" },
        });
        let name = if args.segmented || args.campaigns.is_some() {
            format!("{name}-{}c-{}", args.campaigns.unwrap_or(5), if args.segmented { "segmented" } else { "seed" })
        } else {
            name.to_string()
        };
        results.push(finish(
            out,
            &name,
            &format!("Engine: parse + validate + window, in memory, 1 thread; {title}"),
            config,
            &runs[i],
            &figures,
            json!(checks[i]),
        )?);
    }
    let parse_figures = [
        Figure {
            label: "serde_json skimming each message (ns/event)",
            metric: "serde_skim_ns_per_event",
            unit: "ns",
            target: Target::None,
        },
        Figure {
            label: "adstream parse + validate (ns/event)",
            metric: "parse_ns_per_event",
            unit: "ns",
            target: Target::None,
        },
    ];
    finish(
        out,
        "engine-parse",
        "Parse alone: the same messages, parsed but not counted, 1 thread",
        json!({ "events": args.events, "reps": args.reps, "input_bytes": buf.len() }),
        &parse_runs,
        &parse_figures,
        json!([]),
    )?;
    let median_of = |runs: &[Run], metric: &str| crate::report::median(runs.iter().map(|r| r[metric]).collect());
    let ns = |i: usize| median_of(&runs[i], "ns_per_event");
    let (skim, parse) =
        (median_of(&parse_runs, "serde_skim_ns_per_event"), median_of(&parse_runs, "parse_ns_per_event"));
    println!(
        "\nparse beside the engine (median ns/event): serde_json only skimming a message {skim:.1}; adstream's parse + validate {parse:.1} ({:.2}× the skim); the whole engine, campaign × format {:.1} (parse {:.0} %), five rollups {:.1} (parse {:.0} %)",
        parse / skim,
        ns(0),
        100.0 * parse / ns(0),
        ns(2),
        100.0 * parse / ns(2)
    );
    println!(
        "\nrollups side by side (median ns/event): campaign × format {:.1}; + segments {:.1} ({:.2}×, goal ≤ 1.3×); all five {:.1} ({:.2}×, goal ≤ 1.6×)",
        ns(0),
        ns(1),
        ns(1) / ns(0),
        ns(2),
        ns(2) / ns(0)
    );
    Ok(results.swap_remove(0))
}

fn once(
    buf: &[u8],
    spans: &[(usize, usize)],
    args: &EngineArgs,
    rollups: &[Rollup],
) -> anyhow::Result<(Run, serde_json::Value)> {
    let n = spans.len() as u64;
    let mut counts = adstream::engine::Counts::default();
    // Every message carries a Kafka timestamp in production: the future
    // guard's comparison is part of the measured work.
    let produced = Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64);
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut proc =
        Processor::with_rollups(cfg, rollups.to_vec(), DEFAULT_MAX_EVENT_BYTES).map_err(anyhow::Error::msg)?;
    let mut max_open_cells = 0usize;
    for p in 0..3 {
        proc.init_partition(p, None);
    }
    // Latest row per (rollup, window, key, partition): what ClickHouse
    // would keep; every rollup's totals must add up to every event.
    let mut latest: BTreeMap<(u8, i64, adstream::engine::SegmentKey, i32), (u64, u64)> = BTreeMap::new();
    // The check's own CPU time and allocations (its map grows with the
    // rows: many with sparse keys) are the bench's, not the engine's: they
    // are taken out of the figures.
    let (mut check_cpu, mut check_allocs, mut check_bytes) = (0.0, 0u64, 0u64);
    let mut keep = |b: adstream::engine::Batch| {
        let (c, (a, by)) = (thread_cpu_secs(), crate::alloc::counters());
        counts.add(&b.counts);
        max_open_cells = max_open_cells.max(b.footprint.open_cells);
        for r in &b.rows {
            let k = (r.row.rollup, r.row.window_start_us, r.row.key, r.partition);
            let e = latest.entry(k).or_insert((0, 0));
            if r.row.version >= e.0 {
                *e = (r.row.version, r.row.totals.impressions + r.row.totals.clicks);
            }
        }
        let (a1, by1) = crate::alloc::counters();
        check_allocs += a1 - a;
        check_bytes += by1 - by;
        check_cpu += thread_cpu_secs() - c;
        // The batch itself (engine output) is freed here, as the writer does.
        drop(b);
    };
    let rss_before = self_status_kb("VmRSS").unwrap_or(0);
    let peak_reset = reset_peak_rss();
    let (a0, b0) = crate::alloc::counters();
    let c0 = thread_cpu_secs();
    let t0 = Instant::now();
    feed(&mut proc, buf, spans, args.flush_every, produced, &mut keep);
    proc.fire_all();
    keep(proc.take_batch());
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - c0 - check_cpu;
    let (a1, b1) = crate::alloc::counters();
    let (a1, b1) = (a1 - check_allocs, b1 - check_bytes);
    let peak_kb = self_status_kb("VmHWM").unwrap_or(0);
    let counted = counts.counted;
    let in_rows: u64 = latest.values().map(|v| v.1).sum();
    anyhow::ensure!(counted == n, "engine counted {counted} of {n} events ({counts:?})");
    let per_rollup = rollups.len() as u64;
    anyhow::ensure!(
        in_rows == n * per_rollup,
        "window rows hold {in_rows} events, expected {n} per rollup × {per_rollup}"
    );
    let mut run = Run::new();
    run.insert("events", n as f64);
    run.insert("wall_s", wall);
    run.insert("cpu_s", cpu);
    run.insert("events_per_s_per_core", n as f64 / cpu.max(1e-9));
    run.insert("events_per_s_wall", n as f64 / wall.max(1e-9));
    run.insert("ns_per_event", cpu * 1e9 / n as f64);
    run.insert("allocs_per_event", (a1 - a0) as f64 / n as f64);
    run.insert("alloc_bytes_per_event", (b1 - b0) as f64 / n as f64);
    run.insert("peak_rss_mb", peak_kb as f64 / 1024.0);
    run.insert("max_open_cells", max_open_cells as f64);
    if peak_reset {
        run.insert("state_rss_mb", peak_kb.saturating_sub(rss_before) as f64 / 1024.0);
    }
    let (cells, heap) = state_heap(buf, spans, args, rollups)?;
    run.insert("state_bytes_per_cell", heap as f64 / cells.max(1) as f64);
    let check = json!({
        "events": n, "counted": counted, "rejected": counts.rejected_total(), "late": counts.late,
        "duplicates": counts.duplicates, "rows": latest.len(), "events_in_rows": in_rows,
    });
    Ok((run, check))
}

/// What parsing alone costs, on the same buffer and thread: serde_json
/// checking that each message is JSON while building nothing
/// (`IgnoredAny`: the least a general JSON parser does), and adstream's
/// parse and validation (every field checked, the timestamp and revenue
/// converted), which the engine then counts.
fn parse_once(buf: &[u8], spans: &[(usize, usize)]) -> anyhow::Result<Run> {
    let n = spans.len().max(1) as f64;
    let c0 = thread_cpu_secs();
    for &(at, len) in spans {
        serde_json::from_slice::<serde::de::IgnoredAny>(&buf[at..at + len])?;
    }
    let c1 = thread_cpu_secs();
    let mut valid = 0usize;
    for &(at, len) in spans {
        valid += usize::from(adstream::engine::parse_event(&buf[at..at + len], DEFAULT_MAX_EVENT_BYTES).is_ok());
    }
    let c2 = thread_cpu_secs();
    anyhow::ensure!(valid == spans.len(), "{valid} of {} messages parsed", spans.len());
    let mut run = Run::new();
    run.insert("serde_skim_ns_per_event", (c1 - c0) * 1e9 / n);
    run.insert("parse_ns_per_event", (c2 - c1) * 1e9 / n);
    Ok(run)
}

/// The engine's own heap at the end of the stream (windows still open, the
/// output of every batch dropped, so nothing of the bench's is counted),
/// and the window × key cells it holds: what one open cell costs,
/// everything included (slot tables, cells, the gate's id sets, spares).
fn state_heap(
    buf: &[u8],
    spans: &[(usize, usize)],
    args: &EngineArgs,
    rollups: &[Rollup],
) -> anyhow::Result<(usize, u64)> {
    let before = crate::alloc::live();
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut proc =
        Processor::with_rollups(cfg, rollups.to_vec(), DEFAULT_MAX_EVENT_BYTES).map_err(anyhow::Error::msg)?;
    for p in 0..3 {
        proc.init_partition(p, None);
    }
    feed(&mut proc, buf, spans, args.flush_every, None, &mut drop);
    let cells = proc.take_batch().footprint.open_cells;
    let heap = crate::alloc::live().saturating_sub(before);
    drop(proc);
    Ok((cells, heap))
}

/// Feeds the messages to three partitions round robin, as the consume loop
/// does, handing a batch to `on_batch` every `flush_every` messages.
fn feed(
    proc: &mut Processor,
    buf: &[u8],
    spans: &[(usize, usize)],
    flush_every: u64,
    produced: Option<i64>,
    on_batch: &mut impl FnMut(adstream::engine::Batch),
) {
    let mut offsets = [0i64; 3];
    for (i, &(at, len)) in spans.iter().enumerate() {
        let p = i % 3;
        let payload = &buf[at..at + len];
        // The generator keys each record by its event id (bytes 13..49).
        proc.process(p as i32, offsets[p], produced, payload.get(13..49), payload);
        offsets[p] += 1;
        if (i as u64 + 1).is_multiple_of(flush_every) {
            on_batch(proc.take_batch());
        }
    }
}
