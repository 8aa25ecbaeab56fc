//! The soak's processes and faults (`tests/soak.rs`): a TCP proxy in front
//! of ClickHouse that can stall, one `run` and one `adstream learn` process
//! with their metrics endpoints, and the small readers of `/proc` and
//! `/metrics` the per-day figures come from.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// A TCP proxy in front of ClickHouse that can stall: while stalled it
/// still accepts connections but moves no byte either way, like a host that
/// accepts and never answers.
pub struct StallProxy {
    pub port: u16,
    pub stalled: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
}

impl StallProxy {
    pub fn start(upstream: String) -> Self {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Relaxed);
    }
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub fn pump(from: &mut TcpStream, to: &mut TcpStream, stalled: &AtomicBool, stop: &AtomicBool) {
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
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The sum of every series of metric `name` (0 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// One `run` process of the soak, with its metrics endpoint.
pub struct Run {
    pub runner: Runner,
    pub port: u16,
}

impl Run {
    pub fn start(pipe: &Pipeline, name: &str, dir: &Path) -> Run {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let runner = pipe.start(name, &["--metrics-addr", &addr], dir);
        Run { runner, port }
    }

    pub fn metrics(&mut self) -> String {
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
    pub fn caught_up(&mut self, topic: &str, limit: Duration) -> String {
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

/// One `adstream learn` process of the soak (the writer or the standby),
/// with its metrics endpoint.
pub struct Learn {
    pub runner: Runner,
    pub port: u16,
}

/// The learners' lease: short, so a takeover after kill -9 fits the soak.
pub const LEASE_TTL: &str = "3s";

impl Learn {
    pub fn start(db: &str, model: &str, name: &str, dir: &Path) -> Learn {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let args = ["learn", "--database", db, "--model", model, "--poll-interval", "200ms"];
        let runner = Runner::start(
            name,
            &[&args[..], &["--lease-ttl", LEASE_TTL, "--keep-snapshots", KEEP_SNAPSHOTS, "--metrics-addr", &addr]]
                .concat(),
            dir,
        );
        Learn { runner, port }
    }

    /// 1 while it writes, 0 standing by, None while its endpoint is not up.
    pub fn leader(&self) -> Option<f64> {
        let m = http_get(self.port, "/metrics").filter(|m| m.contains("adstream_learn_leader"))?;
        Some(metric(&m, "adstream_learn_leader"))
    }
}

/// Snapshot versions the soak's learners keep. The soak saves a few dozen
/// snapshots per simulated day (a real day saves one per poll with news,
/// about 8,640), so the default of 100 would be reached only on day 3;
/// 10 reaches it on day 1, as a real day would.
pub const KEEP_SNAPSHOTS: &str = "10";
