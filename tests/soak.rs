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
//! `ADSTREAM_SOAK_DAYS` (default 1, the variant `scripts/test.sh` runs);
//! `scripts/soak.sh` runs 7 days with a release build. From day 2 on, the
//! figures must stay flat (see [`assert_flat`]).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

/// A TCP proxy in front of ClickHouse that can stall: while stalled it
/// still accepts connections but moves no byte either way, like a host that
/// accepts and never answers.
struct StallProxy {
    port: u16,
    stalled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl StallProxy {
    fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy listener");
        let port = listener.local_addr().unwrap().port();
        let (stalled, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (s, st) = (stalled.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else { continue };
                    let (s, st) = (s.clone(), st.clone());
                    std::thread::spawn(move || pump(&mut from, &mut to, &s, &st));
                }
            }
        });
        StallProxy { port, stalled, stop }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Relaxed);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(from: &mut TcpStream, to: &mut TcpStream, stalled: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        if stalled.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// GET `path` on `127.0.0.1:port`; the body, or None if nothing answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The sum of every series of metric `name` (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// One `run` process of the soak, with its metrics endpoint.
struct Run {
    runner: Runner,
    port: u16,
}

impl Run {
    fn start(pipe: &Pipeline, name: &str, dir: &Path) -> Run {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let runner = pipe.start(name, &["--metrics-addr", &addr], dir);
        Run { runner, port }
    }

    fn metrics(&mut self) -> String {
        let t0 = Instant::now();
        loop {
            self.runner.assert_alive("while the soak reads its metrics");
            if let Some(m) = http_get(self.port, "/metrics").filter(|m| m.contains("adstream_events_consumed_total")) {
                return m;
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "{}: no /metrics within 60 s", self.runner.name);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the process has read every message of `topic` (no
    /// partition behind the high watermark), then until its windows have
    /// been written (nothing consumed or written for 2 s); returns the
    /// final metrics.
    fn caught_up(&mut self, topic: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        let end = high_watermarks(topic).map(sum3).expect("high watermarks");
        let mut last = (String::new(), Instant::now());
        loop {
            let m = self.metrics();
            let lag = metric(&m, "adstream_consumer_lag");
            let parts = m.lines().filter(|l| l.starts_with("adstream_consumer_lag{")).count();
            let key = format!(
                "{} {} {}",
                metric(&m, "adstream_events_consumed_total"),
                metric(&m, "adstream_window_rows_written_total"),
                metric(&m, "adstream_offset_commits_total")
            );
            if parts == 3 && lag == 0.0 && key == last.0 && last.1.elapsed() > Duration::from_secs(2) {
                return m;
            }
            if key != last.0 {
                last = (key, Instant::now());
            }
            assert!(
                t0.elapsed() < limit,
                "{}: not caught up with {end} messages after {limit:?} (lag {lag}, {parts} partitions)",
                self.runner.name
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
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
    assert_flat(&table);
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh (1 day) or scripts/soak.sh (7 days)"]
async fn a_compressed_week_loses_nothing_and_stays_flat() {
    let days = std::env::var("ADSTREAM_SOAK_DAYS").ok().and_then(|d| d.parse().ok()).unwrap_or(1);
    soak(days).await;
}
