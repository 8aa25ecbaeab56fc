//! Results: the median of every metric over the runs, a table with each
//! figure beside its target, and the same as JSON in `target/bench/`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

/// One run's measurements, by metric name.
pub type Run = BTreeMap<&'static str, f64>;

#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
    /// Reported only.
    None,
}

/// A headline figure: the median of `metric` over the runs.
pub struct Figure {
    pub label: &'static str,
    pub metric: &'static str,
    pub unit: &'static str,
    pub target: Target,
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() < 10.0 {
        return format!("{x:.3}");
    }
    if x.abs() < 1000.0 {
        return format!("{x:.1}");
    }
    let s = (x.abs().round() as u64).to_string();
    let mut out = String::from(if x < 0.0 { "-" } else { "" });
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn target_text(t: Target) -> String {
    match t {
        Target::AtLeast(v) => format!("≥ {}", fmt_num(v)),
        Target::AtMost(v) => format!("≤ {}", fmt_num(v)),
        Target::None => String::new(),
    }
}

fn met(t: Target, v: f64) -> Option<bool> {
    match t {
        Target::AtLeast(x) => Some(v >= x),
        Target::AtMost(x) => Some(v <= x),
        Target::None => None,
    }
}

/// Prints the table and writes `<dir>/<name>.json`; returns the JSON.
pub fn finish(
    dir: &Path,
    name: &str,
    title: &str,
    config: Value,
    runs: &[Run],
    figures: &[Figure],
    checks: Value,
) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    println!("\n{title} (median of {} runs)", runs.len());
    println!("  {:<44} {:>16}  {:<10} {:>16}", "figure", "median", "unit", "target");
    for f in figures {
        let values: Vec<f64> = runs.iter().filter_map(|r| r.get(f.metric).copied()).collect();
        let m = median(values.clone());
        let ok = met(f.target, m);
        let mark = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        println!("  {:<44} {:>16}  {:<10} {:>16}  {mark}", f.label, fmt_num(m), f.unit, target_text(f.target));
        rows.push(json!({
            "label": f.label, "metric": f.metric, "unit": f.unit, "median": m, "runs": values,
            "target": match f.target { Target::AtLeast(v) => json!({"at_least": v}), Target::AtMost(v) => json!({"at_most": v}), Target::None => Value::Null },
            "target_met": ok,
        }));
    }
    let doc = json!({
        "bench": name,
        "title": title,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "machine": machine(),
        "config": config,
        "runs": runs,
        "figures": rows,
        "checks": checks,
    });
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("  -> {}", path.display());
    Ok(doc)
}

/// CPU model and count, memory, kernel: enough to tell two machines apart.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).unwrap_or("");
    let mem_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()));
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model.trim(),
        "mem_gib": mem_kb.map(|k| k as f64 / 1048576.0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    })
}

/// Prints every figure of the JSON results in `dir` as one table (for the
/// end of `scripts/bench.sh` and for BENCHMARKS.md).
pub fn summary(dir: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for name in ["engine", "generator", "consumer", "scaling", "scaleout"] {
        let path = dir.join(format!("{name}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let doc: Value = serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
        let n = doc["runs"].as_array().map_or(0, Vec::len);
        for f in doc["figures"].as_array().into_iter().flatten() {
            let target = if let Some(v) = f["target"]["at_least"].as_f64() {
                target_text(Target::AtLeast(v))
            } else if let Some(v) = f["target"]["at_most"].as_f64() {
                target_text(Target::AtMost(v))
            } else {
                String::new()
            };
            let mark = match f["target_met"].as_bool() {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "",
            };
            rows.push(format!(
                "| {} | {} {} | {} | {} | {n} |",
                f["label"].as_str().unwrap_or(""),
                fmt_num(f["median"].as_f64().unwrap_or(f64::NAN)),
                f["unit"].as_str().unwrap_or(""),
                target,
                mark
            ));
        }
    }
    println!("\n| figure | median | target | | runs |\n|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    if let Some(doc) =
        std::fs::read_to_string(dir.join("consumer.json")).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        crate::consumer::print_peer_table(&doc);
    }
    Ok(())
}
