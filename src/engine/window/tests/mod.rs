//! Unit tests of the windows: boundaries, lateness, deduplication, keys, checkpoints.

use super::*;
use crate::engine::rollup::Dims;
use std::collections::BTreeMap;
use EventType::{Click, Impression};

const S: i64 = 1_000_000;

/// One partition with the campaign × format rollup at the base window.
fn pw(cfg: WindowConfig) -> PartitionWindows {
    PartitionWindows::new(cfg, &[Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)])
}

fn restored(cfg: WindowConfig, cp: &Checkpoint) -> PartitionWindows {
    PartitionWindows::restore(cfg, &[Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)], cp)
}

/// Downstream: (rollup, window start, key) → (totals, version).
type Table = BTreeMap<(u8, i64, SegmentKey), (Totals, u64)>;

fn obs(ts: i64, campaign: u32, ad_format: AdFormat, event_type: EventType, revenue_micros: i64) -> Observation {
    // Distinct ids unless a test says otherwise.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    Observation {
        ts,
        campaign,
        ad_format,
        country: Country::Us,
        device: Device::Ios,
        event_type,
        revenue_micros,
        id,
        msg_ts: None,
    }
}

fn cfg() -> WindowConfig {
    WindowConfig::new(10 * S, 5 * S, 3600 * S)
}

type Ev = (f64, u32, AdFormat, EventType, i64);

/// Feeds (ts seconds, campaign, format, type, revenue) at offsets
/// `first_offset..`, returning the final rows closed and the outcomes.
fn feed(w: &mut PartitionWindows, first_offset: i64, events: &[Ev]) -> (Vec<WindowRow>, Vec<Outcome>) {
    let mut out = Vec::new();
    let mut outcomes = Vec::new();
    for (i, &(t, c, f, ty, r)) in events.iter().enumerate() {
        let ts = (t * S as f64).round() as i64;
        outcomes.push(w.observe(first_offset + i as i64, &obs(ts, c, f, ty, r), &mut out));
    }
    (out, outcomes)
}

fn updates(w: &mut PartitionWindows) -> Vec<WindowRow> {
    let mut out = Vec::new();
    w.emit_updates(&mut out);
    out
}

#[test]
fn window_boundaries_are_half_open_and_epoch_aligned() {
    let c = cfg();
    assert_eq!(c.window_start(0), 0);
    assert_eq!(c.window_start(10 * S - 1), 0);
    assert_eq!(c.window_start(10 * S), 10 * S, "00:00:10.000 belongs to the next window");
    assert_eq!(c.window_start(-1), -10 * S);
    assert_eq!(c.window_start(1_765_327_581_994_570), 1_765_327_580_000_000);
}

#[test]
fn fire_epoch_moves_when_the_watermark_passes_a_window_end() {
    let mut w = pw(cfg());
    let b = |t: f64| (t, 0, AdFormat::Banner, Impression, 0);
    feed(&mut w, 0, &[b(1.0), b(9.9)]);
    assert_eq!(w.fire_epoch(), 0, "window [0, 10) still open");
    feed(&mut w, 2, &[b(10.0)]);
    assert_eq!(w.fire_epoch(), 1, "watermark 10 s: [0, 10) fired");
    feed(&mut w, 3, &[b(5.0), b(19.9)]);
    assert_eq!(w.fire_epoch(), 1, "no window end passed");
    feed(&mut w, 5, &[b(45.0)]);
    assert_eq!(w.fire_epoch(), 2, "one jump past several ends is one firing moment");
    let mut r = restored(cfg(), &w.checkpoint().unwrap());
    assert_eq!(r.fire_epoch(), 0);
    // The checkpoint resumes at offset 5 (window [40, 50)) with the
    // watermark seen before it, 19.9 s: 45 passes the end 20, 50 the end 50.
    feed(&mut r, 5, &[b(45.0), b(46.0), b(50.0)]);
    assert_eq!(r.fire_epoch(), 2, "a restored partition counts from its checkpointed watermark");
}

#[test]
fn event_exactly_on_the_boundary_goes_to_the_next_window() {
    let mut w = pw(cfg());
    feed(&mut w, 0, &[(9.999999, 0, AdFormat::Banner, Impression, 0), (10.0, 0, AdFormat::Banner, Impression, 0)]);
    w.fire_all();
    let out = updates(&mut w);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].window_start_us, 0);
    assert_eq!(out[1].window_start_us, 10 * S);
    assert_eq!(out[1].window_end_us, 20 * S);
    assert!(out.iter().all(|r| r.totals.impressions == 1 && !r.is_final));
}

#[test]
fn window_fires_at_its_end_and_closes_after_the_allowed_lateness() {
    let mut w = pw(cfg());
    feed(&mut w, 0, &[(1.0, 0, AdFormat::Banner, Impression, 0), (9.999, 0, AdFormat::Banner, Impression, 0)]);
    assert!(!w.has_updates(), "watermark 9.999 < end 10");
    assert!(updates(&mut w).is_empty());
    let (closed, _) = feed(&mut w, 2, &[(10.0, 0, AdFormat::Banner, Click, 20_000)]);
    assert!(closed.is_empty());
    assert!(w.has_updates());
    let fired = updates(&mut w);
    assert_eq!(fired.len(), 1, "watermark 10 fires [0,10)");
    assert!(!fired[0].is_final);
    assert_eq!(fired[0].totals, Totals { impressions: 2, clicks: 0, revenue_micros: 0 });
    assert_eq!(fired[0].version, 2 * 2);
    assert!(updates(&mut w).is_empty(), "nothing changed since");
    let (closed, _) = feed(&mut w, 3, &[(14.999, 0, AdFormat::Banner, Impression, 0)]);
    assert!(closed.is_empty(), "still within the 5 s lateness");
    let (closed, _) = feed(&mut w, 4, &[(15.0, 0, AdFormat::Banner, Impression, 0)]);
    assert_eq!(closed.len(), 1, "watermark 15 = end + lateness closes [0,10)");
    assert!(closed[0].is_final);
    assert_eq!(closed[0].totals, fired[0].totals);
    assert_eq!(closed[0].version, 2 * 2 + 1, "the final row outranks the fired one");
    assert_eq!(w.open_windows(), 1);
}

#[test]
fn late_event_within_lateness_updates_the_fired_window() {
    let mut w = pw(cfg());
    let (_, outcomes) =
        feed(&mut w, 0, &[(8.0, 0, AdFormat::Banner, Impression, 0), (13.0, 0, AdFormat::Banner, Impression, 0)]);
    assert_eq!(outcomes, vec![Outcome::Counted, Outcome::Counted]);
    let first = updates(&mut w);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].totals, Totals { impressions: 1, clicks: 0, revenue_micros: 0 });
    // 3.5 s behind the watermark, 1.5 s before lateness runs out.
    let (_, outcomes) = feed(&mut w, 2, &[(9.5, 0, AdFormat::Banner, Click, 50_000)]);
    assert_eq!(outcomes, vec![Outcome::Updated]);
    let second = updates(&mut w);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 50_000 });
    assert!(second[0].version > first[0].version);
    let (closed, _) = feed(&mut w, 3, &[(16.0, 0, AdFormat::Banner, Impression, 0)]);
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].totals, second[0].totals);
    assert!(closed[0].is_final && closed[0].version > second[0].version);
}

#[test]
fn only_changed_cells_are_emitted_again() {
    let mut w = pw(cfg());
    feed(
        &mut w,
        0,
        &[
            (1.0, 0, AdFormat::Banner, Impression, 0),
            (1.0, 1, AdFormat::Banner, Impression, 0),
            (11.0, 0, AdFormat::Banner, Impression, 0),
        ],
    );
    assert_eq!(updates(&mut w).len(), 2);
    feed(&mut w, 3, &[(2.0, 1, AdFormat::Banner, Click, 5)]);
    let again = updates(&mut w);
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].key.campaign, again[0].totals.clicks), (Some(1), 1));
}

#[test]
fn events_behind_a_closed_window_are_late_not_lost() {
    let mut w = pw(cfg());
    let (out, outcomes) = feed(
        &mut w,
        0,
        &[
            (1.0, 0, AdFormat::Banner, Impression, 0),
            (16.0, 0, AdFormat::Banner, Impression, 0),
            (9.0, 0, AdFormat::Banner, Click, 10),
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(outcomes[2], Outcome::Late { window_start_us: 0, watermark_us: 16 * S });
}

#[test]
fn a_gap_of_any_length_between_events_is_no_reason_to_refuse_one() {
    let mut w = pw(cfg());
    let hour = 3600.0;
    let (_, outcomes) = feed(
        &mut w,
        0,
        &[
            (100.0, 0, AdFormat::Banner, Impression, 0),
            (100.0 + 2.0 * hour, 0, AdFormat::Banner, Impression, 0),
            (100.0 + 27.0 * hour, 0, AdFormat::Banner, Impression, 0),
        ],
    );
    assert_eq!(outcomes, vec![Outcome::Counted; 3]);
    // Each resumption is ahead of the watermark; its fourth event moves it.
    assert_eq!(w.watermark(), Some(100 * S), "held, one supporter so far");
    let t = 100.0 + 27.0 * hour;
    let b = |t: f64| (t, 0, AdFormat::Banner, Impression, 0);
    let (_, outcomes) = feed(&mut w, 3, &[b(t + 1.0), b(t + 2.0), b(t + 3.0)]);
    assert_eq!(outcomes, vec![Outcome::Counted; 3]);
    assert_eq!(w.watermark(), Some(((100.0 + 2.0 * hour) as i64) * S), "corroborated: the lowest held time");
    feed(&mut w, 6, &[b(t + 4.0), b(t + 5.0), b(t + 6.0), b(t + 7.0)]);
    assert_eq!(w.watermark(), Some((t + 7.0) as i64 * S), "and the next run catches up");
}

#[test]
fn a_redelivered_event_id_is_counted_once_while_its_window_is_in_memory() {
    let mut w = pw(cfg());
    let mut out = Vec::new();
    let click = |ts: i64, id: u128| Observation {
        ts,
        campaign: 0,
        ad_format: AdFormat::Banner,
        country: Country::Us,
        device: Device::Ios,
        event_type: Click,
        revenue_micros: 30_000,
        id,
        msg_ts: None,
    };
    assert_eq!(w.observe(0, &click(S, 7), &mut out), Outcome::Counted);
    assert_eq!(w.observe(1, &click(S, 7), &mut out), Outcome::Duplicate);
    assert_eq!(w.observe(2, &click(12 * S, 8), &mut out), Outcome::Counted);
    // After the window fired, within lateness: still recognised.
    assert_eq!(w.observe(3, &click(S, 7), &mut out), Outcome::Duplicate);
    assert_eq!(w.dedup_footprint().0, 2);
    w.fire_all();
    let rows = updates(&mut w);
    assert_eq!(rows[0].totals, Totals { impressions: 0, clicks: 1, revenue_micros: 30_000 });
    assert_eq!(rows[0].version, 2, "the duplicate did not bump the version");
    // Once the window closed, its ids are gone with it: a redelivery is late.
    w.observe(4, &click(20 * S, 9), &mut out);
    assert_eq!(w.observe(5, &click(S, 7), &mut out), Outcome::Late { window_start_us: 0, watermark_us: 20 * S });
    assert_eq!(w.dedup_footprint().0, 2, "ids 8 and 9");
    // A new window reuses the closed one's id set, emptied.
    assert_eq!(w.observe(6, &click(35 * S, 7), &mut out), Outcome::Counted, "a recycled id set starts empty");
    assert_eq!(w.observe(7, &click(35 * S, 7), &mut out), Outcome::Duplicate);
}

#[test]
fn dedup_memory_per_million_events_in_flight() {
    let mut w = pw(WindowConfig::new(3600 * S, 0, 3600 * S));
    let mut out = Vec::new();
    let n = 1_000_000u64;
    for i in 0..n {
        // Generator-shaped ids: a constant run id and a sequence number.
        let id = (0xDEAD_BEEF_u128 << 64) | u128::from(i);
        let o = Observation {
            ts: S + i as i64,
            campaign: (i % 5) as u32,
            ad_format: AdFormat::Banner,
            country: Country::Us,
            device: Device::Ios,
            event_type: Impression,
            revenue_micros: 0,
            id,
            msg_ts: None,
        };
        assert_eq!(w.observe(i as i64, &o, &mut out), Outcome::Counted);
    }
    let (ids, bytes) = w.dedup_footprint();
    assert_eq!(ids as u64, n);
    let per_million_mb = bytes as f64 / ids as f64 * 1e6 / (1024.0 * 1024.0);
    println!("dedup: {ids} ids in flight take {bytes} bytes = {per_million_mb:.1} MiB per million events");
    assert!(per_million_mb < 40.0, "{per_million_mb} MiB per million");
}

#[test]
fn keys_are_separate() {
    let mut w = pw(cfg());
    feed(
        &mut w,
        0,
        &[
            (1.0, 2, AdFormat::RewardedVideo, Impression, 0),
            (1.0, 0, AdFormat::Interstitial, Click, 7),
            (1.0, 2, AdFormat::RewardedVideo, Click, 9),
            (1.0, 0, AdFormat::Banner, Impression, 0),
        ],
    );
    let (out, _) = feed(&mut w, 4, &[(30.0, 0, AdFormat::Banner, Impression, 0)]);
    let mut out: Vec<_> = out.into_iter().filter(|r| r.window_start_us == 0).collect();
    out.sort_by_key(|r| r.key);
    let keys: Vec<_> = out.iter().map(|r| (r.key.campaign, r.key.ad_format)).collect();
    assert_eq!(
        keys,
        vec![
            (Some(0), Some(AdFormat::Banner)),
            (Some(0), Some(AdFormat::Interstitial)),
            (Some(2), Some(AdFormat::RewardedVideo))
        ]
    );
    assert!(out.iter().all(|r| r.key.country.is_none() && r.key.device.is_none()), "not in this rollup");
    assert_eq!(out[0].totals, Totals { impressions: 1, clicks: 0, revenue_micros: 0 });
    assert_eq!(out[1].totals, Totals { impressions: 0, clicks: 1, revenue_micros: 7 });
    assert_eq!(out[2].totals, Totals { impressions: 1, clicks: 1, revenue_micros: 9 });
    assert_eq!(out[2].version, 2 * 3 + 1);
}

#[test]
fn ctr_and_ecpm_with_and_without_impressions() {
    let t = Totals { impressions: 85, clicks: 4, revenue_micros: 230_000 };
    assert!((ctr_percent(&t).unwrap() - 4.705882352941177).abs() < 1e-12);
    assert!((ecpm_usd(&t).unwrap() - 2.7058823529411766).abs() < 1e-12);
    let none = Totals { impressions: 0, clicks: 3, revenue_micros: 100 };
    assert_eq!(ctr_percent(&none), None);
    assert_eq!(ecpm_usd(&none), None);
}

#[test]
fn checkpoint_points_at_the_oldest_window_in_memory() {
    let mut w = pw(cfg());
    assert_eq!(w.checkpoint(), None);
    w.skip(41);
    assert_eq!(w.checkpoint().unwrap().offset, 42);
    feed(&mut w, 42, &[(1.0, 0, AdFormat::Banner, Impression, 0), (12.0, 0, AdFormat::Banner, Impression, 0)]);
    let cp = w.checkpoint().unwrap();
    assert_eq!(cp, Checkpoint::at(42, None, Some(12 * S)), "[0,10) fired but not closed: still replayed");
    feed(&mut w, 44, &[(16.0, 0, AdFormat::Banner, Impression, 0)]);
    let cp = w.checkpoint().unwrap();
    assert_eq!(cp, Checkpoint::at(43, Some(S), Some(16 * S)));
}

#[test]
fn metadata_round_trips_and_foreign_metadata_is_ignored() {
    let cp = Checkpoint::at(7, Some(-5), None);
    assert_eq!(Checkpoint::from_metadata(7, &cp.metadata()), Some(cp));
    assert_eq!(Checkpoint::from_metadata(7, ""), None);
    assert_eq!(Checkpoint::from_metadata(7, "adstream/2 at=x closed=-"), None);
    assert_eq!(Checkpoint::from_metadata(7, "adstream/1 at=1 closed=2"), None, "older clock meaning");
    assert_eq!(Checkpoint::from_metadata(7, "someone else"), None);
}

mod replay;
