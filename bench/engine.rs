//! Engine bench: parse + validate + window from an in-memory buffer of real
//! generator events (JSON bytes exactly as on the wire), one thread, no
//! Kafka, no ClickHouse. The same `Processor` the consumer runs, fed the way
//! the consume loop feeds it (three partitions, a batch taken every
//! `flush_every` events).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use adstream::engine::Processor;
use adstream::engine::WindowConfig;
use adstream::engine::DEFAULT_MAX_EVENT_BYTES;
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
}

/// The wire bytes of `n` seeded events, back to back, and each one's span;
/// over `campaigns` campaigns (`C00001`..) instead of the usual C001–C005
/// when given (the scaling bench).
pub fn build_input(n: u64, event_rate: f64, seed: u64, campaigns: Option<u32>) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut g = Generator::new(GeneratorConfig {
        seed: Some(seed),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate,
        jitter_us: 1_000_000,
    });
    if let Some(c) = campaigns {
        g = g.with_campaigns(c);
    }
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

pub fn run(args: &EngineArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    let t = Instant::now();
    let (buf, spans) = build_input(args.events, args.event_rate, args.seed, None);
    println!(
        "engine: {} events, {:.1} MiB of JSON built in {:.1} s",
        args.events,
        buf.len() as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    let mut checks = Vec::new();
    for rep in 0..args.reps {
        let (run, check) = once(&buf, &spans, args)?;
        println!(
            "  run {}: {:.0} events/s per core, {:.1} ns/event, {:.2} allocations/event",
            rep + 1,
            run["events_per_s_per_core"],
            run["ns_per_event"],
            run["allocs_per_event"]
        );
        runs.push(run);
        checks.push(check);
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
    ];
    let config = json!({
        "events": args.events, "reps": args.reps, "event_rate": args.event_rate, "flush_every": args.flush_every,
        "seed": args.seed, "input_bytes": buf.len(), "partitions": 3, "window_s": 10, "allowed_lateness_s": 5,
    });
    finish(
        out,
        "engine",
        "Engine: parse + validate + window, in memory, 1 thread",
        config,
        &runs,
        &figures,
        json!(checks),
    )
}

fn once(buf: &[u8], spans: &[(usize, usize)], args: &EngineArgs) -> anyhow::Result<(Run, serde_json::Value)> {
    let n = spans.len() as u64;
    let mut counts = adstream::engine::Counts::default();
    // Every message carries a Kafka timestamp in production: the future
    // guard's comparison is part of the measured work.
    let produced = Some(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64);
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut proc = Processor::new(cfg, DEFAULT_MAX_EVENT_BYTES);
    for p in 0..3 {
        proc.init_partition(p, None);
    }
    // Latest row per (window, campaign, format, partition): what ClickHouse
    // would keep; its totals must add up to every event.
    let mut latest: BTreeMap<(i64, u32, u8, i32), (u64, u64)> = BTreeMap::new();
    let mut keep = |b: adstream::engine::Batch| {
        counts.add(&b.counts);
        for r in b.rows {
            let k = (r.row.window_start_us, r.row.campaign, r.row.ad_format.index() as u8, r.partition);
            let e = latest.entry(k).or_insert((0, 0));
            if r.row.version >= e.0 {
                *e = (r.row.version, r.row.totals.impressions + r.row.totals.clicks);
            }
        }
    };
    let rss_before = self_status_kb("VmRSS").unwrap_or(0);
    let peak_reset = reset_peak_rss();
    let (a0, b0) = crate::alloc::counters();
    let c0 = thread_cpu_secs();
    let t0 = Instant::now();
    let mut offsets = [0i64; 3];
    for (i, &(at, len)) in spans.iter().enumerate() {
        let p = i % 3;
        let payload = &buf[at..at + len];
        // The generator keys each record by its event id (bytes 13..49).
        proc.process(p as i32, offsets[p], produced, payload.get(13..49), payload);
        offsets[p] += 1;
        if (i as u64 + 1).is_multiple_of(args.flush_every) {
            keep(proc.take_batch());
        }
    }
    proc.fire_all();
    keep(proc.take_batch());
    let wall = t0.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - c0;
    let (a1, b1) = crate::alloc::counters();
    let peak_kb = self_status_kb("VmHWM").unwrap_or(0);
    let counted = counts.counted;
    let in_rows: u64 = latest.values().map(|v| v.1).sum();
    anyhow::ensure!(counted == n, "engine counted {counted} of {n} events ({counts:?})");
    anyhow::ensure!(in_rows == n, "window rows hold {in_rows} events, expected {n}");
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
    if peak_reset {
        run.insert("state_rss_mb", peak_kb.saturating_sub(rss_before) as f64 / 1024.0);
    }
    let check = json!({
        "events": n, "counted": counted, "rejected": counts.rejected_total(), "late": counts.late,
        "duplicates": counts.duplicates, "rows": latest.len(), "events_in_rows": in_rows,
    });
    Ok((run, check))
}
