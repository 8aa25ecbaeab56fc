//! What a process costs: CPU time and peak memory of this process (from
//! /proc and the thread CPU clock) and of a child (from `wait4`'s rusage,
//! or, for a child that forks more processes, by sampling its process tree
//! in /proc).

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A `VmRSS`/`VmHWM`-style field of /proc/self/status, in KiB.
pub fn self_status_kb(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets this process's peak RSS (`VmHWM`) to its current RSS, so a
/// measurement can exclude what was allocated before it (Linux ≥ 4.0).
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds used by the calling thread.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// What a finished child cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub wall_s: f64,
    /// User + system CPU seconds of the child (and, for tree sampling, of
    /// every process under it).
    pub cpu_s: f64,
    pub peak_rss_mb: f64,
    pub exit_code: i32,
}

/// Runs `cmd` to completion (killed after `limit`), its stdout and stderr
/// written to `<log>.out` / `<log>.err`. With `tree`, CPU and RSS are summed
/// over the child's whole process tree by sampling /proc every 200 ms (a
/// process's last < 200 ms are missed); otherwise they come exactly from
/// `wait4`'s rusage of the child itself.
pub fn run_measured(cmd: &mut Command, log: &Path, limit: Duration, tree: bool) -> anyhow::Result<Usage> {
    let child = Spawned::start(cmd, log)?;
    let pid = child.pid;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tree.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || sample_tree(pid, &stop))
    });
    let mut usage = loop {
        if let Some(u) = child.try_wait()? {
            break u;
        }
        if child.t0.elapsed() > limit {
            let _ = child.kill_and_wait();
            stop.store(true, Ordering::SeqCst);
            bail!("{cmd:?} timed out after {limit:?}; see {}", log.with_extension("err").display());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    stop.store(true, Ordering::SeqCst);
    if let Some(h) = sampler {
        if let Ok((cpu, rss)) = h.join() {
            usage.cpu_s = usage.cpu_s.max(cpu);
            usage.peak_rss_mb = usage.peak_rss_mb.max(rss);
        }
    }
    Ok(usage)
}

/// A child whose stdout and stderr go to `<log>.out` / `<log>.err`, measured
/// exactly (`wait4`'s rusage) when it is reaped. Several can run at once.
pub struct Spawned {
    pub pid: libc::pid_t,
    pub t0: Instant,
}

impl Spawned {
    pub fn start(cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log.with_extension("out")).context("creating log")?;
        let err = File::create(log.with_extension("err")).context("creating log")?;
        let t0 = Instant::now();
        let child =
            cmd.stdin(Stdio::null()).stdout(out).stderr(err).spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Spawned { pid: child.id() as libc::pid_t, t0 })
    }

    fn wait(&self, flags: libc::c_int) -> anyhow::Result<Option<Usage>> {
        let mut status = 0;
        // SAFETY: rusage is plain data; zeroed is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: valid out-pointers; `pid` is our own child, reaped only here.
        let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut ru) };
        if r < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        if r != self.pid {
            return Ok(None);
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        Ok(Some(Usage {
            wall_s: self.t0.elapsed().as_secs_f64(),
            cpu_s: tv(ru.ru_utime) + tv(ru.ru_stime),
            peak_rss_mb: ru.ru_maxrss as f64 / 1024.0,
            exit_code: if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { -1 },
        }))
    }

    /// Its usage once it has exited; `None` while it runs. Reap it once.
    pub fn try_wait(&self) -> anyhow::Result<Option<Usage>> {
        self.wait(libc::WNOHANG)
    }

    pub fn kill_and_wait(&self) -> anyhow::Result<Option<Usage>> {
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        self.wait(0)
    }
}

/// Samples `root` and its descendants until `stop`: (CPU seconds summed
/// over every process seen, at its last sample; peak of the summed RSS, MiB).
fn sample_tree(root: libc::pid_t, stop: &AtomicBool) -> (f64, f64) {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let page_kb = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) / 1024) as f64;
    let mut last_ticks: HashMap<i32, u64> = HashMap::new();
    let mut peak_rss_kb = 0f64;
    while !stop.load(Ordering::SeqCst) {
        let procs = read_procs();
        let mut in_tree = vec![root];
        let mut i = 0;
        while i < in_tree.len() {
            let p = in_tree[i];
            in_tree.extend(procs.iter().filter(|(_, s)| s.ppid == p).map(|(pid, _)| *pid));
            i += 1;
        }
        let mut rss = 0f64;
        for pid in in_tree {
            if let Some(s) = procs.get(&pid) {
                last_ticks.insert(pid, s.ticks);
                rss += s.rss_pages as f64 * page_kb;
            }
        }
        peak_rss_kb = peak_rss_kb.max(rss);
        std::thread::sleep(Duration::from_millis(200));
    }
    (last_ticks.values().sum::<u64>() as f64 / hz, peak_rss_kb / 1024.0)
}

struct ProcStat {
    ppid: i32,
    ticks: u64,
    rss_pages: u64,
}

fn read_procs() -> HashMap<i32, ProcStat> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // Fields after the parenthesised command name, which may hold spaces.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // rest[0] is field 3 (state): ppid = field 4, utime 14, stime 15, rss 24.
        out.insert(pid, ProcStat { ppid: num(1) as i32, ticks: num(11) + num(12), rss_pages: num(21) });
    }
    out
}
