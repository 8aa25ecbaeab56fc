//! The windows of the consumer bench's systems, read and compared: adstream's
//! from ClickHouse, each peer's from its output file, row by row, with the
//! windows a peer dropped late events from left out and counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use crate::services::query_tsv;

/// (window start s, campaign, format).
pub type WindowKey = (i64, String, String);
/// (impressions, clicks, revenue µUSD, ctr, ecpm).
pub type Numbers = (u64, u64, i64, Option<f64>, Option<f64>);
pub type Windows = BTreeMap<WindowKey, Numbers>;

/// `"12.3456"` → 12_345_600 (decimal text to micro-units, exactly).
fn micros(s: &str) -> Option<i64> {
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v = int.parse::<i64>().ok()? * 1_000_000 + format!("{frac:0<6}").parse::<i64>().ok()?;
    Some(if neg { -v } else { v })
}

fn opt_f64(s: &str) -> Option<f64> {
    s.parse().ok()
}

pub fn clickhouse_windows(db: &str) -> anyhow::Result<Windows> {
    let text = query_tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), campaign_id, ad_format, impressions, clicks, toString(revenue), \
         ctr, ecpm FROM {db}.ad_metrics_10s"
    ))?;
    let mut w = Windows::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        anyhow::ensure!(f.len() == 8, "unexpected row {l:?}");
        w.insert(
            (f[0].parse()?, f[1].to_string(), f[2].to_string()),
            (f[3].parse()?, f[4].parse()?, micros(f[5]).context("revenue")?, opt_f64(f[6]), opt_f64(f[7])),
        );
    }
    Ok(w)
}

/// A peer's output, JSON lines of `window_start` (s), `campaign_id`,
/// `ad_format`, `impressions`, `clicks`, `revenue` (decimal text) and, from
/// Spark, `ctr`, `ecpm` and `batch`. Spark writes every micro-batch's
/// updated rows: a window's last update (highest batch) is its final
/// value. The other peers write each window once; a window written twice
/// is reported as a difference.
pub fn peer_windows(path: &Path) -> anyhow::Result<PeerOutput> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut latest: BTreeMap<WindowKey, (i64, Numbers)> = BTreeMap::new();
    let mut twice = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(l).with_context(|| format!("peer row {l:?}"))?;
        let key = (
            v["window_start"].as_i64().context("window_start")?,
            v["campaign_id"].as_str().context("campaign_id")?.to_string(),
            v["ad_format"].as_str().context("ad_format")?.to_string(),
        );
        let vals = (
            v["impressions"].as_u64().context("impressions")?,
            v["clicks"].as_u64().context("clicks")?,
            micros(v["revenue"].as_str().context("revenue")?).context("revenue")?,
            v["ctr"].as_f64(),
            v["ecpm"].as_f64(),
        );
        match v["batch"].as_i64() {
            Some(batch) => {
                let e = latest.entry(key).or_insert((batch, vals));
                if batch >= e.0 {
                    *e = (batch, vals);
                }
            }
            None => {
                if let Some((_, prev)) = latest.insert(key.clone(), (0, vals)) {
                    twice.push(format!("{key:?}: written twice: {prev:?}, then {vals:?}"));
                }
            }
        }
    }
    let derived = text.lines().next().is_some_and(|l| l.contains("\"ctr\""));
    Ok(PeerOutput { windows: latest.into_iter().map(|(k, (_, v))| (k, v)).collect(), twice, derived })
}

pub struct PeerOutput {
    pub windows: Windows,
    /// Windows a peer that writes each window once wrote more than once.
    pub twice: Vec<String>,
    /// Carries CTR and eCPM (compared too).
    pub derived: bool,
}

#[derive(Debug)]
pub struct Comparison {
    pub compared: usize,
    /// adstream's windows left out: those at or after the peer's latest
    /// window start, for a peer that does not flush open windows at the end.
    pub not_closed: usize,
    /// adstream's windows left out because the peer dropped events of them as late.
    pub late_excluded: usize,
    pub diffs: Vec<String>,
}

/// Window starts (s) of Kafka Streams' "Skipping record for expired window
/// ... window=[start_ms,end_ms)" warnings.
pub fn expired_window_starts(log: &str) -> BTreeSet<i64> {
    log.lines()
        .filter(|l| l.contains("Skipping record for expired window"))
        .filter_map(|l| {
            let at = l.find("window=[")? + "window=[".len();
            l[at..].split(',').next()?.trim().parse::<i64>().ok().map(|ms| ms.div_euclid(1000))
        })
        .collect()
}

/// Row by row. For a peer that does not flush at the end (`flushes_at_end`
/// false), only windows starting before its latest emitted window start
/// are compared (every one of those has closed for it); the rest are
/// counted in `not_closed`. Windows starting at one of `late` (where the
/// peer dropped events as late) are left out of both sides and counted.
pub fn compare(
    ours: &Windows,
    theirs: &PeerOutput,
    flushes_at_end: bool,
    name: &str,
    late: &BTreeSet<i64>,
) -> Comparison {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    };
    let cutoff = if flushes_at_end { i64::MAX } else { theirs.windows.keys().map(|k| k.0).max().unwrap_or(i64::MIN) };
    let mut diffs = theirs.twice.clone();
    let mut compared = 0;
    let mut not_closed = 0;
    let mut late_excluded = 0;
    for (k, a) in ours {
        if late.contains(&k.0) {
            late_excluded += 1;
            continue;
        }
        if k.0 >= cutoff {
            not_closed += 1;
            continue;
        }
        compared += 1;
        match theirs.windows.get(k) {
            None => diffs.push(format!("{k:?}: only adstream has it: {a:?}")),
            Some(b)
                if a.0 != b.0
                    || a.1 != b.1
                    || a.2 != b.2
                    || (theirs.derived && (!close(a.3, b.3) || !close(a.4, b.4))) =>
            {
                diffs.push(format!("{k:?}: adstream {a:?} != {name} {b:?}"))
            }
            Some(_) => {}
        }
    }
    for (k, b) in &theirs.windows {
        if k.0 < cutoff && !late.contains(&k.0) && !ours.contains_key(k) {
            diffs.push(format!("{k:?}: only {name} has it: {b:?}"));
        }
    }
    Comparison { compared, not_closed, late_excluded, diffs }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decimal_text_to_micros() {
        assert_eq!(super::micros("12.3456"), Some(12_345_600));
        assert_eq!(super::micros("0"), Some(0));
        assert_eq!(super::micros("-0.000001"), Some(-1));
        assert_eq!(super::micros("1.0000001"), None);
    }

    fn windows(rows: &[(i64, &str, u64)]) -> super::Windows {
        rows.iter().map(|&(t, c, i)| ((t, c.to_string(), "banner".to_string()), (i, 0, 0, None, None))).collect()
    }

    #[test]
    fn comparison_of_peer_windows() {
        use super::{compare, PeerOutput};
        use std::collections::BTreeSet;
        let ours = windows(&[(0, "C1", 5), (10, "C1", 6), (20, "C1", 7), (30, "C1", 8)]);
        let peer = |rows: &[(i64, &str, u64)], twice: Vec<String>| PeerOutput {
            windows: windows(rows),
            twice,
            derived: false,
        };
        let none = BTreeSet::new();
        // A peer that flushes at the end must have every window.
        let c = compare(&ours, &peer(&[(0, "C1", 5), (10, "C1", 6), (20, "C1", 7)], vec![]), true, "P", &none);
        assert_eq!((c.compared, c.not_closed, c.diffs.len()), (4, 0, 1), "{c:?}");
        // One that does not: windows from its latest start on are not compared.
        let c = compare(&ours, &peer(&[(0, "C1", 5), (10, "C1", 6), (20, "C1", 7)], vec![]), false, "P", &none);
        assert_eq!((c.compared, c.not_closed, c.diffs.len()), (2, 2, 0), "{c:?}");
        // A wrong count, an extra window and a window written twice are differences.
        let c =
            compare(&ours, &peer(&[(0, "C1", 4), (10, "C2", 1), (20, "C1", 7)], vec!["x".into()]), false, "P", &none);
        assert_eq!(c.diffs.len(), 4, "{c:?}");
        // Windows where the peer dropped late events are left out, and counted.
        let late: BTreeSet<i64> = [0].into();
        let c = compare(&ours, &peer(&[(0, "C1", 4), (10, "C1", 6), (20, "C1", 7)], vec![]), false, "P", &late);
        assert_eq!((c.compared, c.late_excluded, c.diffs.len()), (1, 1, 0), "{c:?}");
        // Kafka Streams' warning lines give the windows.
        let log = "WARN KStreamWindowAggregate - Skipping record for expired window. topic=[t] partition=[1] \
                   offset=[7] timestamp=[1765324799326] window=[1765324790000,1765324800000) expiration=[1]";
        assert_eq!(super::expired_window_starts(log), [1765324790].into());
    }
}
