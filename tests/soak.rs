//! A week of traffic, compressed (RELIABILITY.md, "The soak"): `run`
//! against the real broker and ClickHouse over days of event time, with
//! what a week of real traffic brings — nightly quiet hours, campaigns
//! starting and ending every day, 0.1 % of events from clocks up to 30
//! minutes off, producer redeliveries, a restart every simulated 12 h
//! (SIGKILL and SIGTERM in turn), one consumer-group offset reset and 60 s
//! of a ClickHouse that accepts connections and never answers. Afterwards
//! every window, every rollup and the late set equal the oracle over the
//! raw events (which decides lateness itself, by the documented rule), and
//! per simulated day it prints what could grow: RSS, open cells,
//! deduplication ids, rows written, messages re-read per restart.
//!
//! Beside `run`, two `adstream learn` of one model learn the week as it
//! closes: a writer and a hot standby (`--lease-ttl 3s`), redis-server
//! killed -9 and started again (empty) in the first half day, the writer
//! killed -9 in the second (the standby takes over, a new standby starts).
//! Afterwards every impression of `ad_metrics_segments_10s` up to the
//! newest window closed on every partition is learned exactly once or
//! counted in `ad_ctr_abandoned`, `current` in Redis never moved backwards
//! (watched every 50 ms), no snapshot version forked; per simulated day it
//! prints the writer's RSS, Redis `used_memory` and `ad_ctr_model`'s bytes
//! on disk, held flat like the rest.
//!
//! `ADSTREAM_SOAK_DAYS` (default 1, the variant `scripts/test.sh` runs);
//! `scripts/soak.sh` runs 7 days with a release build. From day 2 on, the
//! figures must stay flat (see [`assert_flat`]).

mod common;
mod soak_support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use soak_support::*;

/// 2025-12-01T00:00:00Z: the soak's first simulated day starts here.
const START_S: i64 = 1_764_547_200;
const HALF_DAY_S: i64 = 43_200;
/// Events per simulated second outside the quiet hours, all partitions.
const RATE: f64 = 1.0;
/// Quiet hours, UTC: no traffic from 01:00 to 05:00.
const QUIET: std::ops::Range<i64> = 1..5;
/// Campaigns live at once; each simulated day half of them end and as many
/// new ones start.
const LIVE_CAMPAIGNS: u32 = 20;
/// Share of events stamped by a clock up to ±30 minutes off.
const SKEWED: f64 = 0.001;
/// Share of events the producer sends twice (a retry after a lost ack).
const REDELIVERED: f64 = 0.003;
const LATENESS: &str = "5s";

/// One message to produce: where it goes and what it carries.
#[derive(Clone)]
struct Msg {
    partition: i32,
    key: String,
    payload: Vec<u8>,
    /// The Kafka timestamp: when the event "arrived", not its own time.
    kafka_ts_ms: i64,
}

/// The week's traffic, half a day at a time; seeded, so every run of the
/// soak produces the same messages.
struct Traffic {
    rng: ChaCha8Rng,
    /// Redeliveries not sent yet: (messages still to come before it, msg).
    pending: Vec<(u32, Msg)>,
    events: u64,
    redeliveries: u64,
}

const FORMATS: [(&str, f64); 3] = [("banner", 0.05), ("interstitial", 0.12), ("rewarded_video", 0.25)];
/// Country and its click revenue range in units of 0.0001 USD.
const COUNTRIES: [(&str, u32, u32); 7] = [
    ("US", 200, 1000),
    ("KR", 100, 500),
    ("JP", 150, 800),
    ("UK", 150, 700),
    ("DE", 100, 600),
    ("FR", 100, 500),
    ("CA", 150, 700),
];

impl Traffic {
    fn new(seed: u64) -> Self {
        Traffic { rng: ChaCha8Rng::seed_from_u64(seed), pending: Vec::new(), events: 0, redeliveries: 0 }
    }

    /// The messages of half-day `h` (0 = the first morning), in send order.
    fn half_day(&mut self, h: i64) -> Vec<Msg> {
        let day = h / 2;
        let (from, to) = (START_S + h * HALF_DAY_S, START_S + (h + 1) * HALF_DAY_S);
        let mut out = Vec::new();
        let mut t = from as f64;
        loop {
            t += -self.rng.random::<f64>().max(1e-12).ln() / RATE;
            if t >= to as f64 {
                break;
            }
            let hour = (t as i64).rem_euclid(86_400) / 3600;
            if QUIET.contains(&hour) {
                continue;
            }
            let arrival_us = (t * 1e6) as i64;
            let msg = self.event(day, arrival_us);
            out.push(msg.clone());
            self.events += 1;
            if self.rng.random_bool(REDELIVERED) {
                self.pending.push((self.rng.random_range(1..10), msg));
            }
            // Redeliveries due now go out, stamped with the time they are
            // sent again.
            let mut i = 0;
            while i < self.pending.len() {
                if self.pending[i].0 == 0 {
                    let (_, mut again) = self.pending.swap_remove(i);
                    again.kafka_ts_ms = arrival_us / 1000;
                    out.push(again);
                    self.redeliveries += 1;
                } else {
                    self.pending[i].0 -= 1;
                    i += 1;
                }
            }
        }
        out
    }

    /// One event that arrives at `arrival_us`: its own time trails that by
    /// up to 2 s (12 s for 1 % of them: some are late), or is off by up to
    /// 30 minutes either way for a skewed clock.
    fn event(&mut self, day: i64, arrival_us: i64) -> Msg {
        let r = &mut self.rng;
        let ts_us = if r.random_bool(SKEWED) {
            arrival_us + r.random_range(-1_800_000_000..=1_800_000_000)
        } else if r.random_bool(0.01) {
            arrival_us - r.random_range(0..12_000_000)
        } else {
            arrival_us - r.random_range(0..2_000_000)
        };
        let id: u128 = r.random();
        let event_id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (id >> 96) as u32,
            (id >> 80) as u16,
            (id >> 64) as u16,
            (id >> 48) as u16,
            id & 0xffff_ffff_ffff
        );
        // Campaigns of day d: C(10d+1) … C(10d+20); half end each day.
        let campaign = (day as u32) * (LIVE_CAMPAIGNS / 2) + r.random_range(1..=LIVE_CAMPAIGNS);
        let (format, ctr) = FORMATS[r.random_range(0..FORMATS.len())];
        let (country, lo, hi) = COUNTRIES[r.random_range(0..COUNTRIES.len())];
        let device = if r.random_bool(0.5) { "iOS" } else { "Android" };
        let click = r.random_bool(ctr);
        let revenue = if click { r.random_range(lo..=hi) } else { 0 };
        let ts = chrono::DateTime::from_timestamp_micros(ts_us).expect("a time in range");
        let payload = format!(
            "{{\"event_id\":\"{event_id}\",\"timestamp\":\"{}\",\"user_id\":\"U{}\",\"campaign_id\":\"C{campaign:03}\",\
             \"ad_format\":\"{format}\",\"country\":\"{country}\",\"device\":\"{device}\",\"event_type\":\"{}\",\
             \"revenue\":{}.{:04}}}",
            ts.format("%Y-%m-%dT%H:%M:%S%.6f"),
            r.random_range(10_000..100_000),
            if click { "click" } else { "impression" },
            revenue / 10_000,
            revenue % 10_000
        );
        let partition = (xxhash_rust::xxh3::xxh3_64(event_id.as_bytes()) % 3) as i32;
        Msg { partition, key: event_id, payload: payload.into_bytes(), kafka_ts_ms: arrival_us / 1000 }
    }
}

/// Sends `msgs` and appends each payload to `jsonl` (the oracle's list of
/// valid events); panics unless every one is acknowledged.
async fn produce(topic: &str, msgs: &[Msg], jsonl: &Path) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("producer");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(jsonl).expect("jsonl");
    for chunk in msgs.chunks(100_000) {
        // send_result enqueues at once (FutureProducer::send would enqueue
        // only when awaited: one message per round trip).
        let sends: Vec<_> = chunk
            .iter()
            .map(|m| {
                let record = FutureRecord::to(topic)
                    .partition(m.partition)
                    .key(&m.key)
                    .payload(&m.payload)
                    .timestamp(m.kafka_ts_ms);
                p.send_result(record).unwrap_or_else(|(e, _)| panic!("produce: {e}"))
            })
            .collect();
        for (r, m) in sends.into_iter().zip(chunk) {
            match r.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => panic!("produce: {e}"),
                Err(_) => panic!("produce: delivery report lost"),
            }
            file.write_all(&m.payload).unwrap();
            file.write_all(b"\n").unwrap();
        }
    }
}

/// The newest snapshot row of the model: (version, learned_through ms,
/// impressions, clicks).
async fn model_row(db: &str, model: &str) -> Option<(u64, i64, u64, u64)> {
    let t = tsv(&format!(
        "SELECT version, toUnixTimestamp64Milli(learned_through), impressions, clicks \
         FROM {db}.ad_ctr_model WHERE model = '{model}' ORDER BY version DESC LIMIT 1"
    ))
    .await;
    let v: Vec<&str> = t.trim().split('\t').collect();
    match v[..] {
        [a, b, c, d] => Some((a.parse().ok()?, b.parse().ok()?, c.parse().ok()?, d.parse().ok()?)),
        _ => None,
    }
}

/// Waits until the model has learned through `through_ms` (a window
/// start); returns its row.
async fn learned_through(db: &str, model: &str, through_ms: i64, limit: Duration) -> (u64, i64, u64, u64) {
    let t0 = Instant::now();
    loop {
        let m = model_row(db, model).await;
        if let Some(m) = m.filter(|m| m.1 >= through_ms) {
            return m;
        }
        assert!(t0.elapsed() < limit, "the learner did not learn through {through_ms} within {limit:?}: {m:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn redis_used_memory() -> Option<u64> {
    let mut con = redis::Client::open(redis_url()).ok()?.get_connection().ok()?;
    let info: String = redis::cmd("INFO").arg("memory").query(&mut con).ok()?;
    info.lines().find_map(|l| l.strip_prefix("used_memory:"))?.trim().parse().ok()
}

fn redis_pid() -> Option<u32> {
    let port = redis_addr().rsplit(':').next()?.to_string();
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(".run/redis/{port}/redis.pid"));
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Watches `adstream:<db>:<model>:current` every 50 ms until stopped;
/// returns the versions seen, in order, and every step backwards.
fn watch_current(db: &str, model: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(Vec<u64>, Vec<String>)> {
    let key = format!("adstream:{db}:{model}:current");
    std::thread::spawn(move || {
        let (mut seen, mut backwards, mut con) = (Vec::<u64>::new(), Vec::new(), None);
        while !stop.load(Ordering::Relaxed) {
            if con.is_none() {
                con = redis::Client::open(redis_url()).ok().and_then(|c| c.get_connection().ok());
            }
            if let Some(c) = con.as_mut() {
                match redis::cmd("GET").arg(&key).query::<Option<u64>>(c) {
                    Ok(Some(v)) => {
                        if let Some(&last) = seen.last() {
                            if v < last {
                                backwards.push(format!("{last} -> {v}"));
                            }
                        }
                        if seen.last() != Some(&v) {
                            seen.push(v);
                        }
                    }
                    Ok(None) => {}
                    Err(_) => con = None, // Redis killed: reconnect when it is back
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        (seen, backwards)
    })
}

/// What the learners cost at the end of one simulated day.
#[derive(Debug, Default, Clone)]
struct LearnDay {
    redis_used_mib: f64,
    model_table_mib: f64,
    /// The writer's resident set.
    rss_mib: f64,
    version: u64,
    snapshots: i64,
}

/// What one simulated day cost.
#[derive(Debug, Default, Clone)]
struct Day {
    rss_mib: f64,
    open_windows: f64,
    open_cells: f64,
    dedup_ids: f64,
    rows_written: f64,
    reread: Vec<u64>,
    /// The day of the offset reset: its replay of every earlier day is an
    /// injected cost, printed but not held to the flat line.
    reset: bool,
    learn: LearnDay,
}

/// From day 2 on (day 1 starts from nothing), what lives in memory and what
/// is written per day must not grow: each day's figure at most 1.5× day 2's
/// (plus a floor for the small numbers). The day of the offset reset is
/// left out: it replays the whole topic on purpose.
fn assert_flat(days: &[Day]) {
    let Some(base) = days.get(1) else { return };
    for (i, d) in days.iter().enumerate().skip(2).filter(|(_, d)| !d.reset) {
        for (what, v, b, floor) in [
            ("RSS MiB", d.rss_mib, base.rss_mib, 16.0),
            ("open cells", d.open_cells, base.open_cells, 500.0),
            ("dedup ids", d.dedup_ids, base.dedup_ids, 500.0),
            ("rows written", d.rows_written, base.rows_written, 5_000.0),
            ("learner RSS MiB", d.learn.rss_mib, base.learn.rss_mib, 16.0),
            ("Redis used_memory MiB", d.learn.redis_used_mib, base.learn.redis_used_mib, 2.0),
            ("ad_ctr_model MiB", d.learn.model_table_mib, base.learn.model_table_mib, 2.0),
        ] {
            assert!(v <= b * 1.5 + floor, "day {}: {what} {v} vs day 2's {b}: it grows with time", i + 1);
        }
    }
}

async fn soak(days: i64) {
    let t_test = Instant::now();
    let dir = scratch_dir();
    let topic = unique("ad_events");
    create_topic(&topic).await;
    let proxy = StallProxy::start(clickhouse_url().trim_start_matches("http://").trim_end_matches('/').to_string());
    let flags = [
        "--allowed-lateness",
        LATENESS,
        "--clickhouse-url",
        &proxy.url(),
        "--kafka-option",
        "session.timeout.ms=6000",
        "--kafka-option",
        "heartbeat.interval.ms=1000",
    ];
    let pipe = Pipeline::new(&topic, &unique("g"), &unique("soak"), &flags);
    let jsonl = dir.join("week.jsonl");
    let mut traffic = Traffic::new(0x50a4);
    let mut run = Run::start(&pipe, "run0", &dir);
    // The learners: a writer and a standby of one model, on the same
    // database (learn creates no table: it starts once run has made them).
    let model = unique("m");
    let t0 = Instant::now();
    while try_scalar(&format!("SELECT count() FROM {}.ad_source_partitions", pipe.db)).await.is_none()
        || try_scalar(&format!("SELECT count() FROM {}.ad_ctr_model", pipe.db)).await.is_none()
    {
        assert!(t0.elapsed() < Duration::from_secs(120), "run created the tables within 120 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut learners =
        vec![Learn::start(&pipe.db, &model, "learn0", &dir), Learn::start(&pipe.db, &model, "learn1", &dir)];
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_current(&pipe.db, &model, stop_watch.clone());
    let redis_ours = !external_service("redis");
    let mut takeovers: Vec<f64> = Vec::new();
    let mut table: Vec<Day> = Vec::new();
    let mut day = Day::default();
    let (mut messages, mut rows_before) = (0u64, 0.0);
    println!("soak: {days} simulated day(s) from 2025-12-01, topic {topic}, database {}", pipe.db);
    for h in 0..days * 2 {
        let msgs = traffic.half_day(h);
        messages += msgs.len() as u64;
        let stall_now = h == 1;
        if stall_now {
            // ClickHouse accepts and never answers for 60 s, while the
            // half day's traffic arrives.
            proxy.stall(true);
        }
        let t0 = Instant::now();
        produce(&topic, &msgs, &jsonl).await;
        if stall_now {
            std::thread::sleep(Duration::from_secs(60).saturating_sub(t0.elapsed()));
            run.runner.assert_alive("through 60 s of a ClickHouse that never answers");
            proxy.stall(false);
        }
        if h == 0 {
            // Redis killed (-9) while the learners learn the morning, then
            // started again, empty: the lease and every published version
            // are gone; the writer waits, takes the lease again and
            // republishes from its snapshot in ClickHouse.
            if redis_ours {
                let pid = redis_pid().expect("scripts/redis.sh started redis-server");
                std::thread::sleep(Duration::from_secs(2));
                signal(pid, "KILL");
                wait_until("redis-server to die", Duration::from_secs(10), || {
                    TcpStream::connect(redis_addr()).is_err()
                });
                std::thread::sleep(Duration::from_secs(3));
                for l in &mut learners {
                    l.runner.assert_alive("with Redis down");
                }
                service("redis", "up");
                println!("  redis-server killed (-9) and started again during half-day 1");
            } else {
                println!("redis-server kill -9 in the soak: SKIPPED (ADSTREAM_TEST_EXTERNAL_SERVICES names redis)");
            }
        }
        if h == 1 {
            // kill -9 of the writer: the standby takes over within the
            // lease; a new standby starts in its place.
            let t0 = Instant::now();
            let writer = loop {
                if let Some(i) = learners.iter().position(|l| l.leader() == Some(1.0)) {
                    break i;
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "no learner holds the lease");
                std::thread::sleep(Duration::from_millis(100));
            };
            let killed = learners.remove(writer);
            killed.runner.kill9();
            let t0 = Instant::now();
            wait_until("the standby to take over", Duration::from_secs(60), || learners[0].leader() == Some(1.0));
            takeovers.push(t0.elapsed().as_secs_f64());
            println!("  learner kill -9: the standby took over in {:.1} s (--lease-ttl {LEASE_TTL})", takeovers[0]);
            learners.push(Learn::start(&pipe.db, &model, &format!("learn{}", h + 2), &dir));
        }
        let m = run.caught_up(&topic, Duration::from_secs(600));
        let rows = metric(&m, "adstream_window_rows_written_total");
        day.rows_written += rows - rows_before;
        if h % 2 == 1 {
            day.rss_mib = vm_rss_kb(run.runner.pid()).unwrap_or(0) as f64 / 1024.0;
            day.open_windows = metric(&m, "adstream_open_windows");
            day.open_cells = metric(&m, "adstream_open_cells");
            day.dedup_ids = metric(&m, "adstream_dedup_ids");
        }
        // A restart every simulated 12 h: SIGKILL and SIGTERM in turn; in
        // the middle of the run, one offset reset instead.
        let name = format!("run{}", h + 1);
        let reset = h == days - 1;
        if reset || h % 2 == 1 {
            let (status, took) = run.runner.sigterm(Duration::from_secs(30));
            assert!(status.success(), "SIGTERM: {status}");
            assert!(took < Duration::from_secs(10), "SIGTERM honoured within 10 s, took {took:?}");
        } else {
            run.runner.kill9();
        }
        if reset {
            // An operator replays the topic: the group's offsets (and their
            // metadata) go back to the beginning.
            let group_reset = std::process::Command::new("bash")
                .args(["scripts/kafka.sh", "groups", "--group", &pipe.group, "--topic", &topic])
                .args(["--reset-offsets", "--to-earliest", "--execute"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .expect("kafka.sh groups");
            assert!(group_reset.status.success(), "reset-offsets: {}", tail(&group_reset.stderr));
            println!("  offset reset to the earliest after half-day {}", h + 1);
            day.reset = true;
        }
        run = Run::start(&pipe, &name, &dir);
        let m = run.caught_up(&topic, Duration::from_secs(600));
        let reread = metric(&m, "adstream_events_consumed_total") as u64;
        // The learners keep up: every window up to a minute before the end
        // of the half day (the last ones close with the next one's traffic).
        let end_ms = (START_S + (h + 1) * HALF_DAY_S) * 1000;
        let learned = learned_through(&pipe.db, &model, end_ms - 60_000, Duration::from_secs(600)).await;
        for l in &mut learners {
            l.runner.assert_alive("through the soak");
        }
        if h % 2 == 1 {
            let writer = learners.iter().find(|l| l.leader() == Some(1.0)).unwrap_or(&learners[0]);
            let db = &pipe.db;
            day.learn = LearnDay {
                redis_used_mib: redis_used_memory().unwrap_or(0) as f64 / 1048576.0,
                model_table_mib: scalar(&format!(
                    "SELECT sum(bytes_on_disk) FROM system.parts WHERE database = '{db}' AND table = 'ad_ctr_model' \
                     AND active"
                ))
                .await as f64
                    / 1048576.0,
                rss_mib: vm_rss_kb(writer.runner.pid()).unwrap_or(0) as f64 / 1024.0,
                version: learned.0,
                snapshots: scalar(&format!("SELECT count() FROM {db}.ad_ctr_model WHERE model = '{model}'")).await,
            };
        }
        // A restart reads on from the commit (the longer windows seeded from
        // downstream): about the allowed lateness plus a base window of
        // traffic, more while a fast clock's event holds its window open;
        // never the hour a 1 h rollup once cost (3,600 messages here).
        assert!(reset || reread <= 2_000, "restart after half-day {} re-read {reread} messages", h + 1);
        day.reread.push(reread);
        rows_before = metric(&m, "adstream_window_rows_written_total");
        day.rows_written += rows_before;
        if h % 2 == 1 {
            println!(
                "  day {}: RSS {:.1} MiB, open windows {}, open cells {}, dedup ids {}, rows written {}, \
                 re-read per restart {:?}{} ({:.0} s so far)",
                table.len() + 1,
                day.rss_mib,
                day.open_windows,
                day.open_cells,
                day.dedup_ids,
                day.rows_written,
                day.reread,
                if day.reset { " (offset reset: the whole topic replayed)" } else { "" },
                t_test.elapsed().as_secs_f64()
            );
            println!(
                "  day {} learner: RSS {:.1} MiB, Redis used_memory {:.2} MiB, ad_ctr_model {:.2} MiB on disk \
                 ({} snapshots), model v{}",
                table.len() + 1,
                day.learn.rss_mib,
                day.learn.redis_used_mib,
                day.learn.model_table_mib,
                day.learn.snapshots,
                day.learn.version
            );
            table.push(std::mem::take(&mut day));
        }
    }
    let (status, _) = run.runner.sigterm(Duration::from_secs(30));
    assert!(status.success(), "the last run on SIGTERM: {status}");
    let drain = pipe.start("drain", &["--drain"], &dir);
    drain.wait_ok(Duration::from_secs(600));

    let oracle = Oracle::load(&pipe.db, &topic, &[jsonl.as_path()], LATENESS).await;
    let (rows, late, duplicates) = oracle.assert_matches_redelivered(messages).await;
    println!(
        "soak: {days} day(s), {} events + {} redeliveries, {rows} rows equal to the oracle, {late} late, \
         {duplicates} duplicates dropped, {:.0} s",
        traffic.events,
        traffic.redeliveries,
        t_test.elapsed().as_secs_f64()
    );
    assert!(traffic.redeliveries > 0 && duplicates > 0, "the soak exercises redeliveries");
    assert!(late > 0, "the soak exercises the late path");

    // The learner learns through the newest window every partition has
    // closed (the drain's last window is written, not final: more events
    // could still come), and every impression of ad_metrics_segments_10s
    // up to there is learned exactly once or counted in ad_ctr_abandoned.
    let db = &pipe.db;
    let last = scalar(&format!(
        "SELECT toInt64(min(closed)) FROM (SELECT partition, toUnixTimestamp64Milli(max(window_start)) AS closed \
         FROM {db}.ad_window_parts WHERE rollup_name = 'campaign_id,ad_format,country,device:10s' AND is_final \
         GROUP BY partition)"
    ))
    .await;
    let m = learned_through(db, &model, last, Duration::from_secs(600)).await;
    stop_watch.store(true, Ordering::Relaxed);
    let (versions, backwards) = watcher.join().expect("the watcher of current");
    assert!(backwards.is_empty(), "adstream:<db>:<model>:current moved backwards: {backwards:?}");
    assert!(versions.len() > 1, "current was published: {versions:?}");
    let view = tsv(&format!(
        "SELECT sum(impressions), sum(clicks) FROM {db}.ad_metrics_segments_10s \
         WHERE window_start <= fromUnixTimestamp64Milli({}, 'UTC')",
        m.1
    ))
    .await;
    let abandoned = tsv(&format!(
        "SELECT reason, sum(impressions), sum(clicks), count() FROM {db}.ad_ctr_abandoned \
         WHERE model = '{model}' AND window_start <= fromUnixTimestamp64Milli({}, 'UTC') GROUP BY reason",
        m.1
    ))
    .await;
    let (ai, ac) = abandoned.lines().fold((0i64, 0i64), |(i, c), l| {
        let f: Vec<&str> = l.split('\t').collect();
        (i + f[1].parse::<i64>().expect("impressions"), c + f[2].parse::<i64>().expect("clicks"))
    });
    assert_eq!(
        view.trim(),
        format!("{}\t{}", m.2 as i64 + ai, m.3 as i64 + ac),
        "ad_metrics_segments_10s = learned ({} impressions, {} clicks) + abandoned ({ai}, {ac}: {abandoned:?})",
        m.2,
        m.3
    );
    // One history in ClickHouse too: no version saved with two contents,
    // no later version that learned less.
    common::learn::assert_one_snapshot_history(db, &model).await;
    println!(
        "soak learner: learned through the last window, v{}: {} impressions + {} clicks learned, {ai} + {ac} \
         abandoned ({}) = ad_metrics_segments_10s; current seen at {} versions, never backwards; takeover {:?} s",
        m.0,
        m.2,
        m.3,
        if abandoned.trim().is_empty() { "none".to_string() } else { abandoned.trim().replace('\n', "; ") },
        versions.len(),
        takeovers
    );
    for l in learners {
        let (status, _) = l.runner.sigterm(Duration::from_secs(20));
        assert!(status.success(), "learn on SIGTERM: {status}");
    }
    assert_flat(&table);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh (1 day) or scripts/soak.sh (7 days)"]
async fn a_compressed_week_loses_nothing_and_stays_flat() {
    let days = std::env::var("ADSTREAM_SOAK_DAYS").ok().and_then(|d| d.parse().ok()).unwrap_or(1);
    soak(days).await;
}
