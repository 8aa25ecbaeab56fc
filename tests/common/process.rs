//! Spawning adstream: unique names and scratch directories, the binary
//! with a clean environment, waiting with a limit, background `run`
//! processes ([`Runner`]), signals, peak memory ([`RssWatch`]) and polling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::*;

/// A name unique to this test run: `prefix_<nanos>`.
/// A name no other test (in this process or an earlier one) uses. The
/// counter matters: two tests starting together on two threads can read
/// the same nanosecond, and then shared a dead-letter topic.
pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}_{k}", std::process::id(), n % 1_000_000_000_000)
}

pub fn scratch_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique("e2e"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `adstream` with no `ADSTREAM_*` from the caller and nothing listening
/// where it would connect.
pub fn bare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            c.env_remove(k);
        }
    }
    c.env("ADSTREAM_BROKERS", "127.0.0.1:1").env("ADSTREAM_CLICKHOUSE_URL", "http://127.0.0.1:1");
    c.env("ADSTREAM_METRICS_ADDR", "off").env("ADSTREAM_CONNECT_TIMEOUT", "1s");
    c
}

/// `adstream` with Kafka/ClickHouse pointed at the test services and no
/// stray `ADSTREAM_*` settings from the caller's environment.
pub fn adstream() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adstream"));
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            c.env_remove(k);
        }
    }
    // Tests run side by side: none may take the default metrics port.
    c.env("ADSTREAM_BROKERS", brokers())
        .env("ADSTREAM_CLICKHOUSE_URL", clickhouse_url())
        .env("ADSTREAM_REDIS_URL", redis_url())
        .env("ADSTREAM_METRICS_ADDR", "off");
    c
}

/// Runs to completion within `limit`, panicking with its output otherwise.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn adstream");
    let out = wait_with_limit(child, limit);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        tail(&out.stdout),
        tail(&out.stderr)
    );
    out
}

/// Waits for `child` up to `limit` (killing it then, and panicking with its
/// output). Its piped stdout and stderr are drained while it runs, so a
/// child that writes more than a pipe holds (64 KiB) never blocks on it.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    fn drain<R: std::io::Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let (out, err) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() };
    if timed_out {
        panic!("timed out after {limit:?}\nstdout:\n{}\nstderr:\n{}", tail(&output.stdout), tail(&output.stderr));
    }
    output
}

/// Kills a spawned adstream if the test fails before waiting for it.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn take(&mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// `adstream run` in the background with its log in `dir/<name>.log`.
pub struct Runner {
    child: KillOnDrop,
    pub name: String,
    pub log: PathBuf,
    pub started: Instant,
}

impl Runner {
    pub fn start(name: &str, args: &[&str], dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = adstream().args(args).stdout(Stdio::null()).stderr(file).spawn().expect("spawn adstream run");
        Runner { child: KillOnDrop(Some(child)), name: name.to_string(), log, started: Instant::now() }
    }

    pub fn pid(&self) -> u32 {
        self.child.0.as_ref().expect("runner already stopped").id()
    }

    /// Alive (not exited, not a zombie).
    pub fn is_alive(&mut self) -> bool {
        self.child.0.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the log's tail unless the process is still running.
    pub fn assert_alive(&mut self, when: &str) {
        if !self.is_alive() {
            panic!("{} exited {when}:\n{}", self.name, tail(self.log_text().as_bytes()));
        }
    }

    /// SIGKILL: no shutdown code runs at all.
    pub fn kill9(mut self) {
        let mut c = self.child.take();
        c.kill().expect("SIGKILL");
        let _ = c.wait();
    }

    /// SIGTERM, then waits up to `limit`; returns the exit status and how
    /// long the exit took.
    pub fn sigterm(mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let c = self.child.take();
        signal(c.id(), "TERM");
        let t0 = Instant::now();
        let out = wait_with_limit(c, limit);
        (out.status, t0.elapsed())
    }

    /// Waits for a `--drain` run to finish and asserts it exited 0.
    pub fn wait_ok(mut self, limit: Duration) {
        let out = wait_with_limit(self.child.take(), limit);
        assert!(out.status.success(), "{} failed: {}\n{}", self.name, out.status, tail(self.log_text().as_bytes()));
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Peak resident memory (VmHWM) of every process handed to [`RssWatch::watch`],
/// sampled every 100 ms while they run: VmHWM is the kernel's own high-water
/// mark, so only growth in a process's last 100 ms can escape it.
pub struct RssWatch {
    pids: std::sync::Arc<std::sync::Mutex<Vec<u32>>>,
    peak_kb: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// VmHWM (peak RSS) of `pid` in KiB, if it is still running.
pub fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl RssWatch {
    pub fn new() -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let w = RssWatch { pids: Default::default(), peak_kb: Default::default(), stop: Default::default() };
        let (pids, peak, stop) = (w.pids.clone(), w.peak_kb.clone(), w.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let list = pids.lock().map(|p| p.clone()).unwrap_or_default();
                for pid in list {
                    if let Some(kb) = vm_hwm_kb(pid) {
                        peak.fetch_max(kb, Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        w
    }

    pub fn watch(&self, pid: u32) {
        if let Ok(mut p) = self.pids.lock() {
            p.push(pid);
        }
        if let Some(kb) = vm_hwm_kb(pid) {
            self.peak_kb.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Highest VmHWM seen so far, MiB.
    pub fn peak_mib(&self) -> f64 {
        self.peak_kb.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }
}

impl Default for RssWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Polls `cond` every 200 ms; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
