//! `--traffic`, `--campaigns` and `generate --print-truth` as an operator
//! meets them: the truth export is valid JSON of the documented shape and
//! never touches Kafka, and bad values are refused with one line. No
//! services needed (the brokers point at a closed port).

mod common;

use common::bare;

use std::process::{Command, Output};

use serde_json::Value;

fn truth(cmd: &mut Command) -> Value {
    let out: Output = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "nothing on stderr (no Kafka): {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{cmd:?}: not JSON: {e}"))
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

#[test]
fn print_truth_is_the_documented_json_for_every_segment_and_hour() {
    let t = truth(bare().args(["generate", "--print-truth", "--traffic", "segmented", "--campaigns", "3"]));
    let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["traffic", "label", "ctr", "p_click", "hour", "share", "campaigns", "shares", "revenue_usd_per_click"] {
        assert!(keys.contains(&k), "{k} missing: {keys:?}");
    }
    assert_eq!(t["traffic"], "segmented");
    assert_eq!(t["label"], "clicks per impression");
    assert!(t["ctr"].as_str().unwrap().contains("p_click / (1 - p_click)"));
    assert_eq!(t["campaigns"], 3);
    let segments = t["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 3 * 3 * 7 * 2);
    let mut seen = std::collections::BTreeSet::new();
    let mut total_share = 0.0;
    let mut hourly_varies = false;
    for s in segments {
        let key = ["campaign_id", "ad_format", "country", "device"].map(|k| s[k].as_str().unwrap().to_string());
        assert!(["C001", "C002", "C003"].contains(&key[0].as_str()), "{s}");
        assert!(seen.insert(key), "each segment once");
        let (p, ctr) = (numbers(&s["hourly_p_click"]), numbers(&s["hourly_ctr"]));
        assert_eq!((p.len(), ctr.len()), (24, 24));
        for h in 0..24 {
            assert!(p[h] > 0.0 && p[h] < 1.0, "{s}");
            assert!((ctr[h] - p[h] / (1.0 - p[h])).abs() < 1e-12, "ctr is clicks per impression: {s}");
        }
        hourly_varies |= p.iter().any(|x| (x - p[0]).abs() > 1e-9);
        total_share += s["share"].as_f64().unwrap();
    }
    assert_eq!(seen.len(), 126);
    assert!(hourly_varies, "the segmented model has a daily curve");
    assert!((total_share - 1.0).abs() < 1e-9, "shares of all segments add up to 1: {total_share}");
    assert_eq!(t["shares"]["country"]["US"], 0.35);
    assert_eq!(t["shares"]["device"]["Android"], 0.55);
    assert_eq!(t["revenue_usd_per_click"]["US"], serde_json::json!([0.02, 0.1]));
    println!("segmented, 3 campaigns: {} segments × 24 hours", segments.len());
}

#[test]
fn print_truth_of_the_seed_model_depends_on_the_format_only() {
    // Also through the environment, as every flag.
    let t = truth(bare().env("ADSTREAM_PRINT_TRUTH", "true").args(["generate"]));
    assert_eq!(t["traffic"], "seed");
    let segments = t["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 5 * 3 * 7 * 2, "C001..C005 by default");
    for s in segments {
        let want = match s["ad_format"].as_str().unwrap() {
            "banner" => 0.05,
            "interstitial" => 0.12,
            _ => 0.25,
        };
        assert!(numbers(&s["hourly_p_click"]).iter().all(|p| *p == want), "{s}");
        assert!((s["share"].as_f64().unwrap() - 1.0 / 210.0).abs() < 1e-15, "{s}");
    }
    let t = truth(
        bare()
            .env("ADSTREAM_TRAFFIC", "segmented")
            .env("ADSTREAM_CAMPAIGNS", "1000")
            .args(["generate", "--print-truth"]),
    );
    let segments = t["segments"].as_array().unwrap();
    assert_eq!((t["traffic"].as_str(), segments.len()), (Some("segmented"), 1000 * 42));
    assert_eq!(segments[0]["campaign_id"], "C0001");
    assert_eq!(segments[segments.len() - 1]["campaign_id"], "C1000");
}

/// Runs `cmd`, asserts a non-zero exit and exactly one stderr line that
/// contains `hint`.
fn one_line_error(cmd: &mut Command, hint: &str) {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{cmd:?} must fail:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{cmd:?}: one line, got:\n{err}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains(hint), "{cmd:?}: {:?} lacks {hint:?}", lines[0]);
}

#[test]
fn bad_traffic_flags_are_refused_with_one_line() {
    for sub in [&["generate", "--print-truth"][..], &["demo", "--count", "10"], &["run", "--self-feed", "10"]] {
        for (flags, hint) in [
            (&["--campaigns", "0"][..], "--campaigns 0 is out of range: use 1 to 100000"),
            (&["--campaigns", "100001"], "--campaigns 100001 is out of range"),
            (&["--campaigns", "many"], "--campaigns"),
            (&["--traffic", "poisson"], "[possible values: seed, segmented]"),
        ] {
            one_line_error(bare().args(sub).args(flags), hint);
        }
    }
    one_line_error(bare().env("ADSTREAM_CAMPAIGNS", "0").args(["demo"]), "--campaigns 0");
}

#[test]
fn demo_runs_the_segmented_model_over_many_campaigns_and_reads_it_from_a_settings_file() {
    let dir = std::env::temp_dir().join(format!("adstream-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("adstream.toml");
    std::fs::write(&file, "[demo]\ntraffic = \"segmented\"\ncampaigns = 1000\n").unwrap();
    let out = bare()
        .args(["--config", file.to_str().unwrap(), "demo", "--rate", "0", "--count", "5000", "--seed", "3"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("demo done: 5000 events"), "{stdout}");
    assert!(stdout.contains("counted 5000 | late 0 | rejected 0"), "{stdout}");
    let campaigns: std::collections::BTreeSet<&str> =
        stdout.lines().filter(|l| l.contains(" | impressions ")).filter_map(|l| l.split(" | ").nth(1)).collect();
    assert!(campaigns.len() > 900, "5000 events over 1000 campaigns: {}", campaigns.len());
    assert!(campaigns.iter().all(|c| c.len() == 5 && c.starts_with('C')), "C0001..C1000: {campaigns:?}");
}
