//! `adstream demo`, the README's first command, needs no services: its
//! output is checked against an independent count of the same seeded
//! events (serde_json + chrono, not adstream's parser or window code).

use std::collections::BTreeMap;
use std::process::Command;

use adstream::generator::{Generator, GeneratorConfig, DEFAULT_SEEDED_START_US};

fn demo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_adstream")).arg("demo").args(args).output().expect("run demo");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn demo_windows_equal_an_independent_count() {
    const N: u64 = 30_000;
    let stdout = demo(&["--rate", "0", "--count", &N.to_string(), "--seed", "5"]);

    // Regenerate the same events and count them independently.
    let mut g = Generator::new(GeneratorConfig {
        seed: Some(5),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate: 1000.0,
        jitter_us: 0,
    });
    let (mut k, mut j) = (Vec::new(), Vec::new());
    let mut expected: BTreeMap<(String, String, String), (u64, u64, f64)> = BTreeMap::new();
    for _ in 0..N {
        g.next_into(|| 0, &mut k, &mut j);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        let ts =
            chrono::NaiveDateTime::parse_from_str(v["timestamp"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        let start = ts.and_utc().timestamp() / 10 * 10;
        let start = chrono::DateTime::from_timestamp(start, 0).unwrap().format("%Y-%m-%d %H:%M:%S").to_string();
        let e = expected
            .entry((start, v["campaign_id"].as_str().unwrap().into(), v["ad_format"].as_str().unwrap().into()))
            .or_default();
        if v["event_type"] == "click" {
            e.1 += 1;
            e.2 += v["revenue"].as_f64().unwrap();
        } else {
            e.0 += 1;
        }
    }

    let mut seen = 0;
    for line in stdout.lines().filter(|l| l.contains(" | impressions ")) {
        let f: Vec<&str> = line.split(" | ").collect();
        assert_eq!(f.len(), 8, "{line}");
        let start = f[0].split(" ~ ").next().unwrap().to_string();
        let (imp, clk, rev) =
            expected.get(&(start, f[1].into(), f[2].into())).copied().unwrap_or_else(|| panic!("unexpected {line}"));
        let want = format!(
            "impressions {imp} | clicks {clk} | CTR {:.1}% | revenue ${:.2} | eCPM ${:.2}",
            clk as f64 / imp as f64 * 100.0,
            rev,
            rev / imp as f64 * 1000.0
        );
        assert_eq!(f[3..].join(" | "), want, "{line}");
        seen += 1;
    }
    assert_eq!(seen, expected.len(), "one line per (window, campaign, format)");
    assert!(stdout.contains("── window 2025-12-10 00:00:00 ~ 00:00:10 ──"));
    assert!(stdout.contains(&format!("demo done: {N} events")));
    assert!(stdout.contains(&format!("counted {N} | late 0 | rejected 0")));
}

#[test]
fn demo_paced_in_real_time_shows_partial_windows_at_the_end() {
    let stdout = demo(&["--rate", "500", "--duration", "2s"]);
    assert!(stdout.contains("(partial: the demo ended before this window closed)"), "{stdout}");
    let lines = stdout.lines().filter(|l| l.contains(" | impressions ")).count();
    assert!(lines >= 15, "at least one window of 5 campaigns x 3 formats:\n{stdout}");
    let done = stdout.lines().find(|l| l.starts_with("demo done: ")).unwrap();
    let n: u64 = done["demo done: ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!((700..=1100).contains(&n), "about 1000 events in 2 s at 500/s: {done}");
}

/// Item 7 of the CTR-model issue: every closed window's block ends with the
/// model's line, predicted (before learning the window) vs observed CTR per
/// format; the observed figures equal an independent count, the predicted
/// ones are probabilities, and the model improves on its first guess.
#[test]
fn demo_ends_each_closed_window_with_predicted_vs_observed_ctr() {
    const N: u64 = 60_000;
    let stdout = demo(&["--rate", "0", "--count", &N.to_string(), "--seed", "9", "--traffic", "segmented"]);
    let mut g = Generator::new(GeneratorConfig {
        seed: Some(9),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate: 1000.0,
        jitter_us: 0,
    })
    .with_traffic(adstream::generator::Traffic::new(adstream::generator::TrafficModel::Segmented, 5));
    let (mut k, mut j) = (Vec::new(), Vec::new());
    // (window start, format) -> (impressions, clicks)
    let mut by_format: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for _ in 0..N {
        g.next_into(|| 0, &mut k, &mut j);
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        let ts =
            chrono::NaiveDateTime::parse_from_str(v["timestamp"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        let start = chrono::DateTime::from_timestamp(ts.and_utc().timestamp() / 10 * 10, 0).unwrap();
        let e = by_format
            .entry((start.format("%Y-%m-%d %H:%M:%S").to_string(), v["ad_format"].as_str().unwrap().into()))
            .or_default();
        if v["event_type"] == "click" {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    let mut window: Option<(String, bool)> = None;
    let mut models = 0;
    let mut errors: Vec<(f64, f64)> = Vec::new();
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("── window ") {
            // The previous closed window must have ended with its model line.
            if let Some((w, true)) = &window {
                assert!(lines[i - 1].starts_with("  model v"), "window {w} ends without a model line");
            }
            let start = rest.split(" ~ ").next().unwrap().to_string();
            window = Some((start, !line.contains("(partial")));
            continue;
        }
        let Some(model) = line.strip_prefix("  model v") else { continue };
        let (start, closed) = window.clone().expect("a model line inside a window");
        assert!(closed, "no model line for a partial window: {line}");
        models += 1;
        assert!(model.starts_with(&format!("{models} |")), "version = windows learned: {line}");
        for part in model.split(" | ").skip(1) {
            let f: Vec<&str> = part.split(' ').collect();
            assert_eq!((f[1], f[2], f[4]), ("predicted", "CTR", "observed"), "{part}");
            let (imps, clicks) = by_format[&(start.clone(), f[0].to_string())];
            let observed = clicks as f64 / imps as f64 * 100.0;
            assert_eq!(f[5], format!("{observed:.1}%"), "observed CTR of {} in {start}", f[0]);
            let predicted: f64 = f[3].trim_end_matches('%').parse().unwrap();
            assert!(predicted > 0.0 && predicted < 100.0, "{part}");
            errors.push((predicted, observed));
        }
    }
    assert!(models >= 5, "a model line per closed window:\n{stdout}");
    // The first window is predicted by a model that knows nothing (50 %);
    // the last ones by a model that learned: much closer to what happened.
    let err = |s: &[(f64, f64)]| s.iter().map(|(p, o)| (p - o).abs()).sum::<f64>() / s.len() as f64;
    let (first, last) = (err(&errors[..3]), err(&errors[errors.len() - 3..]));
    assert!(last < first / 3.0, "the model learns: mean |predicted - observed| {first:.2} → {last:.2} points");
}
