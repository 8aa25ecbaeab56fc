//! Serving bench: how fast a closed window's predictions reach Redis, and
//! how fast `GET /ctr` (and, for comparison, a Redis `HGET`) answers.
//!
//! 1. **Window closed → readable in Redis.** A live pipeline on the real
//!    services: `adstream generate --rate R` (unseeded: event time is the
//!    wall clock) into a fresh 3-partition topic, `adstream run` into a
//!    fresh database (10 s windows, 5 s lateness, default flush interval),
//!    and one `adstream learn` per `--poll-intervals` value, each with its
//!    own `--model`, all on the same database. For each window W:
//!    `T_closed` = the moment W was closed on every partition = max over
//!    partitions of the (first) ClickHouse `inserted_at` of that
//!    partition's `is_final` rows of W on the segment rollup; `T_readable`
//!    = the first time a poller thread of this bench (every ~2 ms: `GET`
//!    the model's `current` pointer, then one hash of that version, parsing
//!    `window_ms`) sees `window_ms >= W`. Both clocks are this machine's.
//!    Windows closed before the learner's first publish are left out.
//! 2. **`GET /ctr`.** Once enough windows are measured, generate and run
//!    are stopped and the first learner's `/ctr` is asked `--requests`
//!    times over every published segment, on keep-alive HTTP/1.1
//!    connections (a plain `TcpStream` client), with each `--connections`
//!    count; then the same number of `HGET`s of the same segments through
//!    redis-rs. Per-request latency percentiles and requests per second.
//!
//! One run (`--reps` is not used): the figures are percentiles over many
//! windows and requests already.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adstream::engine::AdFormat;
use anyhow::{bail, Context as _};
use serde_json::json;

use crate::procstat::Spawned;
use crate::report::{finish, Figure, Run, Target};
use crate::services::{brokers, clickhouse_url, delete_topic, query_tsv, unique};

pub struct ServingArgs {
    pub adstream: String,
    /// Events per second of the generator.
    pub rate: u64,
    /// Windows to measure per learner.
    pub windows: usize,
    /// `--poll-interval` of each learner (humantime, e.g. `1s`).
    pub poll_intervals: Vec<String>,
    /// `GET /ctr` (and `HGET`) requests per connection count.
    pub requests: u64,
    /// Concurrent connection counts.
    pub connections: Vec<usize>,
    pub redis_url: String,
    pub keep_topic: bool,
}

const ROLLUP: &str = "campaign_id,ad_format,country,device:10s";
const PARTITIONS: usize = 3;

// The key layout of src/io/redis (not public): `adstream:<model>:current`
// holds the version; `adstream:<model>:v<version>:<campaign>:<format>` the
// hashes, fields `<country>|<device>`, values `<ctr> <window_ms> <published_ms>`.
fn prefix(model: &str) -> String {
    format!("adstream:{model}")
}

fn current_key(model: &str) -> String {
    format!("{}:current", prefix(model))
}

fn hash_key(model: &str, version: u64, campaign: &str, format: &str) -> String {
    format!("{}:v{version}:{campaign}:{format}", prefix(model))
}

/// Children killed when dropped (a failed bench leaves nothing running).
struct Procs(Vec<(String, Spawned)>);

impl Procs {
    fn stop(&mut self, name: &str) {
        self.0.retain(|(n, p)| {
            if n == name {
                let _ = p.kill_and_wait();
                false
            } else {
                true
            }
        });
    }

    fn check_alive(&self, out: &Path) -> anyhow::Result<()> {
        for (n, p) in &self.0 {
            if let Some(u) = p.try_wait()? {
                bail!("{n} exited early (code {}): see {}", u.exit_code, out.join(format!("{n}.err")).display());
            }
        }
        Ok(())
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, p) in &self.0 {
            let _ = p.kill_and_wait();
        }
    }
}

/// Deletes the bench's topic (unless kept) and database when dropped.
struct Cleanup {
    topic: Option<String>,
    db: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(t) = &self.topic {
            let _ = delete_topic(t);
        }
        let _ = query_tsv(&format!("DROP DATABASE IF EXISTS {}", self.db));
    }
}

/// A leaked string, for the `&'static str` labels of [`Figure`] and [`Run`].
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// What a poller saw: (wall ms, window_ms) each time `window_ms` grew, and
/// the spans (wall ms) in which Redis did not answer (the shared
/// redis-server restarted, say).
struct Seen {
    changes: Vec<(i64, i64)>,
    outages: Vec<(i64, i64)>,
    polls: u64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The `window_ms` of a cached value `ctr window_ms published_ms`.
fn window_of(value: &str) -> Option<i64> {
    value.split(' ').nth(1)?.parse().ok()
}

/// One poll: the current version's `window_ms` (`None`: nothing published
/// yet), reading one hash of it (campaign C001 × the first format if it
/// exists, else any).
fn poll_once(
    con: &mut redis::Connection,
    model: &str,
    any_key: &mut Option<(u64, String)>,
) -> redis::RedisResult<Option<i64>> {
    let Some(version) = redis::cmd("GET").arg(current_key(model)).query::<Option<u64>>(con)? else {
        return Ok(None);
    };
    let key = match any_key {
        Some((v, k)) if *v == version => k.clone(),
        _ => hash_key(model, version, "C001", AdFormat::ALL[0].as_str()),
    };
    let vals: Vec<String> = redis::cmd("HVALS").arg(&key).query(con)?;
    if let Some(w) = vals.first().and_then(|v| window_of(v)) {
        *any_key = Some((version, key));
        return Ok(Some(w));
    }
    // That hash does not exist in this version: find one that does.
    let pattern = format!("{}:v{version}:*", prefix(model));
    let (_, keys): (u64, Vec<String>) =
        redis::cmd("SCAN").arg(0).arg("MATCH").arg(&pattern).arg("COUNT").arg(10_000).query(con)?;
    let Some(key) = keys.into_iter().next() else { return Ok(None) };
    let vals: Vec<String> = redis::cmd("HVALS").arg(&key).query(con)?;
    *any_key = Some((version, key));
    Ok(vals.first().and_then(|v| window_of(v)))
}

fn poller(url: String, model: String, stop: Arc<AtomicBool>) -> anyhow::Result<Seen> {
    let client = adstream::testing::redis_client_from_env(&url).context("Redis URL")?;
    let mut con = Some(client.get_connection().context("connecting to Redis")?);
    let mut seen = Seen { changes: Vec::new(), outages: Vec::new(), polls: 0 };
    let mut any_key = None;
    let mut last = i64::MIN;
    let mut down_since: Option<i64> = None;
    while !stop.load(Ordering::Relaxed) {
        let t = now_ms();
        seen.polls += 1;
        let r = match con.as_mut() {
            Some(c) => poll_once(c, &model, &mut any_key).map_err(|e| e.to_string()),
            None => Err("not connected".into()),
        };
        match r {
            Ok(w) => {
                if let Some(since) = down_since.take() {
                    seen.outages.push((since, t));
                }
                if let Some(w) = w.filter(|&w| w > last) {
                    last = w;
                    seen.changes.push((t, w));
                }
            }
            Err(_) => {
                down_since.get_or_insert(t);
                con = client.get_connection_with_timeout(Duration::from_millis(200)).ok();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some(since) = down_since {
        seen.outages.push((since, now_ms()));
    }
    Ok(seen)
}

/// `window start ms → T_closed ms` of the windows closed on all partitions.
fn closed_windows(db: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let tsv = query_tsv(&format!(
        "SELECT w, max(first_final) AS t, count() AS parts FROM ( \
           SELECT toUnixTimestamp64Milli(window_start) AS w, partition, \
                  toUnixTimestamp64Milli(min(inserted_at)) AS first_final \
           FROM {db}.ad_window_parts WHERE rollup_name = '{ROLLUP}' AND is_final \
           GROUP BY w, partition) \
         GROUP BY w HAVING parts = {PARTITIONS} ORDER BY w"
    ))?;
    let mut out = Vec::new();
    for line in tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if let [w, t, _] = f[..] {
            out.push((w.parse().context("window")?, t.parse().context("inserted_at")?));
        }
    }
    Ok(out)
}

/// `T_readable − T_closed` (ms) of every window closed after the learner's
/// first publish and seen readable, and how many were left out because
/// Redis did not answer in between (then the figure would be the outage).
fn delays(closed: &[(i64, i64)], seen: &Seen) -> (Vec<f64>, usize) {
    let Some(&(first_seen, _)) = seen.changes.first() else { return (Vec::new(), 0) };
    let mut out = Vec::new();
    let mut outage = 0;
    for &(w, t_closed) in closed.iter().filter(|(_, t)| *t >= first_seen) {
        let Some(&(t_readable, _)) = seen.changes.iter().find(|(_, sw)| *sw >= w) else { continue };
        if seen.outages.iter().any(|&(a, b)| a <= t_readable && b >= t_closed) {
            outage += 1;
            continue;
        }
        out.push((t_readable - t_closed) as f64);
    }
    (out, outage)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// The bound address `learn` logs ("predicted CTR on http://ADDR/ctr").
fn learn_addr(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| l.contains("predicted CTR on http://"))?;
    let rest = &line[line.find("http://")? + 7..];
    Some(rest[..rest.find('/')?].to_string())
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if t0.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A published segment: (hash key, field, `/ctr` query).
struct Seg {
    key: String,
    field: String,
    query: String,
}

fn segments(url: &str, model: &str) -> anyhow::Result<Vec<Seg>> {
    let client = adstream::testing::redis_client_from_env(url).context("Redis URL")?;
    let mut con = client.get_connection().context("connecting to Redis")?;
    let version: u64 = redis::cmd("GET")
        .arg(current_key(model))
        .query::<Option<u64>>(&mut con)?
        .context("no current version published")?;
    let head = format!("{}:v{version}:", prefix(model));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{head}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut out = Vec::new();
    for key in keys {
        let Some((campaign, format)) = key.strip_prefix(&head).and_then(|r| r.rsplit_once(':')) else { continue };
        let fields: Vec<String> = redis::cmd("HKEYS").arg(&key).query(&mut con)?;
        for field in fields {
            let Some((country, device)) = field.split_once('|') else { continue };
            let query = format!(
                "/ctr?campaign={}&format={}&country={}&device={}",
                enc(campaign),
                enc(format),
                enc(country),
                enc(device)
            );
            out.push(Seg { key: key.clone(), field, query });
        }
    }
    anyhow::ensure!(!out.is_empty(), "no segment published under {head}*");
    Ok(out)
}

/// One keep-alive `GET`: the status code, the body read to its
/// Content-Length.
fn http_get(w: &mut TcpStream, r: &mut BufReader<TcpStream>, path: &str, line: &mut String) -> anyhow::Result<u16> {
    write!(w, "GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n")?;
    line.clear();
    r.read_line(line)?;
    let status: u16 = line.split(' ').nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let mut len = 0usize;
    loop {
        line.clear();
        if r.read_line(line)? == 0 {
            bail!("connection closed");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().context("content-length")?;
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(status)
}

/// Per-request latencies (µs) of `n` requests over `conns` connections,
/// and the wall time of the whole; `one` makes a request on a connection.
fn load<C: Send>(
    conns: usize,
    n: u64,
    connect: impl Fn() -> anyhow::Result<C> + Sync,
    one: impl Fn(&mut C, u64) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<(Vec<f64>, f64)> {
    let per = n / conns as u64;
    let warmup = (per / 20).clamp(1, 1000);
    let t0 = Instant::now();
    let results: Vec<anyhow::Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conns)
            .map(|c| {
                let (connect, one) = (&connect, &one);
                s.spawn(move || -> anyhow::Result<Vec<f64>> {
                    let mut con = connect()?;
                    let offset = c as u64 * 7919;
                    for i in 0..warmup {
                        one(&mut con, offset + i)?;
                    }
                    let mut lat = Vec::with_capacity(per as usize);
                    for i in 0..per {
                        let t = Instant::now();
                        one(&mut con, offset + i)?;
                        lat.push(t.elapsed().as_nanos() as f64 / 1e3);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("client thread panicked"))))
            .collect()
    });
    let wall = t0.elapsed().as_secs_f64();
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok((all, wall))
}

/// `f` again (up to 3 tries, 5 s apart) if it fails: the shared Redis may
/// restart under the bench (and the learner republishes on its next poll).
fn retried<T>(what: &str, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if tries < 2 => {
                tries += 1;
                println!("  ({what} failed: {e:#}; again in 5 s)");
                std::thread::sleep(Duration::from_secs(5));
            }
            Err(e) => return Err(e.context(format!("{what}, 3 tries"))),
        }
    }
}

pub fn run(args: &ServingArgs, out: &Path) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(!args.poll_intervals.is_empty(), "--poll-intervals: at least one");
    anyhow::ensure!(args.windows > 0 && args.requests > 0 && args.rate > 0, "sizes must be positive");
    let polls: Vec<Duration> = args
        .poll_intervals
        .iter()
        .map(|p| humantime::parse_duration(p).with_context(|| format!("--poll-intervals {p:?}")))
        .collect::<anyhow::Result<_>>()?;
    let (topic, db, group) = (unique("bench_serving", 0), unique("bench_serving_db", 0), unique("bench_serving_g", 0));
    let models: Vec<String> = (0..polls.len()).map(|i| unique("serving", i)).collect();
    // Dropped last (after the children): the topic and database go, even
    // when the bench fails.
    let _cleanup = Cleanup { topic: (!args.keep_topic).then(|| topic.clone()), db: db.clone() };
    println!(
        "serving: {} events/s into {topic} ({PARTITIONS} partitions), run → {db}, learners {} (poll {})",
        args.rate,
        models.join(", "),
        args.poll_intervals.join(", ")
    );
    let adstream = |name: &str| {
        let mut c = Command::new(&args.adstream);
        c.env("ADSTREAM_BROKERS", brokers())
            .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
            .env("ADSTREAM_REDIS_URL", &args.redis_url)
            .env("ADSTREAM_LOG", "info");
        (c, out.join(name))
    };
    let mut procs = Procs(Vec::new());
    let (mut g, log) = adstream("serving-generate");
    g.args(["generate", "--topic", &topic, "--rate", &args.rate.to_string(), "--partitions"])
        .arg(PARTITIONS.to_string());
    procs.0.push(("serving-generate".into(), Spawned::start(&mut g, &log)?));
    let (mut r, log) = adstream("serving-run");
    r.args(["run", "--topic", &topic, "--group", &group, "--database", &db, "--metrics-addr", "off"])
        .args(["--dlq-topic", ""]);
    procs.0.push(("serving-run".into(), Spawned::start(&mut r, &log)?));
    // The schema first (run creates it), so learners start on a database
    // that is being written.
    wait_for("run's first windows in ClickHouse", Duration::from_secs(90), || {
        procs.check_alive(out)?;
        let n = query_tsv(&format!("SELECT count() FROM {db}.ad_window_parts")).ok();
        Ok(n.and_then(|n| n.trim().parse::<u64>().ok()).filter(|&n| n > 0))
    })?;
    let mut addrs = Vec::new();
    for (model, p) in models.iter().zip(&args.poll_intervals) {
        let name = format!("serving-learn-{p}");
        let (mut l, log) = adstream(&name);
        l.args(["learn", "--database", &db, "--model", model, "--poll-interval", p, "--metrics-addr", "127.0.0.1:0"]);
        // The key layout read here: `adstream:<model>:…`.
        l.args(["--redis-prefix", &prefix(model)]);
        procs.0.push((name.clone(), Spawned::start(&mut l, &log)?));
        let err = log.with_extension("err");
        addrs.push(wait_for("learn to listen", Duration::from_secs(60), || {
            procs.check_alive(out)?;
            Ok(learn_addr(&err))
        })?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let pollers: Vec<_> = models
        .iter()
        .map(|m| {
            let (url, m, stop) = (args.redis_url.clone(), m.clone(), stop.clone());
            std::thread::spawn(move || poller(url, m, stop))
        })
        .collect();
    let started_ms = now_ms();
    // Enough windows closed after the learners' start (one more: one
    // closed before the first publish is left out by `delays`).
    let limit = Duration::from_secs(120 + 20 * args.windows as u64);
    let closed = wait_for("the windows to close", limit, || {
        procs.check_alive(out)?;
        // A failed query (the shared ClickHouse restarting) is asked again.
        let Ok(c) = closed_windows(&db) else { return Ok(None) };
        let after = c.iter().filter(|(_, t)| *t >= started_ms).count();
        Ok((after > args.windows).then_some(c))
    })?;
    // The last one's readability: a few seconds more.
    std::thread::sleep(polls.iter().max().copied().unwrap_or_default() + Duration::from_secs(3));
    let closed_final = retried("reading the closed windows", || closed_windows(&db))?;
    let closed: Vec<(i64, i64)> = closed_final.into_iter().filter(|(w, _)| closed.iter().any(|c| c.0 == *w)).collect();
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for p in pollers {
        seen.push(p.join().map_err(|_| anyhow::anyhow!("poller panicked"))??);
    }
    // Quiet the machine for the request benches: only the first learner
    // stays (it serves /ctr and holds what Redis has).
    procs.stop("serving-generate");
    procs.stop("serving-run");
    for p in &args.poll_intervals[1..] {
        procs.stop(&format!("serving-learn-{p}"));
    }

    let mut run = Run::new();
    let mut figures = Vec::new();
    let mut checks = serde_json::Map::new();
    println!("\nwindow closed on every partition → its predictions readable in Redis");
    println!("  {:<14} {:>8} {:>8} {:>8} {:>8} {:>6}", "poll interval", "p50 ms", "p99 ms", "max ms", "min ms", "n");
    for ((p, s), model) in args.poll_intervals.iter().zip(&seen).zip(&models) {
        let (d, outage) = delays(&closed, s);
        let d = sorted(d);
        let (p50, p99) = (percentile(&d, 50.0), percentile(&d, 99.0));
        let (max, min) = (d.last().copied().unwrap_or(f64::NAN), d.first().copied().unwrap_or(f64::NAN));
        println!("  {p:<14} {p50:>8.0} {p99:>8.0} {max:>8.0} {min:>8.0} {:>6}", d.len());
        if outage > 0 {
            println!("    ({outage} windows left out: Redis did not answer between their close and their read)");
        }
        for (what, v) in [("p50", p50), ("p99", p99), ("max", max), ("n", d.len() as f64)] {
            let metric = if what == "n" {
                leak(format!("close_to_redis_windows_poll_{p}"))
            } else {
                leak(format!("close_to_redis_{what}_ms_poll_{p}"))
            };
            run.insert(metric, v);
            let (label, unit) = if what == "n" {
                (leak(format!("closed → Redis, poll {p}: windows")), "windows")
            } else {
                (leak(format!("closed → Redis, poll {p}: {what}")), "ms")
            };
            figures.push(Figure { label, metric, unit, target: Target::None });
        }
        checks.insert(
            format!("poll_{p}"),
            json!({
                "model": model, "delays_ms": d, "poller_polls": s.polls, "publishes_seen": s.changes.len(),
                "redis_outages_ms": s.outages, "windows_left_out_for_an_outage": outage,
            }),
        );
    }

    // GET /ctr and HGET.
    let segs = segments(&args.redis_url, &models[0])?;
    println!("\n{} requests over {} published segments of {}", args.requests, segs.len(), models[0]);
    println!("  {:<26} {:>9} {:>9} {:>9} {:>10}", "", "p50 µs", "p99 µs", "max µs", "req/s");
    let addr = addrs[0].clone();
    let mut print = |name: String, key: &str, lat: Vec<f64>, wall: f64| {
        let d = sorted(lat);
        let (p50, p99, max) = (percentile(&d, 50.0), percentile(&d, 99.0), d.last().copied().unwrap_or(f64::NAN));
        let rps = d.len() as f64 / wall;
        println!("  {name:<26} {p50:>9.1} {p99:>9.1} {max:>9.0} {rps:>10.0}");
        for (what, v, unit) in [("p50_us", p50, "µs"), ("p99_us", p99, "µs"), ("req_per_s", rps, "req/s")] {
            let metric = leak(format!("{key}_{what}"));
            run.insert(metric, v);
            figures.push(Figure { label: leak(format!("{name}: {what}")), metric, unit, target: Target::None });
        }
    };
    for &c in &args.connections {
        let c = c.max(1);
        let (lat, wall) = retried("GET /ctr", || {
            load(
                c,
                args.requests,
                || {
                    let s = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
                    s.set_nodelay(true)?;
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    let r = BufReader::new(s.try_clone()?);
                    Ok((s, r, String::new()))
                },
                |(w, r, line), i| {
                    let seg = &segs[(i % segs.len() as u64) as usize];
                    let status = http_get(w, r, &seg.query, line)?;
                    anyhow::ensure!(status == 200, "GET {} answered {status}", seg.query);
                    Ok(())
                },
            )
        })?;
        print(format!("GET /ctr, {c} connection{}", if c == 1 { "" } else { "s" }), &format!("ctr_{c}c"), lat, wall);
    }
    let client = adstream::testing::redis_client_from_env(&args.redis_url).context("Redis URL")?;
    for &c in &args.connections {
        let c = c.max(1);
        let (lat, wall) = retried("Redis HGET", || {
            load(
                c,
                args.requests,
                || client.get_connection().context("connecting to Redis"),
                |con, i| {
                    let seg = &segs[(i % segs.len() as u64) as usize];
                    let v: Option<String> = redis::cmd("HGET").arg(&seg.key).arg(&seg.field).query(con)?;
                    anyhow::ensure!(v.is_some(), "HGET {} {} found nothing", seg.key, seg.field);
                    Ok(())
                },
            )
        })?;
        print(format!("Redis HGET, {c} connection{}", if c == 1 { "" } else { "s" }), &format!("hget_{c}c"), lat, wall);
    }
    drop(procs);
    checks.insert("segments".into(), json!(segs.len()));
    checks.insert("closed_windows".into(), json!(closed.len()));
    let config = json!({
        "rate": args.rate, "partitions": PARTITIONS, "window_s": 10, "allowed_lateness_s": 5,
        "poll_intervals": args.poll_intervals, "windows": args.windows, "requests": args.requests,
        "connections": args.connections, "rollup": ROLLUP, "redis_poller_period_ms": 2,
    });
    finish(
        out,
        "serving",
        &format!(
            "Serving: window closed → readable in Redis ({} events/s, poll {}), GET /ctr and HGET ({} requests)",
            args.rate,
            args.poll_intervals.join(" and "),
            args.requests
        ),
        config,
        &[run],
        &figures,
        serde_json::Value::Object(checks),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_count_windows_closed_after_the_first_publish() {
        let mut seen = Seen {
            changes: vec![(1_000, 0), (16_300, 10_000), (26_400, 20_000), (40_000, 40_000)],
            outages: Vec::new(),
            polls: 9,
        };
        // Window 0 closed before the first publish: left out. 30_000 became
        // readable with 40_000's publish.
        let closed = [(0, 900), (10_000, 15_500), (20_000, 25_800), (30_000, 35_000), (50_000, 55_000)];
        assert_eq!(delays(&closed, &seen), (vec![800.0, 600.0, 5_000.0], 0));
        // Redis down from 36 to 39 s: 30_000's figure would be the outage.
        seen.outages.push((36_000, 39_000));
        assert_eq!(delays(&closed, &seen), (vec![800.0, 600.0], 1));
        assert_eq!(window_of("0.05 1765327570000 1765327581234"), Some(1765327570000));
        assert_eq!(window_of("garbage"), None);
        let d = sorted(vec![3.0, 1.0, 2.0]);
        assert_eq!((percentile(&d, 50.0), percentile(&d, 99.0)), (2.0, 3.0));
    }
}
