//! ClickHouse: queries, what adstream wrote (windows and rollups), and
//! comparing rows with the oracle's.

use std::collections::BTreeMap;

use super::*;

pub fn ch() -> ::clickhouse::Client {
    ::clickhouse::Client::default().with_url(clickhouse_url())
}

pub async fn exec(sql: &str) {
    ch().query(sql).execute().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A query's result as TabSeparated text.
pub async fn tsv(sql: &str) -> String {
    let mut cur = ch().query(sql).fetch_bytes("TabSeparated").unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut out = Vec::new();
    while let Some(chunk) = cur.next().await.unwrap_or_else(|e| panic!("{sql}: {e}")) {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).unwrap()
}

/// Like [`scalar`], but `None` when the query fails (e.g. the table does not
/// exist yet).
pub async fn try_scalar(sql: &str) -> Option<i64> {
    let mut cur = ch().query(sql).fetch_bytes("TabSeparated").ok()?;
    let mut out = Vec::new();
    while let Some(chunk) = cur.next().await.ok()? {
        out.extend_from_slice(&chunk);
    }
    String::from_utf8(out).ok()?.trim().parse().ok()
}

pub async fn scalar(sql: &str) -> i64 {
    let s = tsv(sql).await;
    s.trim().parse().unwrap_or_else(|_| panic!("{sql} returned {s:?}"))
}

/// One row of window numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub impressions: u64,
    pub clicks: u64,
    pub revenue: String,
    pub ctr: Option<f64>,
    pub ecpm: Option<f64>,
}

pub type Windows = BTreeMap<(i64, String, String), Metrics>;

pub(super) fn parse_windows(text: &str) -> Windows {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 8, "{l}");
            ((f[0].parse().unwrap(), f[1].to_string(), f[2].to_string()), metrics(&f[3..]))
        })
        .collect()
}

/// impressions, clicks, revenue, ctr, ecpm (TSV fields; `\N` is NULL).
fn metrics(f: &[&str]) -> Metrics {
    let opt = |s: &str| if s == "\\N" { None } else { Some(s.parse::<f64>().unwrap()) };
    Metrics {
        impressions: f[0].parse().unwrap(),
        clicks: f[1].parse().unwrap(),
        revenue: f[2].to_string(),
        ctr: opt(f[3]),
        ecpm: opt(f[4]),
    }
}

/// What adstream wrote: `{db}.ad_metrics_10s`, window start as Unix seconds.
pub async fn actual_windows(db: &str) -> Windows {
    let text = tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), campaign_id, ad_format, impressions, clicks, \
         toString(revenue), ctr, ecpm FROM {db}.ad_metrics_10s \
         WHERE dateDiff('millisecond', window_start, window_end) = 10000 ORDER BY 1, 2, 3"
    ))
    .await;
    let w = parse_windows(&text);
    assert_eq!(w.len(), text.lines().count(), "ad_metrics_10s must have one row per (window, campaign, format)");
    w
}

/// Rows of one rollup: (window start in seconds, dimension values joined
/// by `|`) → numbers.
pub type RollupRows = BTreeMap<(i64, String), Metrics>;

pub(super) fn parse_rollup(text: &str) -> RollupRows {
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "{l}");
            ((f[0].parse().unwrap(), f[1].to_string()), metrics(&f[2..]))
        })
        .collect()
}

/// What adstream wrote to `{db}.{view}`, a view with `window_start`, the
/// columns `dims` and the numbers; one row per (window, key) or it fails.
pub async fn actual_rollup(db: &str, view: &str, dims: &[&str]) -> RollupRows {
    let key = if dims.is_empty() { "''".to_string() } else { format!("concat_ws('|', {})", dims.join(", ")) };
    let text = tsv(&format!(
        "SELECT toInt64(toUnixTimestamp(window_start)), {key}, impressions, clicks, toString(revenue), ctr, ecpm \
         FROM {db}.{view} ORDER BY 1, 2"
    ))
    .await;
    let rows = parse_rollup(&text);
    assert_eq!(rows.len(), text.lines().count(), "{view} must have one row per (window, key)");
    rows
}

/// The default rollups' views besides `ad_metrics_10s`: (view, dimensions,
/// window µs).
pub const ROLLUP_VIEWS: [(&str, &[&str], i64); 4] = [
    ("ad_metrics_segments_10s", &["campaign_id", "ad_format", "country", "device"], 10_000_000),
    ("ad_metrics_1m", &["campaign_id", "ad_format"], 60_000_000),
    ("ad_metrics_1h", &["campaign_id", "ad_format"], 3_600_000_000),
    ("ad_metrics_segments_1h", &["campaign_id", "ad_format", "country", "device"], 3_600_000_000),
];

fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(1.0),
        _ => false,
    }
}

/// Asserts adstream's windows equal the oracle's, row by row; returns the
/// number of rows compared.
pub fn assert_windows_equal<K: std::fmt::Debug + Ord>(
    actual: &BTreeMap<K, Metrics>,
    expected: &BTreeMap<K, Metrics>,
) -> usize {
    assert_rows_equal("ad_metrics_10s", actual, expected)
}

/// [`assert_windows_equal`] for the rows of `what`.
pub fn assert_rows_equal<K: std::fmt::Debug + Ord>(
    what: &str,
    actual: &BTreeMap<K, Metrics>,
    expected: &BTreeMap<K, Metrics>,
) -> usize {
    let mut problems = Vec::new();
    for (k, e) in expected {
        match actual.get(k) {
            None => problems.push(format!("missing {k:?}: expected {e:?}")),
            Some(a) => {
                if a.impressions != e.impressions
                    || a.clicks != e.clicks
                    || a.revenue != e.revenue
                    || !close(a.ctr, e.ctr)
                    || !close(a.ecpm, e.ecpm)
                {
                    problems.push(format!("{k:?}: adstream {a:?} != oracle {e:?}"));
                }
            }
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            problems.push(format!("unexpected row {k:?}: {:?}", actual[k]));
        }
    }
    assert!(
        problems.is_empty(),
        "{what}: {} mismatches with the oracle, first ones:\n{}",
        problems.len(),
        problems[..problems.len().min(10)].join("\n")
    );
    expected.len()
}

/// Asserts two sorted lists are equal, naming the first differences.
pub(super) fn assert_lists_equal(what: &str, actual: &[String], expected: &[String]) {
    if actual == expected {
        return;
    }
    let a: std::collections::BTreeSet<&String> = actual.iter().collect();
    let e: std::collections::BTreeSet<&String> = expected.iter().collect();
    let extra: Vec<&&String> = a.difference(&e).take(10).collect();
    let missing: Vec<&&String> = e.difference(&a).take(10).collect();
    panic!(
        "{what}: adstream has {}, the oracle {}; adstream only (first 10): {extra:?}; oracle only (first 10): {missing:?}",
        actual.len(),
        expected.len()
    );
}

/// Every row of `ad_window_parts` after FINAL, for before/after comparisons.
pub async fn parts_snapshot(db: &str) -> String {
    tsv(&format!(
        "SELECT rollup_name, window_start, campaign_id, ad_format, country, device, topic, partition, impressions, \
         clicks, revenue, version, is_final FROM {db}.ad_window_parts FINAL \
         ORDER BY rollup_name, window_start, campaign_id, ad_format, country, device, topic, partition"
    ))
    .await
}
