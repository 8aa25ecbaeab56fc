//! Campaign churn bench (issue 18 item 3): the engine loop (parse +
//! validate + window, the five default rollups, three partitions, one
//! thread, in memory) with many campaigns.
//!
//! - **open**: `open` campaigns open at once: each has one impression in
//!   each of `windows` consecutive 10 s windows, so all of them are in the
//!   open 10 s, 1 m and 1 h windows together. Reports the state's heap
//!   peak and RSS growth (input excluded) and the campaigns interned.
//! - **churn**: `churn_windows` windows 10 minutes apart, `per_window` new
//!   campaigns in each (campaigns starting and ending over a day): the
//!   campaigns interned and the highest id stay at about an hour's worth,
//!   however many campaigns have come and gone.

use std::path::Path;
use std::time::Instant;

use adstream::engine::{Processor, WindowConfig, DEFAULT_MAX_EVENT_BYTES};
use serde_json::{json, Value};

use crate::procstat::{reset_peak_rss, self_status_kb, thread_cpu_secs};

pub struct ChurnArgs {
    pub open: u64,
    pub windows: u64,
    pub churn_windows: u64,
    pub per_window: u64,
}

/// 2025-12-10T00:00:00Z, µs.
const T0_US: i64 = 1_765_324_800_000_000;

/// Appends one impression of `campaign`, on partition `campaign % 3`.
fn event(out: &mut Vec<(i32, Vec<u8>)>, n: u64, campaign: u64, ts_us: i64) {
    let ts = chrono::DateTime::from_timestamp_micros(ts_us).map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
    let ts = ts.unwrap_or_default();
    out.push((
        (campaign % 3) as i32,
        format!(
            r#"{{"event_id":"e{n}","timestamp":"{ts}","campaign_id":"K{campaign:07}","ad_format":"banner","country":"US","device":"iOS","event_type":"impression","revenue":0.0}}"#
        )
        .into_bytes(),
    ));
}

/// What one phase measured.
struct Phase {
    events: u64,
    ns_per_event: f64,
    heap_peak_mb: f64,
    rss_growth_mb: Option<f64>,
    peak_interned: usize,
    peak_open: usize,
    highest_id: usize,
    rejected: u64,
    counted: u64,
}

fn measure(msgs: &[(i32, Vec<u8>)], flush_every: usize) -> Phase {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let heap_before = crate::alloc::live();
    crate::alloc::reset_peak();
    let rss_before = self_status_kb("VmRSS").unwrap_or(0);
    let peak_reset = reset_peak_rss();
    let mut p = Processor::new(cfg, DEFAULT_MAX_EVENT_BYTES);
    for part in 0..3 {
        p.init_partition(part, None);
    }
    let (mut peak_interned, mut peak_open, mut highest_id) = (0, 0, 0);
    let mut counts = adstream::engine::Counts::default();
    let mut offsets = [0i64; 3];
    let c0 = thread_cpu_secs();
    for (i, (part, m)) in msgs.iter().enumerate() {
        let o = &mut offsets[*part as usize];
        p.process(*part, *o, None, None, m);
        *o += 1;
        if (i + 1) % flush_every == 0 {
            let b = p.take_batch();
            counts.add(&b.counts);
            peak_interned = peak_interned.max(b.footprint.campaigns_interned);
            peak_open = peak_open.max(b.footprint.campaigns_open);
            highest_id = highest_id.max(b.names.len());
        }
    }
    p.fire_all();
    let b = p.take_batch();
    counts.add(&b.counts);
    peak_interned = peak_interned.max(b.footprint.campaigns_interned);
    peak_open = peak_open.max(b.footprint.campaigns_open);
    highest_id = highest_id.max(b.names.len());
    let cpu = thread_cpu_secs() - c0;
    let heap_peak = crate::alloc::peak().saturating_sub(heap_before);
    let peak_kb = self_status_kb("VmHWM").unwrap_or(0);
    drop(p);
    Phase {
        events: msgs.len() as u64,
        ns_per_event: cpu * 1e9 / msgs.len().max(1) as f64,
        heap_peak_mb: heap_peak as f64 / 1048576.0,
        rss_growth_mb: peak_reset.then(|| peak_kb.saturating_sub(rss_before) as f64 / 1024.0),
        peak_interned,
        peak_open,
        highest_id,
        rejected: counts.rejected_total(),
        counted: counts.counted,
    }
}

fn phase_json(p: &Phase) -> Value {
    json!({
        "events": p.events, "counted": p.counted, "rejected": p.rejected, "ns_per_event": p.ns_per_event,
        "heap_peak_mb": p.heap_peak_mb, "rss_growth_mb": p.rss_growth_mb, "peak_campaigns_interned": p.peak_interned,
        "peak_campaigns_open_over_partitions": p.peak_open, "highest_id": p.highest_id,
    })
}

fn print(name: &str, p: &Phase) {
    println!(
        "  {name}: {} events, counted {}, rejected {}; {:.0} ns/event; state heap peak {:.1} MiB, RSS growth {}; \
         campaigns interned at most {} (held over partitions {}), highest id {}",
        p.events,
        p.counted,
        p.rejected,
        p.ns_per_event,
        p.heap_peak_mb,
        p.rss_growth_mb.map_or("n/a".to_string(), |m| format!("{m:.1} MiB")),
        p.peak_interned,
        p.peak_open,
        p.highest_id,
    );
}

pub fn run(args: &ChurnArgs, out: &Path) -> anyhow::Result<Value> {
    let t = Instant::now();
    let mut open = Vec::new();
    let mut n = 0;
    for w in 0..args.windows as i64 {
        for c in 0..args.open {
            n += 1;
            event(&mut open, n, c, T0_US + w * 10_000_000 + (c * 9_000_000 / args.open.max(1)) as i64);
        }
    }
    let mut churn = Vec::new();
    for w in 0..args.churn_windows as i64 {
        for i in 0..args.per_window {
            n += 1;
            let c = w as u64 * args.per_window + i;
            event(&mut churn, n, c, T0_US + w * 600_000_000 + (i * 9_000_000 / args.per_window.max(1)) as i64);
        }
    }
    println!("churn bench: input built in {:.1} s", t.elapsed().as_secs_f64());
    // A batch per window's worth of events, as a flush interval would.
    let a = measure(&open, args.open.max(1) as usize);
    print(&format!("{} campaigns open at once ({} windows of 10 s)", args.open, args.windows), &a);
    drop(open);
    let b = measure(&churn, 1_000);
    print(
        &format!(
            "{} campaigns, {} new in each of {} windows 10 min apart",
            args.churn_windows * args.per_window,
            args.per_window,
            args.churn_windows
        ),
        &b,
    );
    anyhow::ensure!(a.rejected == 0 && b.rejected == 0, "churn bench: events rejected");
    anyhow::ensure!(a.counted == a.events && b.counted == b.events, "churn bench: not every event counted");
    let v = json!({
        "bench": "churn", "machine": crate::report::machine(),
        "open": phase_json(&a), "churn": phase_json(&b),
    });
    std::fs::write(out.join("churn.json"), serde_json::to_string_pretty(&v)?)?;
    Ok(v)
}
