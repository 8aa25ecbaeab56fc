//! `adstream demo`: the embedded default. The in-process generator writes
//! JSON exactly as it would to Kafka; the bytes go through the same parser,
//! window engine and console format as `run`. No Kafka, no ClickHouse.

use std::collections::BTreeMap;
use std::io::Write;

use crate::config::DemoConfig;
use crate::engine::batch::{campaign_name, OutRow};
use crate::engine::event::Names;
use crate::engine::time::{format_seconds, format_time_of_day, now_micros};
use crate::engine::{Batch, Counts, Processor, SegmentKey, DEFAULT_MAX_EVENT_BYTES};
use crate::generator::{Generator, Pacer};
use crate::shutdown::Shutdown;

pub fn demo(args: DemoConfig, stop: Shutdown) -> anyhow::Result<()> {
    let cfg = args.window;
    let mut proc =
        Processor::with_rollups(cfg, args.rollups.clone(), DEFAULT_MAX_EVENT_BYTES).map_err(anyhow::Error::msg)?;
    proc.init_partition(0, None);
    let mut gen = Generator::new(args.generator).with_traffic(args.traffic);
    let mut totals = Counts::default();
    let (mut key, mut json) = (Vec::new(), Vec::new());
    let mut printer = Printer::default();
    say(format_args!(
        "adstream demo: {} events/s for {:?}{}; windows of {} s close {} s after they end (allowed lateness)",
        if args.rate > 0.0 { args.rate.to_string() } else { "unthrottled".into() },
        args.duration,
        args.count.map(|c| format!(" or {c} events")).unwrap_or_default(),
        cfg.size_us / 1_000_000,
        cfg.allowed_lateness_us / 1_000_000,
    ));
    let pacer = Pacer::new(args.rate);
    let mut sent: u64 = 0;
    loop {
        if stop.is_triggered() || pacer.elapsed() >= args.duration || args.count.is_some_and(|c| sent >= c) {
            break;
        }
        if !pacer.ready(sent) {
            continue;
        }
        gen.next_into(now_micros, &mut key, &mut json);
        // The moment it is "produced" is its message timestamp, as Kafka's
        // CreateTime would be.
        proc.process(0, sent as i64, Some(now_micros()), None, &json);
        sent += 1;
        if proc.pending() {
            let batch = proc.take_batch();
            totals.add(&batch.counts);
            if !printer.print(&batch) {
                break; // stdout closed (e.g. piped into `head`)
            }
        }
    }
    proc.fire_all();
    let batch = proc.take_batch();
    totals.add(&batch.counts);
    printer.print(&batch);
    printer.print_unfinished();
    say(format_args!(
        "demo done: {sent} events in {:.1} s | counted {} | late {} | rejected {} | window rows {}",
        pacer.elapsed().as_secs_f64(),
        totals.counted,
        totals.late,
        totals.rejected_total(),
        printer.rows,
    ));
    Ok(())
}

/// Prints a line; a closed stdout is not an error worth a panic.
fn say(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stdout(), "{args}");
}

/// Prints rows grouped under one header per window, each window once: when
/// it is final, or at the end for the windows the demo leaves open.
#[derive(Default)]
struct Printer {
    current: Option<(i64, bool)>,
    rows: u64,
    /// Latest not-yet-final row per window × campaign × format.
    unfinished: BTreeMap<(i64, SegmentKey), OutRow>,
    /// Campaign names by id, from the latest batch (ids are stable).
    names: Names,
}

impl Printer {
    /// Prints the final rows of `batch` and remembers the others. Returns
    /// false once stdout is gone.
    fn print(&mut self, batch: &Batch) -> bool {
        self.names = batch.names.clone();
        let mut finals = Vec::new();
        for r in batch.console_rows() {
            let key = (r.row.window_start_us, r.row.key);
            if r.row.is_final {
                self.unfinished.remove(&key);
                finals.push(r.clone());
            } else {
                self.unfinished.insert(key, r.clone());
            }
        }
        finals.sort_by(|a, b| a.display_key(&self.names).cmp(&b.display_key(&self.names)));
        self.print_rows(&finals) && self.print_late(batch)
    }

    /// Prints the windows still open, marked partial.
    fn print_unfinished(&mut self) -> bool {
        let rows: Vec<OutRow> = std::mem::take(&mut self.unfinished).into_values().collect();
        self.print_rows(&rows)
    }

    fn print_rows(&mut self, rows: &[OutRow]) -> bool {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for r in rows {
            let key = (r.row.window_start_us, r.row.is_final);
            if self.current != Some(key) {
                let note = if r.row.is_final { "" } else { " (partial: the demo ended before this window closed)" };
                let _ = writeln!(
                    out,
                    "── window {} ~ {}{note} ──",
                    format_seconds(r.row.window_start_us),
                    format_time_of_day(r.row.window_end_us)
                );
                self.current = Some(key);
            }
            let campaign = r.row.key.campaign.map_or("", |c| campaign_name(&self.names, c));
            if writeln!(out, "{}", r.console_line(campaign)).is_err() {
                return false;
            }
            self.rows += 1;
        }
        out.flush().is_ok()
    }

    fn print_late(&self, batch: &Batch) -> bool {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for l in &batch.late {
            let _ = writeln!(
                out,
                "late event {} for window {}: {}",
                l.event_id,
                format_seconds(l.window_start_us),
                l.reason
            );
        }
        out.flush().is_ok()
    }
}
