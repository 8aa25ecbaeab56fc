//! Learner bench: the CTR model against the truth. `n` seeded events of the
//! project's generator (event times as `generate --seed` spreads them:
//! event `k` at `start + k / event_rate`, no jitter), windowed into exact
//! 10 s segment windows (campaign × format × country × device) by the
//! engine's `Processor` (one partition, the SEGMENT rollup: what `adstream
//! learn` consumes), then learned window by window in time order with
//! [`Ftrl`] under progressive validation: every segment of a window is
//! predicted first, then the window is learned.
//!
//! Beside the model's progressive log loss per impression it computes the
//! Bayes-optimal log loss of the same stream: per window × segment the true
//! clicks per impression `q` of the generator's model (`--print-truth`'s
//! `hourly_ctr` of the segment at the window's UTC hour), scored with the
//! same formula `−c ln q − (i − c) ln(1 − q)`, summed over the same windows,
//! ÷ impressions. `--export` writes the windows (with both predictions) in
//! stream order for `bench/learner_peers.py`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use adstream::engine::{AdFormat, Country, Device, Dims, Processor, Rollup, WindowConfig, DEFAULT_MAX_EVENT_BYTES};
use adstream::generator::truth::ctr;
use adstream::generator::{
    EventMeta, Generator, GeneratorConfig, Traffic, TrafficModel, DEFAULT_SEEDED_START_US, MAX_CAMPAIGNS,
};
use adstream::learn::{hour_of_day, Context, Features, Ftrl, Params, Quality, Report};
use anyhow::Context as _;
use serde_json::json;

use crate::procstat::thread_cpu_secs;
use crate::report::{finish, Figure, Run, Target};

pub struct LearnerArgs {
    pub events: u64,
    pub reps: usize,
    pub traffic: TrafficModel,
    pub campaigns: u32,
    pub seed: u64,
    pub event_rate: f64,
    /// Calibration and the "past warm-up" figures count windows that start
    /// after this many events.
    pub warmup: u64,
    pub export: Option<PathBuf>,
    /// FTRL parameters (`adstream learn`'s defaults unless set).
    pub params: Params,
}

const WINDOW_US: i64 = 10_000_000;

/// Events per simulated second unless `--event-rate` says otherwise:
/// `adstream generate --seed`'s default when unthrottled.
pub const DEFAULT_EVENT_RATE: f64 = 1000.0;

/// One window × segment, in stream order.
#[derive(Debug, Clone, Copy)]
struct Cell {
    window_start_us: i64,
    /// Events of the stream before this window.
    seen: u64,
    campaign: usize,
    format: usize,
    country: usize,
    device: usize,
    impressions: u64,
    clicks: u64,
}

/// Key of a cell while counting: window, campaign, format, country, device.
type CellKey = (i64, usize, usize, usize, usize);

fn key_of(m: &EventMeta) -> CellKey {
    (m.timestamp_us.div_euclid(WINDOW_US) * WINDOW_US, m.campaign, m.ad_format.index(), m.country, m.device)
}

/// The seeded generator of the bench (no jitter).
fn generator(args: &LearnerArgs) -> Generator {
    Generator::new(GeneratorConfig {
        seed: Some(args.seed),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate: args.event_rate,
        jitter_us: 0,
    })
    .with_traffic(Traffic::new(args.traffic, args.campaigns))
}

/// The events' wire bytes and spans, and each window × segment's counts
/// taken straight from the generator (the check of the engine's rows), in
/// order of first appearance.
struct Input {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// Cells in order of their first event; counts from the generator.
    cells: Vec<Cell>,
    index: HashMap<CellKey, usize>,
}

fn build(args: &LearnerArgs) -> Input {
    let mut g = generator(args);
    let (mut key, mut json) = (Vec::new(), Vec::new());
    let n = args.events as usize;
    let mut buf = Vec::with_capacity(n * 260);
    let mut spans = Vec::with_capacity(n);
    let mut cells: Vec<Cell> = Vec::new();
    let mut index: HashMap<CellKey, usize> = HashMap::new();
    let mut window_seen: HashMap<i64, u64> = HashMap::new();
    for k in 0..args.events {
        let m = g.next_into(|| 0, &mut key, &mut json);
        spans.push((buf.len(), json.len()));
        buf.extend_from_slice(&json);
        let ck = key_of(&m);
        // Events are in time order (no jitter): the first event of a window
        // has `k` events before it.
        let seen = *window_seen.entry(ck.0).or_insert(k);
        let i = *index.entry(ck).or_insert_with(|| {
            cells.push(Cell {
                window_start_us: ck.0,
                seen,
                campaign: ck.1,
                format: ck.2,
                country: ck.3,
                device: ck.4,
                impressions: 0,
                clicks: 0,
            });
            cells.len() - 1
        });
        match m.event_type {
            adstream::engine::EventType::Click => cells[i].clicks += 1,
            adstream::engine::EventType::Impression => cells[i].impressions += 1,
        }
    }
    Input { buf, spans, cells, index }
}

/// Windows the events with the engine; returns the final rows as cells in
/// stream order (checked against the generator's own counts) and the CPU
/// and wall seconds of the windowing.
fn window(input: &Input, traffic: Traffic) -> anyhow::Result<(Vec<Cell>, f64, f64)> {
    let cfg = WindowConfig::new(WINDOW_US, 5_000_000, 3_600_000_000);
    let mut proc = Processor::with_rollups(cfg, vec![Rollup::new(Dims::SEGMENT, WINDOW_US)], DEFAULT_MAX_EVENT_BYTES)
        .map_err(anyhow::Error::msg)?;
    proc.init_partition(0, None);
    let mut batches = Vec::new();
    let c0 = thread_cpu_secs();
    let t0 = Instant::now();
    for (offset, &(at, len)) in input.spans.iter().enumerate() {
        let payload = &input.buf[at..at + len];
        proc.process(0, offset as i64, None, payload.get(13..49), payload);
        if (offset + 1) % 100_000 == 0 {
            batches.push(proc.take_batch());
        }
    }
    proc.fire_all();
    batches.push(proc.take_batch());
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), thread_cpu_secs() - c0);

    let campaign_index: HashMap<String, usize> =
        (0..traffic.campaigns as usize).map(|c| (traffic.campaign_id(c), c)).collect();
    let mut cells = input.cells.clone();
    for c in &mut cells {
        (c.impressions, c.clicks) = (0, 0);
    }
    let mut rejected = 0;
    // The latest row of a cell replaces the earlier ones (as in ClickHouse;
    // the last window's rows, fired at the end of the stream, are not
    // final).
    let mut version = vec![0u64; cells.len()];
    for b in &batches {
        rejected += b.counts.rejected_total() + b.counts.late + b.counts.duplicates;
        for r in &b.rows {
            let k = r.row.key;
            let campaign = campaign_index
                .get(b.campaign(r))
                .with_context(|| format!("unknown campaign {:?} in a window row", b.campaign(r)))?;
            let (Some(f), Some(country), Some(device)) = (k.ad_format, k.country, k.device) else {
                anyhow::bail!("a segment row without format, country or device: {k:?}");
            };
            let ck = (r.row.window_start_us, *campaign, f.index(), country.index(), device.index());
            let i = *input.index.get(&ck).with_context(|| format!("a window row the generator never made: {ck:?}"))?;
            if r.row.version >= version[i] {
                version[i] = r.row.version;
                cells[i].impressions = r.row.totals.impressions;
                cells[i].clicks = r.row.totals.clicks;
            }
        }
    }
    anyhow::ensure!(rejected == 0, "the engine rejected, dropped as late or deduplicated {rejected} events");
    let mismatched =
        cells.iter().zip(&input.cells).filter(|(a, b)| (a.impressions, a.clicks) != (b.impressions, b.clicks));
    let mismatched = mismatched.count();
    anyhow::ensure!(mismatched == 0, "{mismatched} window × segment cells differ between the engine and the generator");
    // Window by window in time order; within a window, stream order.
    cells.sort_by_key(|c| c.window_start_us);
    Ok((cells, cpu, wall))
}

/// What one learning pass produced.
struct Learned {
    /// The model's prediction of each cell, made before it learned the
    /// cell's window.
    p: Vec<f64>,
    cpu_s: f64,
    wall_s: f64,
}

/// Progressive validation, window by window: predict every cell of a
/// window, then learn them all.
fn learn(cells: &[Cell], names: &[String], params: Params) -> anyhow::Result<Learned> {
    let mut model = Ftrl::new(params).map_err(anyhow::Error::msg)?;
    let mut p = vec![0.0; cells.len()];
    let mut features = Vec::new();
    let c0 = thread_cpu_secs();
    let t0 = Instant::now();
    for (start, window) in chunk_windows(cells) {
        features.clear();
        for c in window {
            let campaign_id = names.get(c.campaign).map_or("", String::as_str);
            features.push(Features::of(&Context {
                campaign_id,
                ad_format: AdFormat::ALL[c.format],
                country: Country::ALL[c.country],
                device: Device::ALL[c.device],
                hour: hour_of_day(c.window_start_us),
            }));
        }
        for (k, x) in features.iter().enumerate() {
            p[start + k] = model.predict(x);
        }
        for (c, x) in window.iter().zip(&features) {
            model.learn(x, c.impressions, c.clicks);
        }
    }
    Ok(Learned { p, cpu_s: thread_cpu_secs() - c0, wall_s: t0.elapsed().as_secs_f64() })
}

/// `(index of the first cell, cells)` per window; `cells` sorted by window.
fn chunk_windows(cells: &[Cell]) -> impl Iterator<Item = (usize, &[Cell])> {
    let mut start = 0;
    cells.chunk_by(|a, b| a.window_start_us == b.window_start_us).map(move |w| {
        let s = start;
        start += w.len();
        (s, w)
    })
}

/// The true clicks per impression of a cell (`--print-truth`'s
/// `hourly_ctr`).
fn truth(model: TrafficModel, c: &Cell) -> f64 {
    ctr(model.p_click(
        AdFormat::ALL[c.format],
        c.country,
        c.device,
        c.campaign,
        usize::from(hour_of_day(c.window_start_us)),
    ))
}

/// The campaign factors a campaign-blind learner considers: 0.60, 0.61,
/// .., 1.40 ([`campaign_factor`](adstream::generator::model::campaign_factor)'s
/// range; the five named campaigns' factors are among them).
const FACTOR_GRID: usize = 81;

fn grid_factor(j: usize) -> f64 {
    0.60 + j as f64 / 100.0
}

/// The campaign-blind bound: the predictions of a learner told the whole
/// traffic model except each campaign's factor, which it gets as a prior
/// (uniform over the 81 values of [`FACTOR_GRID`], the factors' actual
/// spread) and estimates from the campaign's own events. It is the Bayes
/// learner of that prior: per campaign the posterior over the grid after
/// the windows before this one (an event is a click with probability
/// `p(f)`: likelihood `p^c (1 − p)^i`), a cell predicted with
/// `E[p] / (1 − E[p])` (the `q` that minimizes the expected binomial loss
/// of the row), window by window as adstream predicts. No learner that
/// must estimate the campaign factors from the same stream does better in
/// expectation over factors drawn from that prior; the seed model has no
/// campaign factor, so there it equals the optimum.
fn campaign_blind(model: TrafficModel, cells: &[Cell], campaigns: usize) -> Vec<f64> {
    let mut loglik = vec![0.0f64; campaigns * FACTOR_GRID];
    let mut q = vec![0.0; cells.len()];
    let p_of = |c: &Cell, j: usize| {
        model.p_click_with_factor(
            AdFormat::ALL[c.format],
            c.country,
            c.device,
            grid_factor(j),
            usize::from(hour_of_day(c.window_start_us)),
        )
    };
    for (start, window) in chunk_windows(cells) {
        for (k, c) in window.iter().enumerate() {
            let ll = &loglik[c.campaign * FACTOR_GRID..][..FACTOR_GRID];
            let max = ll.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let (mut sum_w, mut sum_wp) = (0.0, 0.0);
            for (j, l) in ll.iter().enumerate() {
                let w = (l - max).exp();
                sum_w += w;
                sum_wp += w * p_of(c, j);
            }
            let p = sum_wp / sum_w;
            q[start + k] = p / (1.0 - p);
        }
        for c in window {
            let ll = &mut loglik[c.campaign * FACTOR_GRID..][..FACTOR_GRID];
            for (j, l) in ll.iter_mut().enumerate() {
                let p = p_of(c, j);
                *l += c.clicks as f64 * p.ln() + c.impressions as f64 * (1.0 - p).ln();
            }
        }
    }
    q
}

/// Progressive figures of predictions `p` over `cells`: all, and past the
/// warm-up.
fn score(cells: &[Cell], p: impl Fn(usize) -> f64, warmup: u64) -> (Report, Report) {
    let (mut all, mut past) = (Quality::new(), Quality::new());
    for (k, c) in cells.iter().enumerate() {
        all.add(p(k), c.impressions, c.clicks);
        if c.seen >= warmup {
            past.add(p(k), c.impressions, c.clicks);
        }
    }
    (all.report(), past.report())
}

fn export(path: &Path, cells: &[Cell], names: &[String], p: &[f64], q: &[f64]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    writeln!(w, "window_start_us,seen,campaign,format,country,device,hour,impressions,clicks,p_adstream,q_true")?;
    for (k, c) in cells.iter().enumerate() {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{},{},{}",
            c.window_start_us,
            c.seen,
            names.get(c.campaign).map_or("", String::as_str),
            AdFormat::ALL[c.format].as_str(),
            Country::ALL[c.country].as_str(),
            Device::ALL[c.device].as_str(),
            hour_of_day(c.window_start_us),
            c.impressions,
            c.clicks,
            p[k],
            q[k]
        )?;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))
}

fn opt(x: Option<f64>) -> f64 {
    x.unwrap_or(f64::NAN)
}

pub fn run(args: &LearnerArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!((1..=MAX_CAMPAIGNS).contains(&args.campaigns), "--campaigns must be in 1..={MAX_CAMPAIGNS}");
    anyhow::ensure!(args.event_rate > 0.0 && args.event_rate.is_finite(), "--event-rate must be positive");
    let traffic = Traffic::new(args.traffic, args.campaigns);
    let names: Vec<String> = (0..traffic.campaigns as usize).map(|c| traffic.campaign_id(c)).collect();
    let t = Instant::now();
    let input = build(args);
    println!(
        "learner: {} events ({} traffic, {} campaigns), {} window × segment cells, built in {:.1} s",
        args.events,
        args.traffic.name(),
        args.campaigns,
        input.cells.len(),
        t.elapsed().as_secs_f64()
    );
    let mut runs = Vec::new();
    let mut result = None;
    for rep in 0..args.reps {
        let (cells, window_cpu, window_wall) = window(&input, traffic)?;
        let learned = learn(&cells, &names, args.params)?;
        let m = 1e6 / args.events.max(1) as f64;
        let mut run = Run::new();
        run.insert("events", args.events as f64);
        run.insert("cells", cells.len() as f64);
        run.insert("learn_wall_s", learned.wall_s);
        run.insert("learn_cpu_s", learned.cpu_s);
        run.insert("learn_cpu_s_per_m_events", learned.cpu_s * m);
        run.insert("window_cpu_s_per_m_events", window_cpu * m);
        run.insert("window_wall_s", window_wall);
        run.insert("total_cpu_s_per_m_events", (window_cpu + learned.cpu_s) * m);
        println!(
            "  run {}: learning {:.3} s wall, {:.4} CPU s per 1M events; windowing {:.3} CPU s per 1M events",
            rep + 1,
            learned.wall_s,
            learned.cpu_s * m,
            window_cpu * m
        );
        runs.push(run);
        result = Some((cells, learned.p));
    }
    let (cells, p) = result.context("no repetition ran")?;
    let q: Vec<f64> = cells.iter().map(|c| truth(args.traffic, c)).collect();
    let q_at_least_1 = q.iter().filter(|&&q| q >= 1.0).count();
    let (model_all, model_past) = score(&cells, |k| p[k], args.warmup);
    let (opt_all, opt_past) = score(&cells, |k| q[k], args.warmup);
    let blind = campaign_blind(args.traffic, &cells, names.len());
    let (blind_all, blind_past) = score(&cells, |k| blind[k], args.warmup);
    // The first window is predicted by a model that has learned nothing
    // (p = 0.5): the cost of learning per window instead of per event.
    let first = cells.iter().take_while(|c| c.window_start_us == cells[0].window_start_us).count();
    let (model_later, _) = score(&cells[first..], |k| p[first + k], args.warmup);
    let (opt_later, _) = score(&cells[first..], |k| q[first + k], args.warmup);
    // The quality figures are deterministic: the same in every run.
    for run in &mut runs {
        run.insert("log_loss", opt(model_all.log_loss));
        run.insert("log_loss_past_warmup", opt(model_past.log_loss));
        run.insert("optimum_log_loss", opt(opt_all.log_loss));
        run.insert("optimum_log_loss_past_warmup", opt(opt_past.log_loss));
        run.insert("ratio_vs_optimum", opt(model_all.log_loss) / opt(opt_all.log_loss));
        run.insert("ratio_vs_optimum_past_warmup", opt(model_past.log_loss) / opt(opt_past.log_loss));
        run.insert("ratio_vs_optimum_after_first_window", opt(model_later.log_loss) / opt(opt_later.log_loss));
        run.insert("campaign_blind_log_loss", opt(blind_all.log_loss));
        run.insert("campaign_blind_log_loss_past_warmup", opt(blind_past.log_loss));
        run.insert("campaign_blind_ratio_vs_optimum", opt(blind_all.log_loss) / opt(opt_all.log_loss));
        run.insert("campaign_blind_ratio_vs_optimum_past_warmup", opt(blind_past.log_loss) / opt(opt_past.log_loss));
        run.insert("ratio_vs_campaign_blind_past_warmup", opt(model_past.log_loss) / opt(blind_past.log_loss));
        run.insert("calibration", opt(model_all.calibration));
        run.insert("calibration_past_warmup", opt(model_past.calibration));
        run.insert("calibration_error_past_warmup", (opt(model_past.calibration) - 1.0).abs());
        run.insert("normalized_entropy_past_warmup", opt(model_past.normalized_entropy));
        run.insert("auc_past_warmup", opt(model_past.auc));
        run.insert("optimum_auc_past_warmup", opt(opt_past.auc));
        run.insert("impressions", model_all.impressions as f64);
        run.insert("clicks", model_all.clicks as f64);
    }
    if let Some(path) = &args.export {
        export(path, &cells, &names, &p, &q)?;
        println!("  windows exported to {}", path.display());
    }
    let figures = [
        Figure { label: "progressive log loss / impression", metric: "log_loss", unit: "nats", target: Target::None },
        Figure {
            label: "Bayes-optimal log loss / impression",
            metric: "optimum_log_loss",
            unit: "nats",
            target: Target::None,
        },
        Figure {
            label: "log loss ÷ optimum (all)",
            metric: "ratio_vs_optimum",
            unit: "×",
            target: Target::AtMost(1.01),
        },
        Figure {
            label: "log loss ÷ optimum, first window left out",
            metric: "ratio_vs_optimum_after_first_window",
            unit: "×",
            target: Target::None,
        },
        Figure {
            label: "campaign-blind bound log loss / impression",
            metric: "campaign_blind_log_loss",
            unit: "nats",
            target: Target::None,
        },
        Figure {
            label: "campaign-blind bound ÷ optimum (all)",
            metric: "campaign_blind_ratio_vs_optimum",
            unit: "×",
            target: Target::None,
        },
        Figure {
            label: "campaign-blind bound ÷ optimum past warm-up",
            metric: "campaign_blind_ratio_vs_optimum_past_warmup",
            unit: "×",
            target: Target::None,
        },
        Figure {
            label: "log loss ÷ campaign-blind bound past warm-up",
            metric: "ratio_vs_campaign_blind_past_warmup",
            unit: "×",
            target: Target::None,
        },
        Figure { label: "log loss past warm-up", metric: "log_loss_past_warmup", unit: "nats", target: Target::None },
        Figure {
            label: "optimum past warm-up",
            metric: "optimum_log_loss_past_warmup",
            unit: "nats",
            target: Target::None,
        },
        Figure {
            label: "log loss ÷ optimum past warm-up",
            metric: "ratio_vs_optimum_past_warmup",
            unit: "×",
            target: Target::AtMost(1.01),
        },
        Figure {
            label: "calibration past warm-up (goal 0.98–1.02)",
            metric: "calibration_past_warmup",
            unit: "×",
            target: Target::None,
        },
        Figure {
            label: "|calibration − 1| past warm-up",
            metric: "calibration_error_past_warmup",
            unit: "",
            target: Target::AtMost(0.02),
        },
        Figure {
            label: "normalized entropy past warm-up",
            metric: "normalized_entropy_past_warmup",
            unit: "",
            target: Target::None,
        },
        Figure { label: "AUC past warm-up", metric: "auc_past_warmup", unit: "", target: Target::None },
        Figure { label: "optimum AUC past warm-up", metric: "optimum_auc_past_warmup", unit: "", target: Target::None },
        Figure { label: "learning wall time", metric: "learn_wall_s", unit: "s", target: Target::None },
        Figure {
            label: "learning CPU s per 1M events",
            metric: "learn_cpu_s_per_m_events",
            unit: "s",
            target: Target::None,
        },
        Figure {
            label: "windowing CPU s per 1M events",
            metric: "window_cpu_s_per_m_events",
            unit: "s",
            target: Target::None,
        },
        Figure {
            label: "windowing + learning CPU s per 1M events",
            metric: "total_cpu_s_per_m_events",
            unit: "s",
            target: Target::None,
        },
        Figure { label: "window × segment cells", metric: "cells", unit: "cells", target: Target::None },
    ];
    let config = json!({
        "events": args.events, "reps": args.reps, "traffic": args.traffic.name(), "campaigns": args.campaigns,
        "seed": args.seed, "event_rate": args.event_rate, "window_s": WINDOW_US / 1_000_000, "jitter_s": 0,
        "partitions": 1, "rollup": "campaign_id,ad_format,country,device:10s", "warmup_events": args.warmup,
        "params": format!("{:?}", args.params),
        "export": args.export.as_ref().map(|p| p.display().to_string()),
    });
    let checks = json!({
        "cells": cells.len(), "impressions": model_all.impressions, "clicks": model_all.clicks,
        "cells_past_warmup": model_past.examples, "impressions_past_warmup": model_past.impressions,
        "cells_with_true_ctr_at_least_1": q_at_least_1,
        "engine_matches_generator": true,
    });
    let name = if args.event_rate == DEFAULT_EVENT_RATE {
        format!("learner-{}-{}c", args.traffic.name(), args.campaigns)
    } else {
        format!("learner-{}-{}c-{}eps", args.traffic.name(), args.campaigns, args.event_rate)
    };
    finish(
        out,
        &name,
        &format!(
            "CTR learner vs the Bayes optimum: {} events, --traffic {}, {} campaigns, {} events/s of event time \
             (warm-up {} events)",
            args.events,
            args.traffic.name(),
            args.campaigns,
            args.event_rate,
            args.warmup
        ),
        config,
        &runs,
        &figures,
        checks,
    )
}
