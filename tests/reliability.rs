//! Failure injection on the real thing: `adstream run` is SIGKILLed,
//! SIGTERMed, scaled out and in, and loses its Kafka broker or its
//! ClickHouse mid-stream; afterwards every row of `ad_metrics_10s` must equal
//! the SQL oracle over the raw events (nothing lost, nothing counted twice).
//!
//! The broker and ClickHouse tests stop and start the services of the test
//! run through `scripts/kafka.sh` / `scripts/clickhouse.sh`, so every test in
//! this file takes [`SERVICES`] first: none of them may run while a service
//! is down. Cargo runs test binaries one after another, so keeping the
//! disruptive tests in this file alone is enough to keep other tests out of
//! the way. With `ADSTREAM_TEST_EXTERNAL_SERVICES=1` (services not ours to
//! stop) those two tests skip.
//!
//! Every run uses a short consumer-group session (6 s instead of 45 s) so
//! that the group notices a SIGKILLed member quickly; that is a test-speed
//! choice, not something the pipeline relies on.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Serialises the tests of this file: each may take a service down.
static SERVICES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A short group session, so that the group notices a SIGKILLed member
/// quickly: a test-speed choice, not something the pipeline relies on.
const FAST_GROUP: [&str; 4] =
    ["--kafka-option", "session.timeout.ms=6000", "--kafka-option", "heartbeat.interval.ms=1000"];

/// 3 s of jitter against 1 s of allowed lateness: a few percent of the
/// events are late, and every replay after a kill, outage or rebalance must
/// classify exactly the same ones as late.
const JITTER: &str = "3s";
const LATENESS: &str = "1s";

/// One fault test's setting, so that each test reads as its scenario: it
/// holds [`SERVICES`] for the whole test; a fresh topic, consumer group and
/// database with `run` on them ([`FAST_GROUP`], [`LATENESS`], plus the
/// test's flags); a scratch directory; the peak-memory watch over every
/// process it starts; and the generator producing beside the pipeline.
struct Fault {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    /// The test's name in its printed lines.
    name: &'static str,
    pipe: Pipeline,
    dir: PathBuf,
    rss: RssWatch,
    gen: Option<Generator>,
    started: Instant,
}

impl Fault {
    /// Takes [`SERVICES`] (waiting for the test before to finish), then a
    /// fresh topic, group and database for `run` with `extra` flags.
    async fn begin(name: &'static str, extra: &[&str]) -> Self {
        let serial = SERVICES.lock().await;
        Fault {
            _serial: serial,
            name,
            pipe: Pipeline::new(&unique("ad_events"), &unique("g"), &unique("rel"), &run_flags(extra)),
            dir: scratch_dir(),
            rss: RssWatch::new(),
            gen: None,
            started: Instant::now(),
        }
    }

    /// Whether the services are not ours to stop
    /// (`ADSTREAM_TEST_EXTERNAL_SERVICES=1`); then it prints the SKIPPED
    /// line naming `whose` (the service the test would stop).
    fn skipped(&self, whose: &str) -> bool {
        let skip = external_services();
        if skip {
            println!("{}: SKIPPED (ADSTREAM_TEST_EXTERNAL_SERVICES=1: {whose} is not ours to stop)", self.name);
        }
        skip
    }

    fn topic(&self) -> &str {
        &self.pipe.topic
    }

    /// Messages in the topic so far.
    fn produced(&self) -> i64 {
        produced(&self.pipe.topic)
    }

    /// Starts the generator beside the pipeline (`n` events, `seed`,
    /// [`JITTER`], `rate` events/s) and waits until the topic exists, so
    /// runners subscribe to a topic with its 3 partitions.
    fn live(&mut self, n: u64, seed: u64, rate: u64) {
        self.live_from(GenSpec::new(n, seed, JITTER, rate));
    }

    /// [`Fault::live`] with the whole spec (e.g. a later `start_time`).
    fn live_from(&mut self, spec: GenSpec) {
        self.gen = Some(Generator::start(&self.pipe.topic, spec, &self.dir));
        wait_until("the generator to create the topic", Duration::from_secs(60), || self.produced() > 0);
    }

    fn generator_running(&mut self) -> bool {
        self.gen.as_mut().is_some_and(Generator::is_running)
    }

    /// Waits for the generator beside the pipeline to deliver all its events.
    fn generator_done(&mut self) -> PathBuf {
        self.gen.take().expect("a generator was started").finish(Duration::from_secs(300))
    }

    /// `n` events as fast as possible with the generator (event time 1000
    /// per second), before any runner starts.
    fn backlog(&self, n: u64, seed: u64) -> PathBuf {
        Generator::start(&self.pipe.topic, GenSpec::new(n, seed, JITTER, 0), &self.dir).finish(Duration::from_secs(300))
    }

    /// `n` events with `adstream generate`'s own defaults, before any
    /// runner starts.
    fn produce_now(&self, n: u64, seed: u64) -> PathBuf {
        generate(&self.pipe.topic, n, seed, JITTER, &self.dir)
    }

    /// A second pipeline (own group and database) on the same topic.
    fn second_pipeline(&self, extra: &[&str]) -> Pipeline {
        Pipeline::new(&self.pipe.topic, &unique("g"), &unique("rel"), &run_flags(extra))
    }

    /// Starts one `run` (plus `extra` flags) as `name`, its memory watched.
    fn start(&self, name: &str, extra: &[&str]) -> Runner {
        self.start_in(&self.pipe, name, extra)
    }

    /// [`Fault::start`] in `pipe`.
    fn start_in(&self, pipe: &Pipeline, name: &str, extra: &[&str]) -> Runner {
        let r = pipe.start(name, extra, &self.dir);
        self.rss.watch(r.pid());
        r
    }

    /// Polls `cond` as [`wait_until`] does, every runner of `alive` asserted
    /// alive (`when`) at each poll.
    fn wait(&self, what: &str, limit: Duration, alive: &mut [&mut Runner], when: &str, mut cond: impl FnMut() -> bool) {
        wait_until(what, limit, || {
            alive.iter_mut().for_each(|r| r.assert_alive(when));
            cond()
        });
    }

    /// Runs a `--drain` restart named `name` to its end.
    fn drain(&self, name: &str) {
        self.start(name, &["--drain"]).wait_ok(Duration::from_secs(300));
    }

    /// Every window, rollup and late event against the oracle over `jsonls`
    /// (`n` events), and each partition's contribution against its length.
    async fn check(&self, jsonls: &[&Path], n: u64) -> (Oracle, usize, u64) {
        self.pipe.check_oracle(jsonls, n).await
    }

    /// The end of a live-stream test: `runners` catch up, SIGTERM, a drain,
    /// the oracle (see [`Pipeline::finish`]).
    async fn finish(&self, runners: Vec<Runner>, jsonls: &[&Path], n: u64) -> Finish {
        self.pipe.finish(runners, jsonls, n, &self.dir, &self.rss).await
    }

    /// Prints the test's last line: `line`, the peak RSS, how long it took.
    fn report(&self, line: impl std::fmt::Display) {
        println!(
            "{}: {line}; peak RSS {:.0} MiB; took {:.1} s",
            self.name,
            self.rss.peak_mib(),
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// `run`'s flags in every fault test: [`FAST_GROUP`], [`LATENESS`], then
/// `extra`.
fn run_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags = FAST_GROUP.to_vec();
    flags.extend(["--allowed-lateness", LATENESS]);
    flags.extend(extra);
    flags
}

fn produced(topic: &str) -> i64 {
    high_watermarks(topic).map(sum3).unwrap_or(0)
}

const NO_STATS: &str = "the run log has no stats line with `events in N` (--stats-interval 1s)";

/// The last `events in N` of a runner's stats lines.
fn events_in(log: &str) -> Option<u64> {
    let at = log.rfind("events in ")?;
    log[at + "events in ".len()..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn kill_9_at_three_random_points_loses_and_duplicates_nothing() {
    let mut h = Fault::begin("kill -9", &[]).await;
    const N: u64 = 500_000;
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0001);
    // One point in each third of [10%, 90%] of the stream. A restart takes
    // a few seconds (the group waits out the dead member's session), so a
    // kill lands at its point or, if the restarted process has not written
    // anything by then, as soon as it has.
    let third = N as i64 * 8 / 30;
    let points: Vec<i64> = (0..3).map(|k| N as i64 / 10 + k * third + rng.random_range(0..third)).collect();
    println!("kill -9: {N} events at 20k/s, SIGKILL when the topic holds {points:?} events (seeded)");

    h.live(N, 101, 20_000);
    let mut run = h.start("run0", &[]);
    let mut jsonl = None;
    for (i, &point) in points.iter().enumerate() {
        // Kill only while this process is consuming: it has written and
        // committed something since it started, and the topic has reached
        // the kill point.
        let before = h.pipe.committed();
        h.wait(&format!("kill point {i}"), Duration::from_secs(180), &mut [&mut run], "before its SIGKILL", || {
            h.produced() >= point && h.pipe.committed() > before
        });
        let (p, c) = (h.produced(), h.pipe.committed());
        let alive_for = run.started.elapsed().as_secs_f64();
        run.kill9();
        println!("kill -9 #{}: after {alive_for:.1} s, topic at {p} events, group committed {c}", i + 1);
        run = if i + 1 == points.len() {
            // The last restart drains the topic once everything is in it.
            jsonl = Some(h.generator_done());
            h.start("run-drain", &["--drain"])
        } else {
            h.start(&format!("run{}", i + 1), &[])
        };
    }
    run.wait_ok(Duration::from_secs(300));
    let jsonl = jsonl.unwrap();
    let (_, rows, late) = h.check(&[&jsonl], N).await;
    h.report(format_args!(
        "3 SIGKILLs, {N} events checked, {rows} rows equal the SQL oracle ({late} late), no duplicates or gaps"
    ));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn broker_restart_mid_stream_keeps_adstream_running_and_exact() {
    let mut h = Fault::begin("broker restart", &[]).await;
    if h.skipped("the broker") {
        return;
    }
    const N: u64 = 300_000;
    h.live(N, 202, 20_000);
    let mut run = h.start("run", &[]);
    h.wait(
        "adstream to commit and the stream to reach 30%",
        Duration::from_secs(120),
        &mut [&mut run],
        "before the broker restart",
        || h.pipe.committed() > 0 && h.produced() >= N as i64 * 3 / 10,
    );
    let (topic, group) = (h.topic(), &h.pipe.group);
    let (h0, c0) = (high_watermarks(topic).unwrap(), committed_offsets(group, topic).unwrap());

    let t_out = Instant::now();
    let (outage, took_down) = Outage::begin("kafka");
    for _ in 0..10 {
        run.assert_alive("while the broker was down");
        std::thread::sleep(Duration::from_secs(1));
    }
    let took_up = outage.end();
    let outage_s = t_out.elapsed().as_secs_f64();
    run.assert_alive("after the broker came back");
    let (h1, c1) = (high_watermarks(topic).unwrap(), committed_offsets(group, topic).unwrap());
    assert!(h1.iter().zip(&h0).all(|(a, b)| a >= b), "the topic kept its data: {h0:?} -> {h1:?}");
    assert!(c1.iter().zip(&c0).all(|(a, b)| a >= b), "the group kept its offsets: {c0:?} -> {c1:?}");
    println!(
        "broker restart: graceful down ({:.1} s) at {} events produced / {} committed, 10 s stopped, up ({:.1} s): \
         no broker for {outage_s:.1} s; adstream pid {} alive throughout",
        took_down.as_secs_f64(),
        sum3(h0),
        sum3(c0),
        took_up.as_secs_f64(),
        run.pid()
    );

    let jsonl = h.generator_done();
    // Resumed: the same process reads on to the end of the stream.
    let Finish { caught_up, sigterm_exits, rows, late } = h.finish(vec![run], &[&jsonl], N).await;
    h.report(format_args!(
        "resumed and caught up (committed {caught_up} of {N}), SIGTERM exit 0 in {:.1} s; {N} events checked, \
         {rows} rows equal the SQL oracle ({late} late)",
        sigterm_exits[0].as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn clickhouse_outage_holds_offsets_and_memory_then_catches_up() {
    // End-of-partition events on (they are off by default): with them,
    // librdkafka's own resume position after the backpressure pause is one
    // past the last message whenever an EOF came last, and only adstream's
    // seek on resume keeps the message after it (without that seek this
    // test lost one event per partition, every run).
    let mut h = Fault::begin("ClickHouse outage", &["--kafka-option", "enable.partition.eof=true"]).await;
    if h.skipped("ClickHouse") {
        return;
    }
    const N: u64 = 400_000;
    h.live(N, 303, 20_000);
    // A second pipeline (own group and database) lives through the same
    // outage but is SIGKILLed at its end: had it committed anything it had
    // not written, its restart would skip those events and miss the oracle.
    let pipe_k = h.second_pipeline(&[]);
    let mut run = h.start("run", &[]);
    let mut run_k = h.start_in(&pipe_k, "killed", &[]);
    h.wait(
        "both pipelines to commit and the stream to reach 20%",
        Duration::from_secs(120),
        &mut [&mut run, &mut run_k],
        "before the ClickHouse outage",
        || h.pipe.committed() > 0 && pipe_k.committed() > 0 && h.produced() >= N as i64 / 5,
    );
    let (topic, group, db) = (h.topic(), &h.pipe.group, &h.pipe.db);
    // FINAL: background merges of the ReplacingMergeTree may collapse raw
    // rows at any time; the set of (window, key, partition) rows only grows.
    let rows_before = scalar(&format!("SELECT count() FROM {db}.ad_window_parts FINAL")).await;
    let rss_before = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;

    let t_out = Instant::now();
    let (outage, took_down) = Outage::begin("clickhouse");
    // Let an async commit of the last batch written before the outage land.
    std::thread::sleep(Duration::from_secs(2));
    let frozen = committed_offsets(group, topic).expect("committed offsets");
    let (mut in_at_15s, mut rss_at_15s) = (None, 0.0);
    while t_out.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        run.assert_alive("while ClickHouse was down");
        let now = committed_offsets(group, topic).expect("committed offsets");
        assert_eq!(now, frozen, "offsets committed while nothing could be written");
        if in_at_15s.is_none() && t_out.elapsed() >= Duration::from_secs(15) {
            in_at_15s = events_in(&run.log_text());
            rss_at_15s = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;
        }
    }
    let in_at_30s = events_in(&run.log_text());
    let rss_at_30s = vm_hwm_kb(run.pid()).unwrap_or(0) as f64 / 1024.0;
    let produced_during = h.produced();
    run_k.assert_alive("through the ClickHouse outage");
    run_k.kill9();
    let took_up = outage.end();
    let outage_s = t_out.elapsed().as_secs_f64();
    let rows_after = scalar(&format!("SELECT count() FROM {db}.ad_window_parts FINAL")).await;
    assert!(rows_after >= rows_before, "ClickHouse kept its data: {rows_before} rows -> {rows_after}");
    let failures = run.log_text().matches("sink write failed").count();
    assert!(failures > 0, "the outage must have made writes fail (and be retried)");
    // Backpressure: once the batch queue is full the consume loop stops
    // polling, so between 15 s and 30 s into the outage nothing is consumed
    // and memory stays where librdkafka's prefetch bound puts it.
    let (a, b) = (in_at_15s.expect(NO_STATS), in_at_30s.expect(NO_STATS));
    assert_eq!(a, b, "events consumed between 15 s and 30 s into the ClickHouse outage");
    assert!(produced_during > b as i64 + 50_000, "the topic held more to consume ({produced_during} vs {b})");
    assert!(
        rss_at_30s - rss_at_15s < 32.0,
        "memory grew from {rss_at_15s:.0} MiB to {rss_at_30s:.0} MiB while ClickHouse was down"
    );
    println!(
        "ClickHouse outage: down ({:.1} s) for {outage_s:.1} s in all, up ({:.1} s); committed offsets frozen \
         at {frozen:?} throughout; events consumed at 15 s / 30 s into the outage: {a} / {b} (topic at \
         {produced_during}); {failures} write-failure warnings (first 3, then every 20th) and retries; peak RSS \
         {rss_before:.0} MiB before, {rss_at_15s:.0} MiB at 15 s, {rss_at_30s:.0} MiB at 30 s; rows kept \
         {rows_before} -> {rows_after}; the second pipeline SIGKILLed at the end of the outage",
        took_down.as_secs_f64(),
        took_up.as_secs_f64(),
    );

    let jsonl = h.generator_done();
    let restart_k = h.start_in(&pipe_k, "killed-restart-drain", &["--drain"]);
    let Finish { caught_up, sigterm_exits, rows, late } = h.finish(vec![run], &[&jsonl], N).await;
    restart_k.wait_ok(Duration::from_secs(300));
    let (_, rows_k, late_k) = pipe_k.check_oracle(&[&jsonl], N).await;
    h.report(format_args!(
        "caught up (committed {caught_up} of {N}), SIGTERM exit 0 in {:.1} s; {N} events checked, {rows} rows \
         equal the SQL oracle ({late} late); the pipeline SIGKILLed at the end of the outage and restarted: \
         {rows_k} rows equal the oracle ({late_k} late)",
        sigterm_exits[0].as_secs_f64()
    ));
}

/// Partitions each runner's log says it was assigned, in order.
fn assignments(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find("Assigned([").map(|at| l[at..].split(')').next().unwrap_or("").to_string() + ")"))
        .collect()
}

/// The set of partitions ever assigned to a runner.
fn partitions_seen(log: &str) -> std::collections::BTreeSet<i32> {
    assignments(log)
        .iter()
        .flat_map(|a| {
            a.trim_start_matches("Assigned([")
                .trim_end_matches("])")
                .split(", ")
                .filter_map(|p| p.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn scale_out_to_three_and_back_rebuilds_moved_partitions_exactly() {
    let mut h = Fault::begin("scale-out", &[]).await;
    const N: u64 = 300_000;
    h.live(N, 404, 15_000);
    let mut a = h.start("a", &[]);
    let mut b = h.start("b", &[]);
    h.wait(
        "two members to commit and the stream to reach 25%",
        Duration::from_secs(120),
        &mut [&mut a, &mut b],
        "before the scale-out",
        || h.pipe.committed() > 0 && h.produced() >= N as i64 / 4,
    );
    let joined_at = h.produced();
    let mut c = h.start("c", &[]);
    wait_until("the third member to get a partition and the stream to reach 60%", Duration::from_secs(120), || {
        c.assert_alive("after joining");
        !partitions_seen(&c.log_text()).is_empty() && h.produced() >= N as i64 * 6 / 10
    });
    let before_leave = h.pipe.committed();
    wait_until("the group to commit with three members", Duration::from_secs(60), || h.pipe.committed() > before_leave);
    let left_at = h.produced();
    let a_log_at_leave = assignments(&a.log_text());
    let (status, took) = a.sigterm(Duration::from_secs(20));
    assert!(status.success(), "member a on SIGTERM: {status}");
    println!(
        "scale-out: a, b consuming; c joined at {joined_at} events produced; a left (SIGTERM, exit 0 in {:.1} s) at \
         {left_at}",
        took.as_secs_f64()
    );

    let jsonl = h.generator_done();
    // b and c catch up after a left, stop, and a drain finishes the topic.
    let logs = [b.log.clone(), c.log.clone()];
    let Finish { sigterm_exits, rows, late, .. } = h.finish(vec![b, c], &[&jsonl], N).await;
    for (name, took) in ["b", "c"].iter().zip(&sigterm_exits) {
        println!("scale-out: {name} stopped (SIGTERM, exit 0 in {:.1} s)", took.as_secs_f64());
    }
    let [logs_b, logs_c] = logs.map(|l| assignments(&std::fs::read_to_string(l).unwrap_or_default()));
    let seen: Vec<_> = [&a_log_at_leave, &logs_b, &logs_c].iter().map(|l| partitions_seen(&l.join("\n"))).collect();
    println!("scale-out: assignments a {a_log_at_leave:?}, b {logs_b:?}, c {logs_c:?}");
    let moved = (0..3).filter(|p| seen.iter().filter(|s| s.contains(p)).count() >= 2).count();
    assert!(moved > 0, "no partition changed owner: {seen:?}");
    h.report(format_args!(
        "{moved} partition(s) moved between members; {N} events checked, {rows} rows equal the SQL oracle ({late} late)"
    ));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn restart_on_a_drained_topic_changes_no_row() {
    let h = Fault::begin("restart no-op", &[]).await;
    let (topic, group, db) = (h.topic(), &h.pipe.group, &h.pipe.db);
    const N: u64 = 100_000;
    let jsonl = h.produce_now(N, 505);
    h.drain("first");
    let (oracle, rows, late) = h.check(&[&jsonl], N).await;
    let before = parts_snapshot(db).await;
    let offsets = committed_offsets(group, topic).expect("committed offsets");
    assert!(offsets.iter().all(|&o| o > 0), "every partition committed: {offsets:?}");

    // Restart with --drain: it replays the open tail and rewrites nothing new.
    let again = h.start("again-drain", &["--drain"]);
    let again_log = again.log.clone();
    again.wait_ok(Duration::from_secs(120));
    // It reads on from the commit, the open 1 m / 1 h windows seeded from
    // the 10 s rows: at most the allowed lateness (1 s) plus one 10 s
    // window of each partition, plus the jitter (3 s), at 1000 events per
    // second: 14,000. (Replaying the open hour read all 100,000.)
    let log = std::fs::read_to_string(&again_log).unwrap_or_default();
    let reread = events_in(&log).expect(NO_STATS);
    assert!(reread <= 14_000, "a restart on a drained topic read {reread} of {N} messages again");
    assert_eq!(parts_snapshot(db).await, before, "a --drain restart on a drained topic is a no-op");
    assert_eq!(committed_offsets(group, topic), Some(offsets), "and commits the same offsets");

    // Restart as a service, let it replay, then stop it.
    let mut svc = h.start("again-run", &[]);
    wait_until("the service restart to start all 3 partitions", Duration::from_secs(60), || {
        svc.assert_alive("while idle on a drained topic");
        svc.log_text().matches("partition started").count() >= 3
    });
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = svc.sigterm(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM: {status}");
    assert_eq!(parts_snapshot(db).await, before, "a restart and SIGTERM on a drained topic is a no-op");
    assert_eq!(committed_offsets(group, topic), Some(offsets), "and commits the same offsets");
    oracle.assert_matches(N).await;
    h.report(format_args!(
        "{N} events, {rows} rows equal the SQL oracle ({late} late); {} part rows and committed offsets {offsets:?} \
         unchanged by a --drain restart (which read {reread} messages again) and by a run + SIGTERM (exit 0 in \
         {:.1} s)",
        before.lines().count(),
        took.as_secs_f64()
    ));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn sigterm_under_full_load_exits_within_10s_and_restart_is_exact() {
    let mut h = Fault::begin("graceful shutdown", &[]).await;
    // A backlog, plus a generator producing as fast as it can while
    // adstream consumes as fast as it can; its events continue the
    // backlog's event time.
    const BACKLOG: u64 = 200_000;
    const LIVE: u64 = 400_000;
    let backlog = h.backlog(BACKLOG, 606);
    h.live_from(GenSpec { start_time: "2025-12-10T00:03:20Z", ..GenSpec::new(LIVE, 607, JITTER, 40_000) });
    let mut run = h.start("run", &[]);
    h.wait("adstream to write and commit under load", Duration::from_secs(120), &mut [&mut run], "under load", || {
        h.pipe.committed() > 0
    });
    assert!(h.generator_running(), "the live generator must still be producing at the SIGTERM");
    let at = h.produced();
    let (status, took) = run.sigterm(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM under load must exit 0, got {status}");
    assert!(took < Duration::from_secs(10), "SIGTERM under load took {took:?} (limit 10 s)");
    let db = &h.pipe.db;
    let visible = scalar(&format!("SELECT sum(impressions + clicks) FROM {db}.ad_metrics_10s")).await;
    assert!(visible < (BACKLOG + LIVE) as i64, "stopped mid-stream ({visible} events visible)");
    println!(
        "graceful shutdown: SIGTERM at {at} events in the topic, live generator producing: exit 0 in {:.2} s \
         with {visible} events visible",
        took.as_secs_f64()
    );

    let live_jsonl = h.generator_done();
    h.drain("restart-drain");
    let (_, rows, late) = h.check(&[&backlog, &live_jsonl], BACKLOG + LIVE).await;
    h.report(format_args!(
        "after restart {} events checked, {rows} rows equal the SQL oracle ({late} late)",
        BACKLOG + LIVE
    ));
}

/// A TCP proxy in front of ClickHouse that can turn into a server which
/// accepts and never answers: while stalled, new connections are accepted
/// and never read, and bytes already flowing on open connections are held
/// (nothing is forwarded either way) until it is resumed.
struct StallProxy {
    addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallProxy {
    fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = l.local_addr().unwrap();
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stalled.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in l.incoming() {
                let Ok(down) = conn else { continue };
                if s.load(SeqCst) {
                    held.push(down); // accepted, never read, never answered
                    continue;
                }
                let Ok(up) = std::net::TcpStream::connect(&upstream) else { continue };
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), down.try_clone().unwrap()),
                ] {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            while s.load(SeqCst) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        StallProxy { addr, stalled }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn clickhouse_that_accepts_and_never_answers_is_retried_and_sigterm_still_exits_within_10s() {
    let mut h = Fault::begin("silent ClickHouse", &[]).await;
    const N: u64 = 200_000;
    h.live(N, 808, 4_000);
    let upstream = clickhouse_url().split("://").nth(1).unwrap_or_default().trim_end_matches('/').to_string();
    let proxy = StallProxy::start(upstream);
    let url = proxy.url();
    let (topic, group) = (h.topic(), &h.pipe.group);

    // 1. A short request timeout: a stalled write fails after 2 s and is
    //    retried like an outage; nothing is committed meanwhile; once the
    //    server answers again the retries go through.
    let mut run = h.start("run-2s", &["--clickhouse-url", &url, "--clickhouse-request-timeout", "2s"]);
    h.wait("the first commit through the proxy", Duration::from_secs(120), &mut [&mut run], "before the stall", || {
        h.pipe.committed() > 0
    });
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(2));
    let frozen = committed_offsets(group, topic).expect("committed offsets");
    let t_stall = Instant::now();
    while t_stall.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_secs(1));
        run.assert_alive("while ClickHouse did not answer");
        assert_eq!(committed_offsets(group, topic), Some(frozen), "offsets committed while nothing was written");
    }
    let log = run.log_text();
    let timeouts = log.matches("--clickhouse-request-timeout").count();
    assert!(
        log.contains("sink write failed") && timeouts > 0,
        "a write to a silent ClickHouse must time out and be retried:\n{}",
        tail(log.as_bytes())
    );
    proxy.stall(false);
    let t_resume = Instant::now();
    h.wait(
        "commits to go on once ClickHouse answers again",
        Duration::from_secs(60),
        &mut [&mut run],
        "after the stall",
        || committed_offsets(group, topic).is_some_and(|c| sum3(c) > sum3(frozen)),
    );
    let resumed_in = t_resume.elapsed();
    let (status, _) = run.sigterm(Duration::from_secs(20));
    assert!(status.success(), "SIGTERM after the stall: {status}");

    // 2. The default request timeout (30 s): SIGTERM while a write is held
    //    by the silent server must still exit within 10 s, committing
    //    nothing past what was written.
    let mut run = h.start("run-default", &["--clickhouse-url", &url]);
    let before = h.pipe.committed();
    h.wait("a commit through the proxy", Duration::from_secs(120), &mut [&mut run], "before the second stall", || {
        h.pipe.committed() > before
    });
    proxy.stall(true);
    std::thread::sleep(Duration::from_secs(3));
    let frozen2 = committed_offsets(group, topic).expect("committed offsets");
    run.assert_alive("during the second stall");
    let (status, took) = run.sigterm(Duration::from_secs(40));
    let after = committed_offsets(group, topic).expect("committed offsets");
    proxy.stall(false);
    assert!(took < Duration::from_secs(10), "SIGTERM with a write held by a silent ClickHouse took {took:?}");
    assert_eq!(after, frozen2, "offsets committed at a SIGTERM whose write never landed");

    // 3. Drain straight to ClickHouse: every window exact.
    let jsonl = h.generator_done();
    h.drain("drain");
    let (_, rows, late) = h.check(&[&jsonl], N).await;
    h.report(format_args!(
        "{timeouts} timed-out writes retried over 10 s with offsets frozen at {frozen:?}, commits resumed {:.1} s \
         after it answered again; SIGTERM with a write held (default 30 s request timeout) exited ({status}) in \
         {:.1} s, offsets unchanged at {frozen2:?}; after a drain {N} events, {rows} rows equal the SQL oracle \
         ({late} late)",
        resumed_in.as_secs_f64(),
        took.as_secs_f64()
    ));
}
