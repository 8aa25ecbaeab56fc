//! `adstream demo`: the embedded default. The in-process generator writes
//! JSON exactly as it would to Kafka; the bytes go through the same parser,
//! window engine and console format as `run`. No Kafka, no ClickHouse.
//!
//! It also shows the pipeline's last stage: a CTR model ([`Learner`], the
//! same FTRL-Proximal learner as `adstream learn`) learns from each closed
//! segment window in-process, and every window's block ends with the CTR
//! it predicted per format *before* learning the window, beside the CTR
//! observed in it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use crate::clock::now_micros;
use crate::config::DemoConfig;
use crate::engine::batch::{campaign_name, OutRow};
use crate::engine::event::Names;
use crate::engine::time::{format_seconds, format_time_of_day};
use crate::engine::AdFormat;
use crate::engine::{Batch, Counts, Dims, Processor, SegmentKey, DEFAULT_MAX_EVENT_BYTES};
use crate::generator::{Generator, Pacer};
use crate::learn::{Example, Learner, Params, Segment, Window};
use crate::shutdown::Shutdown;

/// `adstream demo`, on a blocking thread until the count, the duration or
/// `stop`.
pub async fn demo(config: DemoConfig, stop: Shutdown) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || play(config, stop)).await??;
    Ok(ExitCode::SUCCESS)
}

fn play(config: DemoConfig, stop: Shutdown) -> anyhow::Result<()> {
    let cfg = config.window;
    let mut proc = Processor::with_rollups(cfg, config.rollups.clone(), DEFAULT_MAX_EVENT_BYTES)?;
    proc.init_partition(0, None);
    let mut gen = Generator::new(config.generator).with_traffic(config.traffic);
    let mut totals = Counts::default();
    let (mut key, mut json) = (Vec::new(), Vec::new());
    // The segment rollup at the base window, if configured: the model's input.
    let segments = config.rollups.iter().position(|r| r.dims == Dims::SEGMENT && r.size_us == cfg.size_us);
    let model = match segments {
        Some(_) => Some(Learner::new(Params::default())?),
        None => None,
    };
    let mut printer = Printer { segments, model, ..Printer::default() };
    say(format_args!(
        "adstream demo: {} events/s for {:?}{}; windows of {} s close {} s after they end (allowed lateness)",
        if config.rate > 0.0 { config.rate.to_string() } else { "unthrottled".into() },
        config.duration,
        config.count.map(|c| format!(" or {c} events")).unwrap_or_default(),
        cfg.size_us / 1_000_000,
        cfg.allowed_lateness_us / 1_000_000,
    ));
    let pacer = Pacer::new(config.rate);
    let mut sent: u64 = 0;
    loop {
        if stop.is_triggered() || pacer.elapsed() >= config.duration || config.count.is_some_and(|c| sent >= c) {
            break;
        }
        if !pacer.ready(sent) {
            continue;
        }
        gen.next_into(now_micros, &mut key, &mut json);
        // The moment it is "produced" is its message timestamp, as Kafka's
        // CreateTime would be.
        let now = crate::clock::now();
        proc.set_clock(now);
        proc.process(0, sent as i64, Some(now.epoch_us), None, &json);
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
    /// Index of the segment rollup at the base window, if configured.
    segments: Option<usize>,
    /// The CTR model learned from its closed windows.
    model: Option<Learner>,
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
        let model_lines = self.learn(batch);
        let mut ok = true;
        // Each closed window's rows, then its model line.
        for chunk in finals.chunk_by(|a, b| a.row.window_start_us == b.row.window_start_us) {
            ok &= self.print_rows(chunk);
            if let Some(line) = model_lines.get(&chunk[0].row.window_start_us) {
                ok &= self.say(line);
            }
        }
        ok && self.print_late(batch)
    }

    /// Learns the closed segment windows of `batch`, oldest first; returns
    /// each one's line of predicted (before learning it) vs observed CTR by
    /// format.
    fn learn(&mut self, batch: &Batch) -> BTreeMap<i64, String> {
        let mut lines = BTreeMap::new();
        let (Some(seg), Some(model)) = (self.segments, self.model.as_mut()) else { return lines };
        let mut windows: BTreeMap<i64, Window> = BTreeMap::new();
        for r in batch.rows.iter().filter(|r| r.row.is_final && usize::from(r.row.rollup) == seg) {
            let k = &r.row.key;
            let (Some(c), Some(ad_format), Some(country), Some(device)) =
                (k.campaign, k.ad_format, k.country, k.device)
            else {
                continue;
            };
            let w = windows.entry(r.row.window_start_us).or_insert_with(|| Window {
                start_us: r.row.window_start_us,
                end_us: r.row.window_end_us,
                examples: Vec::new(),
            });
            w.examples.push(Example {
                segment: Segment {
                    campaign_id: campaign_name(&batch.names, c).to_string(),
                    ad_format,
                    country,
                    device,
                },
                impressions: r.row.totals.impressions,
                clicks: r.row.totals.clicks,
            });
        }
        for (start, w) in windows {
            let Ok(learned) = model.learn_window(&w) else { continue };
            // Per format: Σ predicted clicks and Σ clicks over Σ impressions.
            let mut by_format = [(0.0f64, 0u64, 0u64); 3];
            for p in &learned.predictions {
                let f = &mut by_format[p.segment.ad_format.index()];
                f.0 += p.p * p.impressions as f64;
                f.1 += p.impressions;
                f.2 += p.clicks;
            }
            let parts: Vec<String> = AdFormat::ALL
                .iter()
                .filter(|f| by_format[f.index()].1 > 0)
                .map(|f| {
                    let (pred, imps, clicks) = by_format[f.index()];
                    format!(
                        "{} predicted CTR {:.1}% observed {:.1}%",
                        f.as_str(),
                        pred / imps as f64 * 100.0,
                        clicks as f64 / imps as f64 * 100.0
                    )
                })
                .collect();
            if !parts.is_empty() {
                lines.insert(start, format!("  model v{} | {}", learned.version, parts.join(" | ")));
            }
        }
        lines
    }

    fn say(&self, line: &str) -> bool {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}").is_ok() && out.flush().is_ok()
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
