//! `adstream run` as a pipeline: its command line, the processes of one
//! consumer group into one database, and the end of a live-stream test
//! (catch up, SIGTERM, drain, check the oracle).

use std::path::Path;
use std::time::Duration;

use super::*;

/// `run`'s default `--allowed-lateness`.
pub const DEFAULT_LATENESS: &str = "5s";

/// `adstream run` of `topic` in consumer group `group` into database `db`,
/// a stats line every second.
pub fn run_args(topic: &str, group: &str, db: &str) -> Vec<String> {
    ["run", "--topic", topic, "--group", group, "--database", db, "--stats-interval", "1s"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The `--allowed-lateness` a command line gives `run` (its default if none).
pub fn lateness_in(args: &[String]) -> &str {
    args.iter().position(|a| a == "--allowed-lateness").and_then(|i| args.get(i + 1)).map_or(DEFAULT_LATENESS, |s| s)
}

/// How far a caught-up group's committed offsets may trail the end of the
/// topic: a commit points at the oldest open window (see `window.rs`), and
/// with 10 s windows, a few seconds of lateness and jitter and 1000 events
/// per simulated second at most two windows per partition are open, about
/// 20,000 events in all.
pub const OPEN_TAIL: i64 = 30_000;

/// One pipeline of a live-stream test: `adstream run` processes reading
/// `topic` in one consumer group into one database, all with `args`.
pub struct Pipeline {
    pub topic: String,
    pub group: String,
    pub db: String,
    pub args: Vec<String>,
}

/// How the end of a live-stream test went (see [`Pipeline::finish`]).
pub struct Finish {
    /// Sum of the committed offsets when the group had caught up.
    pub caught_up: i64,
    /// How long each runner took to exit after its SIGTERM.
    pub sigterm_exits: Vec<Duration>,
    /// Rows equal to the oracle, and late events.
    pub rows: usize,
    pub late: u64,
}

impl Pipeline {
    /// `run` of `topic` into `db` in `group`, with `extra` flags.
    pub fn new(topic: &str, group: &str, db: &str, extra: &[&str]) -> Self {
        let mut args = run_args(topic, group, db);
        args.extend(extra.iter().map(|s| s.to_string()));
        Pipeline { topic: topic.into(), group: group.into(), db: db.into(), args }
    }

    /// Starts one more `run` process (plus `extra` flags) as `name`.
    pub fn start(&self, name: &str, extra: &[&str], dir: &Path) -> Runner {
        let args: Vec<&str> = self.args.iter().map(String::as_str).chain(extra.iter().copied()).collect();
        Runner::start(name, &args, dir)
    }

    /// Sum of the group's committed offsets (0 if none).
    pub fn committed(&self) -> i64 {
        committed_offsets(&self.group, &self.topic).map(sum3).unwrap_or(0)
    }

    /// Checks every window and late event against the oracle over
    /// `jsonls`, then each source partition's contribution against the
    /// partition's length (after a rebalance or restart a partition is
    /// rebuilt by whoever owns it next, so each one must add up on its
    /// own); returns the oracle and (rows, late).
    pub async fn check_oracle(&self, jsonls: &[&Path], events: u64) -> (Oracle, usize, u64) {
        let db = &self.db;
        let oracle = Oracle::load(db, &self.topic, jsonls, lateness_in(&self.args)).await;
        let (rows, late) = oracle.assert_matches(events).await;
        assert!(late > 0, "the stream must exercise the late path");
        let raw = scalar(&format!("SELECT count() FROM {db}.raw_events")).await as u64;
        assert_eq!(raw, events, "the oracle saw every generated event");
        let lengths = high_watermarks(&self.topic).expect("high watermarks");
        for (p, len) in lengths.iter().enumerate() {
            let late = scalar(&format!("SELECT count() FROM {db}.ad_late_events WHERE partition = {p}")).await;
            let per_rollup = tsv(&format!(
                "SELECT rollup_name, toInt64(sum(impressions + clicks)) FROM {db}.ad_window_parts FINAL \
                 WHERE partition = {p} GROUP BY rollup_name ORDER BY rollup_name"
            ))
            .await;
            assert_eq!(per_rollup.lines().count(), 5, "partition {p}: every default rollup has rows: {per_rollup}");
            for l in per_rollup.lines() {
                let (rollup, counted) = l.split_once('\t').expect("rollup \t count");
                let counted: i64 = counted.parse().expect("a count");
                assert_eq!(
                    counted + late,
                    *len,
                    "partition {p}, rollup {rollup}: events counted + late = messages in the partition"
                );
            }
        }
        (oracle, rows, late)
    }

    /// The end of a live-stream test, once every event is in the topic:
    /// waits until the group has caught up (committed to within
    /// [`OPEN_TAIL`] of `events`, every runner alive), stops each runner
    /// with SIGTERM (each must exit 0), drains the rest with one `--drain`
    /// run, and checks the oracle over `jsonls`.
    pub async fn finish(
        &self,
        mut runners: Vec<Runner>,
        jsonls: &[&Path],
        events: u64,
        dir: &Path,
        rss: &RssWatch,
    ) -> Finish {
        wait_until("the group to catch up", Duration::from_secs(180), || {
            runners.iter_mut().for_each(|r| r.assert_alive("before catching up"));
            self.committed() >= events as i64 - OPEN_TAIL
        });
        let caught_up = self.committed();
        let mut sigterm_exits = Vec::new();
        for r in runners {
            let name = r.name.clone();
            let (status, took) = r.sigterm(Duration::from_secs(20));
            assert!(status.success(), "{name} on SIGTERM: {status}");
            sigterm_exits.push(took);
        }
        let drain = self.start("drain", &["--drain"], dir);
        rss.watch(drain.pid());
        drain.wait_ok(Duration::from_secs(300));
        let (_, rows, late) = self.check_oracle(jsonls, events).await;
        Finish { caught_up, sigterm_exits, rows, late }
    }
}
