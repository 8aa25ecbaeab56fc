//! Unit tests of the processor: rollups, campaign churn and limits, seeded restores, rejects.

use super::*;
use crate::engine::event::{AdFormat, Country, Device};
use crate::engine::rollup::Dims;

fn ev(id: &str, ts: &str, fmt: &str, ty: &str, rev: &str) -> Vec<u8> {
    format!(r#"{{"event_id":"{id}","timestamp":"{ts}","campaign_id":"C001","ad_format":"{fmt}","country":"US","device":"iOS","event_type":"{ty}","revenue":{rev}}}"#).into_bytes()
}

#[test]
fn every_message_ends_up_counted_late_or_rejected() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut p = Processor::with_rollups(cfg, vec![Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us)], 4096).unwrap();
    p.init_partition(0, None);
    let msgs: Vec<Vec<u8>> = vec![
        ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
        b"garbage".to_vec(),
        ev("b", "2025-12-10T00:00:16", "banner", "click", "0.05"),
        ev("c", "2025-12-10T00:00:02", "banner", "impression", "0.0"), // late: watermark 00:00:16
        ev("d", "2025-12-10T03:00:00", "banner", "impression", "0.0"), // far future
        Vec::new(),
        ev("b", "2025-12-10T00:00:16", "banner", "click", "0.05"), // redelivered
    ];
    // Produced at 00:00:20: "d" is 3 h ahead of its message, the others
    // are behind it.
    let produced = Some(1_765_324_820_000_000);
    // The caller's clock, handed in: the engine reads none.
    let clock = crate::engine::Now { instant: std::time::Instant::now(), epoch_us: 42 };
    p.set_clock(clock);
    for (i, m) in msgs.iter().enumerate() {
        p.process(0, i as i64, produced, None, m);
    }
    let b = p.take_batch();
    assert_eq!(b.rows.len(), 1, "window [00:00:00, 00:00:10) closed");
    assert_eq!(b.due.iter().map(|d| d.1 as usize).sum::<usize>(), 1, "every row is timed once");
    assert!(b.due.iter().all(|d| d.0 == clock.instant), "due by the caller's clock");
    assert!(b.rejected.iter().all(|r| r.rejected_at_us == 42), "rejected at the caller's clock");
    assert_eq!(b.rows[0].row.totals.impressions, 1);
    assert_eq!(b.late.len(), 1);
    assert_eq!(b.late[0].event_id, "c");
    let reasons: Vec<_> = b.rejected.iter().map(|r| (r.offset, r.reason)).collect();
    assert_eq!(
        reasons,
        vec![(1, RejectReason::InvalidJson), (4, RejectReason::FutureTimestamp), (5, RejectReason::EmptyMessage)]
    );
    let c = b.counts;
    assert_eq!(c.consumed, 7);
    assert_eq!(c.duplicates, 1);
    assert_eq!((c.counted, c.late, c.rejected_total()), (2, 1, 3));
    assert_eq!(c.rejected[RejectReason::FutureTimestamp.index()], 1);
    assert_eq!(c.by_kind[0], [1, 1], "banner: one impression, one click");
    assert_eq!(c.counted + c.late + c.rejected_total() + c.duplicates, 7);
    assert_eq!(b.commits, vec![(0, Checkpoint::at(2, Some(1_765_324_801_000_000), Some(1_765_324_816_000_000)))]);
    assert!(!p.pending(), "nothing new since the batch");
    p.process(0, 2, produced, None, &msgs[2]);
    assert!(!p.pending(), "a redelivered offset is ignored");
    p.fire_partition(0);
    assert!(p.pending(), "an idle partition's open window goes out");
    let b = p.take_batch();
    assert_eq!(b.rows.len(), 1);
    assert_eq!(b.due.len(), 1, "the forced row is timed from its emission");
    assert_eq!(b.rows[0].row.totals.clicks, 1);
    assert!(!b.rows[0].row.is_final);
    assert_eq!(b.counts.consumed, 0, "the redelivered offset was not processed again");
    assert!(!p.pending(), "nothing new after the forced batch");
}

#[test]
fn every_default_rollup_gets_every_counted_event() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut p = Processor::new(cfg, 4096);
    assert_eq!(p.rollups().len(), 5);
    p.init_partition(0, None);
    let msgs = [
        ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
        ev("b", "2025-12-10T00:00:02", "banner", "click", "0.05"),
        ev("c", "2025-12-10T00:00:31", "interstitial", "impression", "0.0"),
        ev("d", "2025-12-10T00:00:03", "banner", "impression", "0.0"), // late: watermark 00:00:31
    ];
    for (i, m) in msgs.iter().enumerate() {
        p.process(0, i as i64, None, None, m);
    }
    p.fire_all();
    let b = p.take_batch();
    for (i, r) in p.rollups().iter().enumerate() {
        let rows: Vec<_> = b.rows.iter().filter(|o| o.row.rollup as usize == i).collect();
        let events: u64 = rows.iter().map(|o| o.row.totals.impressions + o.row.totals.clicks).sum();
        assert_eq!(events, 3, "rollup {}", r.name());
        let segmented = r.dims.contains(Dims::COUNTRY);
        assert!(rows.iter().all(|o| o.row.key.country.is_some() == segmented && o.row.key.ad_format.is_some()));
    }
    assert_eq!(b.late.len(), 1, "late once, not once per rollup");
    assert_eq!((b.late[0].country, b.late[0].device), (Country::Us, Device::Ios));
    let console: Vec<_> = b.console_rows().map(|o| (o.row.window_start_us, o.row.key.ad_format)).collect();
    assert_eq!(console.len(), 2, "the console shows the campaign × format 10 s rows: {console:?}");
    assert!(console.contains(&(1_765_324_800_000_000, Some(AdFormat::Banner))));
}

/// A message without a Kafka timestamp is guarded against its
/// partition's watermark: one event a year ahead is rejected instead
/// of holding its window (and the checkpoint) in memory for good.
#[test]
fn a_message_without_a_timestamp_is_guarded_by_the_watermark() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut p = Processor::new(cfg, 4096);
    p.init_partition(0, None);
    let msgs = [
        ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
        ev("b", "2026-12-10T00:00:01", "banner", "impression", "0.0"), // a year ahead
        ev("c", "2025-12-10T00:40:00", "banner", "impression", "0.0"), // 40 min ahead: within 1 h, held
        ev("d", "2025-12-10T00:00:02", "banner", "impression", "0.0"),
    ];
    for (i, m) in msgs.iter().enumerate() {
        p.process(0, i as i64, None, None, m);
    }
    let b = p.take_batch();
    let rejected: Vec<_> = b.rejected.iter().map(|r| (r.offset, r.reason)).collect();
    assert_eq!(rejected, vec![(1, RejectReason::FutureTimestamp)]);
    assert!(b.rejected[0].detail.contains("watermark"), "{}", b.rejected[0].detail);
    assert_eq!((b.counts.counted, b.counts.late), (3, 0), "the 40-minute event is held, so d is on time");
}

#[test]
fn rollups_must_fit_the_base_window() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let r = |s: i64| Rollup::new(Dims::CAMPAIGN_FORMAT, s * 1_000_000);
    let refused = |rollups: Vec<Rollup>| Processor::with_rollups(cfg, rollups, 4096).err().unwrap();
    let e = refused(vec![]);
    assert_eq!(
        (e.clone(), e.to_string().as_str()),
        (RollupsError::Empty, "no rollup configured (--rollup): nothing would be aggregated")
    );
    let e = refused(vec![r(10), r(15)]);
    assert_eq!(e, RollupsError::NotAMultiple { rollup: "campaign_id,ad_format:15s".into(), base: "10s".into() });
    assert_eq!(
        e.to_string(),
        "rollup campaign_id,ad_format:15s: its window must be a whole multiple of --window 10s \
         (the base window decides lateness for every rollup)"
    );
    assert!(matches!(refused(vec![r(5)]), RollupsError::NotAMultiple { .. }), "shorter than the base window");
    let e = refused(vec![r(10), r(10)]);
    assert_eq!(e.to_string(), "rollup campaign_id,ad_format:10s is configured twice");
    let e = refused(vec![r(10); 256]);
    assert_eq!(e.to_string(), "256 rollups configured; at most 255");
    assert!(Processor::with_rollups(cfg, vec![r(20), r(3600)], 4096).is_ok());
}

#[test]
fn a_replay_before_the_commit_writes_no_reject_or_late_record_again() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let msgs = [
        ev("a", "2025-12-10T00:00:01", "banner", "impression", "0.0"),
        b"garbage".to_vec(),
        ev("b", "2025-12-10T00:00:31", "banner", "impression", "0.0"),
        ev("c", "2025-12-10T00:00:02", "banner", "impression", "0.0"), // late
        ev("d", "2025-12-10T00:00:32", "banner", "impression", "0.0"),
        b"more garbage".to_vec(),
    ];
    let mut first = Processor::new(cfg, 4096);
    first.init_partition(0, None);
    for (i, m) in msgs[..5].iter().enumerate() {
        first.process(0, i as i64, None, None, m);
    }
    let b = first.take_batch();
    assert_eq!((b.rejected.len(), b.late.len()), (1, 1));
    let cp = b.commits[0].1;
    assert_eq!((cp.resume_offset, cp.offset), (0, 2), "the minute and the hour need offset 0 again");
    let mut again = Processor::new(cfg, 4096);
    again.init_partition(0, Some(cp));
    for (i, m) in msgs.iter().enumerate() {
        again.process(0, i as i64, None, None, m);
    }
    let b = again.take_batch();
    let rejected: Vec<i64> = b.rejected.iter().map(|r| r.offset).collect();
    assert_eq!(rejected, vec![5], "only the reject after the commit is new");
    let late: Vec<i64> = b.late.iter().map(|l| l.offset).collect();
    assert_eq!(late, vec![3], "offset 3 is after the commit: written again (idempotent by position)");
    assert_eq!(b.counts.replay_skipped, 2, "the first event's closed window and the garbage before the commit");
}

/// Campaign churn (issue 18 item 3): events of campaign `c` at second
/// `sec` after 2025-12-10T00:00:00.
fn churn_event(prefix: char, n: u64, c: u64, sec: i64, click: bool) -> Vec<u8> {
    let ts = crate::engine::time::format_event_timestamp(1_765_324_800_000_000 + sec * 1_000_000);
    let (ty, rev) = if click { ("click", "0.25") } else { ("impression", "0.0") };
    format!(r#"{{"event_id":"{prefix}{n}","timestamp":"{ts}","campaign_id":"{prefix}{c:07}","ad_format":"banner","country":"US","device":"iOS","event_type":"{ty}","revenue":{rev}}}"#).into_bytes()
}

/// `windows` base windows of 10 s, `per` new campaigns in each, one
/// impression each; the first 30 % of the campaigns of the previous
/// window click early in the next one (on time: lateness 5 s). Each
/// base window starts `gap` seconds after the previous, the first at
/// second `t0`; ids and campaigns begin with `prefix`.
fn churn(windows: u64, per: u64, gap: i64, t0: i64, prefix: char) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut n = 0;
    for k in 0..windows {
        let start = t0 + k as i64 * gap;
        for i in 0..per {
            n += 1;
            out.push(churn_event(prefix, n, k * per + i, start + (i * 10 / per) as i64, false));
            if k > 0 && i * 10 < per * 3 && (start - gap) + 10 + 5 > start + (i * 10 / per) as i64 {
                n += 1;
                out.push(churn_event(prefix, n, (k - 1) * per + i, start - gap + 9, true));
            }
        }
    }
    out
}

/// Keeps the highest version of each row, as ReplacingMergeTree does;
/// campaigns by name (ids are reused).
type Table = BTreeMap<(u8, i64, String, Option<AdFormat>), (u64, Totals)>;

fn upsert(table: &mut Table, b: &Batch) {
    for r in &b.rows {
        let k = (r.row.rollup, r.row.window_start_us, b.campaign(r).to_string(), r.row.key.ad_format);
        let e = table.entry(k).or_insert((0, Totals::default()));
        if r.row.version >= e.0 {
            *e = (r.row.version, r.row.totals);
        }
    }
}

use crate::engine::window::Totals;

fn churn_processor(limit: usize) -> Processor {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let rollups = vec![
        Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us),
        Rollup::new(Dims::CAMPAIGN_FORMAT, 60_000_000),
        Rollup::new(Dims::CAMPAIGN_FORMAT, 3_600_000_000),
    ];
    Processor::with_rollups(cfg, rollups, 4096).unwrap().with_campaign_limit(limit)
}

/// The reported case: 150,000 campaigns over 150 windows, 1,000 at a
/// time. Before, 100,000 were counted and 50,000 rejected; now all are,
/// and once their hour closes their ids are given back and reused.
#[test]
fn campaign_churn_is_all_counted_and_ids_are_reclaimed() {
    let mut p = churn_processor(MAX_CAMPAIGNS_PER_WINDOW);
    p.init_partition(0, None);
    let msgs = churn(150, 1000, 10, 0, 'K');
    let mut table = BTreeMap::new();
    let mut counts = Counts::default();
    for (o, m) in msgs.iter().enumerate() {
        p.process(0, o as i64, None, None, m);
        if o % 10_000 == 9_999 {
            let b = p.take_batch();
            counts.add(&b.counts);
            upsert(&mut table, &b);
        }
    }
    // From 00:35, 150 more windows of new campaigns, 10 min apart
    // (campaigns starting and ending over a day).
    let later = churn(150, 1000, 600, 2100, 'L');
    let mut peak_live = 0;
    let base = msgs.len();
    for (o, m) in later.iter().enumerate() {
        p.process(0, (base + o) as i64, None, None, m);
        if o % 1_000 == 999 {
            let b = p.take_batch();
            counts.add(&b.counts);
            upsert(&mut table, &b);
            // Once the first hour (all of the first burst) has closed.
            if b.footprint.min_watermark_us.is_some_and(|wm| wm >= 1_765_324_800_000_000 + 3_605_000_000) {
                peak_live = peak_live.max(b.footprint.campaigns_interned);
            }
        }
    }
    p.fire_all();
    let b = p.take_batch();
    counts.add(&b.counts);
    upsert(&mut table, &b);
    let events = (msgs.len() + later.len()) as u64;
    assert_eq!(counts.rejected_total(), 0, "{:?}", counts.rejected);
    assert_eq!((counts.counted, counts.late, counts.duplicates), (events, 0, 0));
    // Every campaign's 10 s, 1 m and 1 h rows hold its events.
    for rollup in 0..3u8 {
        let mut per: BTreeMap<&str, (u64, u64, i64)> = BTreeMap::new();
        for ((r, _, c, _), (_, t)) in &table {
            if *r == rollup {
                let e = per.entry(c.as_str()).or_default();
                e.0 += t.impressions;
                e.1 += t.clicks;
                e.2 += t.revenue_micros;
            }
        }
        assert_eq!(per.len(), 300_000, "rollup {rollup}: every campaign has rows");
        let impressions: u64 = per.values().map(|v| v.0).sum();
        let clicks: u64 = per.values().map(|v| v.1).sum();
        assert_eq!(impressions, 300_000);
        assert_eq!(impressions + clicks, events, "rollup {rollup}");
        assert!(per.values().all(|v| v.0 == 1 && v.2 == 250_000 * v.1 as i64));
    }
    // After the first hour closed: in open windows at most the
    // campaigns of an hour (6 windows of 1,000) and the closing ones;
    // ids reused, so the highest id stays about that of the first
    // burst plus the second burst's first windows before that hour
    // closed (without reuse: 300,000).
    assert!(peak_live > 0 && peak_live <= 8_000, "campaigns interned at once: {peak_live}");
    assert!(p.interner.names().len() <= 160_000, "highest id {}", p.interner.names().len());
}

/// With a limit of 500 campaigns per base window, the first 500 of each
/// window's 1,000 are counted (with their clicks) and the rest rejected;
/// a restart from a checkpoint in the middle decides exactly the same.
#[test]
fn the_campaign_limit_is_per_base_window_and_replays_exactly() {
    let msgs = churn(40, 1000, 10, 0, 'K');
    let run = |crash_after: Option<usize>| {
        let mut p = churn_processor(500);
        p.init_partition(0, None);
        let mut table = BTreeMap::new();
        let mut rejected = std::collections::BTreeSet::new();
        let mut o = 0;
        let mut crashed = false;
        while o < msgs.len() {
            p.process(0, o as i64, None, None, &msgs[o]);
            o += 1;
            if o % 2_000 == 0 {
                let b = p.take_batch();
                upsert(&mut table, &b);
                rejected.extend(b.rejected.iter().map(|r| r.offset));
                if !crashed && crash_after.is_some_and(|c| o >= c) {
                    // Restart from the commit of that batch.
                    crashed = true;
                    let cp = b.commits[0].1;
                    assert!(cp.resume_offset < o as i64);
                    p = churn_processor(500);
                    p.init_partition(0, Some(cp));
                    o = cp.resume_offset as usize;
                }
            }
        }
        p.fire_all();
        let b = p.take_batch();
        upsert(&mut table, &b);
        rejected.extend(b.rejected.iter().map(|r| r.offset));
        (table, rejected)
    };
    let (table, rejected) = run(None);
    // 500 impressions rejected per window (the clicks are of the first
    // 300 campaigns of the window before: admitted).
    assert_eq!(rejected.len(), 40 * 500);
    let impressions: u64 = table.iter().filter(|(k, _)| k.0 == 0).map(|(_, v)| v.1.impressions).sum();
    assert_eq!(impressions, 40 * 500);
    for crash in [2_000, 10_000, 26_000] {
        let (t, r) = run(Some(crash));
        assert_eq!(r, rejected, "crash after {crash}: the same messages rejected");
        assert_eq!(t, table, "crash after {crash}: the same rows");
    }
}

/// A campaign is held until all its windows have closed, not only its
/// longest one: with 40 s and 60 s rollups, an event at 00:50 is in
/// [00:00, 01:00) and [00:40, 01:20). Released at 01:05, its id would
/// be reused by the next new campaign while [00:40, 01:20) still
/// counted the first one under it.
#[test]
fn a_campaign_is_held_until_its_last_window_closes_whatever_the_sizes() {
    let cfg = WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let rollups = vec![
        Rollup::new(Dims::CAMPAIGN_FORMAT, cfg.size_us),
        Rollup::new(Dims::CAMPAIGN_FORMAT, 40_000_000),
        Rollup::new(Dims::CAMPAIGN_FORMAT, 60_000_000),
    ];
    let mut p = Processor::with_rollups(cfg, rollups, 4096).unwrap();
    p.init_partition(0, None);
    let mut table = Table::new();
    let msgs = [churn_event('a', 0, 1, 50, false), churn_event('b', 1, 2, 70, false)];
    for (o, m) in msgs.iter().enumerate() {
        p.process(0, o as i64, None, None, m);
    }
    upsert(&mut table, &p.take_batch());
    p.process(0, 2, None, None, &churn_event('c', 2, 3, 71, false));
    p.fire_all();
    upsert(&mut table, &p.take_batch());
    let forty: Vec<_> = table
        .iter()
        .filter(|(k, _)| k.0 == 1 && k.1 == 1_765_324_840_000_000)
        .map(|(k, v)| (k.2.as_str(), v.1.impressions))
        .collect();
    assert_eq!(forty, vec![("a0000001", 1), ("b0000002", 1), ("c0000003", 1)]);
}
