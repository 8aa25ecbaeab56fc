//! Campaign churn end to end (issue 18 item 3), on the real broker and
//! ClickHouse engine: campaigns that start and end are reclaimed, so a
//! stream of more distinct campaigns than the old process-wide cap
//! (100,000) is counted in full, across a restart, exactly as the oracle
//! over the raw events says.

mod common;

use std::time::Duration;

use common::*;

/// The reported case: 150,000 campaigns over 150 base windows, 1,000 new
/// ones in each (one impression each, a click for one in ten), spread over
/// 3 partitions, all inside one hour; `run --drain` after the first 75
/// windows, then again after the rest (a restart in the middle: the second
/// run replays the open hour from its first offset). Before the fix the
/// process-wide cap counted 100,000 campaigns and sent the other 50,000 to
/// the dead-letter topic; now every event is counted, every row equals the
/// oracle, and every 1 h row is the sum of its 10 s rows.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Kafka and ClickHouse: run scripts/test.sh"]
async fn campaign_churn_is_counted_in_full_across_a_restart() {
    let (topic, group, db) = (unique("ad_events"), unique("g"), unique("churn"));
    create_topic(&topic).await;
    const WINDOWS: i64 = 150;
    const PER: i64 = 1_000;
    let hour = 3_600_000_000i64;
    // The start of the hour before last: all 150 windows (25 minutes) in
    // one 1 h window, well inside retention and --max-future.
    let t0 = (chrono::Utc::now().timestamp_micros() / hour - 2) * hour;
    let mut msgs: Vec<(i32, String, i64)> = Vec::new();
    for c in 0..WINDOWS * PER {
        let (k, i) = (c / PER, c % PER);
        let ts = t0 + k * 10_000_000 + i * 9_000;
        let part = (c % 3) as i32;
        let campaign = format!("K{c:06}");
        let kafka_ms = (ts + 2_000_000) / 1000;
        msgs.push((part, event(&format!("i{c}"), &iso(ts), &campaign, false), kafka_ms));
        if c % 10 == 0 {
            let ts = ts + 500_000;
            msgs.push((part, event(&format!("c{c}"), &iso(ts), &campaign, true), (ts + 2_000_000) / 1000));
        }
    }
    let half = msgs.iter().position(|m| m.1.contains("\"i75000\"")).expect("window 75");
    let jsonl = scratch_dir().join(format!("{topic}.jsonl"));
    let args = run_args(&topic, &group, &db);
    produce_timed(&topic, &msgs[..half], &jsonl).await;
    run_ok(adstream().args(&args).arg("--drain"), Duration::from_secs(600));
    produce_timed(&topic, &msgs[half..], &jsonl).await;
    let out = run_ok(adstream().args(&args).arg("--drain"), Duration::from_secs(600));
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let events = msgs.len() as u64;
    let oracle = Oracle::load(&db, &topic, &[jsonl.as_path()], DEFAULT_LATENESS).await;
    let (rows, late) = oracle.assert_matches(events).await;
    assert_eq!(late, 0, "on time throughout");
    let campaigns = scalar(&format!(
        "SELECT toInt64(uniqExact(campaign_id)) FROM {db}.ad_window_parts FINAL \
         WHERE rollup_name = 'campaign_id,ad_format:10s'"
    ))
    .await;
    assert_eq!(campaigns, WINDOWS * PER, "every campaign counted");
    // Every 1 h row equals the sum of its 10 s rows (per campaign and
    // format; with the restart, the hour was rebuilt by the replay).
    let mismatched = tsv(&format!(
        "SELECT h.campaign_id, h.ad_format, h.impressions, h.clicks, h.revenue, s.impressions, s.clicks, s.revenue FROM ( \
           SELECT campaign_id, ad_format, toInt64(sum(impressions)) AS impressions, toInt64(sum(clicks)) AS clicks, \
                  sum(revenue) AS revenue \
           FROM {db}.ad_window_parts FINAL WHERE rollup_name = 'campaign_id,ad_format:1h' GROUP BY campaign_id, ad_format) AS h \
         FULL OUTER JOIN ( \
           SELECT campaign_id, ad_format, toInt64(sum(impressions)) AS impressions, toInt64(sum(clicks)) AS clicks, \
                  sum(revenue) AS revenue \
           FROM {db}.ad_window_parts FINAL WHERE rollup_name = 'campaign_id,ad_format:10s' GROUP BY campaign_id, ad_format) AS s \
         USING (campaign_id, ad_format) \
         WHERE h.impressions != s.impressions OR h.clicks != s.clicks OR h.revenue != s.revenue LIMIT 5"
    ))
    .await;
    assert!(mismatched.is_empty(), "1 h rows that are not the sum of their 10 s rows:\n{mismatched}");
    let hour_rows = scalar(&format!(
        "SELECT count() FROM (SELECT campaign_id, ad_format FROM {db}.ad_window_parts FINAL \
         WHERE rollup_name = 'campaign_id,ad_format:1h' GROUP BY campaign_id, ad_format)"
    ))
    .await;
    assert_eq!(hour_rows, WINDOWS * PER, "a 1 h row for every campaign");
    println!(
        "campaign churn: {} campaigns over {WINDOWS} windows, {events} events, a restart: all counted, {rows} rows \
         equal the oracle, every 1 h row the sum of its 10 s rows; second run: {}",
        WINDOWS * PER,
        log.lines().rev().find(|l| l.contains("final stats:")).unwrap_or("")
    );
}

/// One event as the generator would write it (banner, US, iOS; a click
/// earns 0.05).
fn event(id: &str, ts: &str, campaign: &str, click: bool) -> String {
    let (ty, rev) = if click { ("click", "0.05") } else { ("impression", "0.0") };
    format!(
        r#"{{"event_id":"{id}","timestamp":"{ts}","user_id":"U12345","campaign_id":"{campaign}","ad_format":"banner","country":"US","device":"iOS","event_type":"{ty}","revenue":{rev}}}"#
    )
}
