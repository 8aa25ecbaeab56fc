//! The ClickHouse cluster schema and the insert deduplication tokens,
//! checked as far as this machine allows: there is no multi-node ClickHouse
//! here, so every statement `migrate --print --cluster` renders is parsed
//! by the real engine (`formatQuery`), and the tokens are checked on the
//! single-node schema, whose tables deduplicate by token too
//! (`non_replicated_deduplication_window`).

mod common;

use std::time::Duration;

use common::*;

use adstream::engine::{Batch, Processor};
use adstream::generator::{Generator, GeneratorConfig, DEFAULT_SEEDED_START_US};

/// What the engine makes of `sql`: its canonical formatting, or its error.
async fn format_query(sql: &str) -> Result<String, String> {
    let mut cur = ch()
        .query("SELECT formatQuery({q:String})")
        .param("q", sql)
        .fetch_bytes("TSVRaw")
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        match cur.next().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&out).trim_end().to_string())
}

/// The statements of `adstream migrate --print`, split at the `;` ends.
fn printed(args: &[&str]) -> Vec<String> {
    let out = run_ok(adstream().args(["migrate", "--print", "--database", "adx"]).args(args), Duration::from_secs(30));
    let text = String::from_utf8(out.stdout).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-- ")).collect::<Vec<_>>().join("\n");
    body.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs ClickHouse: run scripts/test.sh"]
async fn every_cluster_statement_is_parsed_by_the_engine() {
    let stmts = printed(&["--cluster", "adstream_cluster"]);
    let single = printed(&[]);
    assert!(stmts.len() > single.len(), "a local and a Distributed table per table");
    let mut kinds = [0usize; 3];
    for s in &stmts {
        let formatted = format_query(s).await.unwrap_or_else(|e| panic!("the engine rejects:\n{s}\n{e}"));
        // Parsed whole: the cluster clause, engines and macros survive.
        assert!(formatted.contains("ON CLUSTER adstream_cluster"), "{formatted}");
        if formatted.contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/adx/") {
            assert!(formatted.contains("'{replica}'"), "{formatted}");
            kinds[0] += 1;
        } else if formatted.contains("ENGINE = Distributed('adstream_cluster', 'adx', '") {
            kinds[1] += 1;
        } else if formatted.starts_with("CREATE OR REPLACE VIEW adx.") {
            kinds[2] += 1;
        }
        // Formatting is a fixed point: nothing was dropped as it parsed.
        assert_eq!(format_query(&formatted).await.as_deref(), Ok(formatted.as_str()));
    }
    // Each single-node table becomes a replicated and a Distributed one;
    // every view stays one (3 + 3 + 10 before the learner's tables).
    let tables = single.iter().filter(|s| s.starts_with("CREATE TABLE")).count();
    let views = single.iter().filter(|s| s.starts_with("CREATE OR REPLACE VIEW")).count();
    assert_eq!((tables, views), (8, 13), "sql/ has 8 tables and 13 views");
    assert_eq!(kinds, [tables, tables, views], "replicated tables, Distributed tables, views");
    // The check can fail: a statement cut short is refused.
    let cut = &stmts[1][..stmts[1].len() - 1];
    assert!(format_query(cut).await.is_err(), "{cut}");
    // And the single-node statements are what `migrate` runs (tests/e2e.rs).
    for s in &single {
        assert!(!format_query(s).await.unwrap().contains("ON CLUSTER"));
    }
    // The sharding keys are valid expressions over the tables' columns
    // (formatQuery only parses): evaluated on the single-node schema.
    let db = unique("shardkey");
    run_ok(adstream().args(["migrate", "--database", &db]), Duration::from_secs(60));
    for (table, key) in adstream::testing::SHARDING {
        tsv(&format!("SELECT {key} FROM {db}.{table} LIMIT 0")).await;
    }
    exec(&format!("DROP DATABASE {db}")).await;
    println!("{} cluster statements parsed by the engine: {kinds:?}", stmts.len());
}

/// The batch the real processor makes of the first `n` seeded events, in
/// two partitions, every window fired.
fn batch_of(n: u64) -> Batch {
    let cfg = adstream::engine::WindowConfig::new(10_000_000, 5_000_000, 3_600_000_000);
    let mut proc = Processor::new(cfg, adstream::engine::DEFAULT_MAX_EVENT_BYTES);
    let mut g = Generator::new(GeneratorConfig {
        seed: Some(7),
        start_time_us: DEFAULT_SEEDED_START_US,
        event_rate: 100.0,
        jitter_us: 0,
    });
    let (mut key, mut json) = (Vec::new(), Vec::new());
    for i in 0..n {
        g.next_into(|| 0, &mut key, &mut json);
        let p = (i % 2) as i32;
        if !proc.has_partition(p) {
            proc.init_partition(p, None);
        }
        proc.process(p, (i / 2) as i64, None, Some(&key), &json);
    }
    proc.fire_all();
    proc.take_batch()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs ClickHouse: run scripts/test.sh"]
async fn a_resent_batch_is_dropped_by_its_deduplication_token() {
    let db = unique("dedup");
    let ch = adstream::testing::ClickHouseConfig {
        url: adstream::testing::Secret::new(clickhouse_url()),
        database: db.clone(),
        user: "default".into(),
        password: None,
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        tls: Default::default(),
    };
    let sink = adstream::testing::ClickHouseSink::connect(&ch, None, "ad-events").await.unwrap();
    let raw = || async { scalar(&format!("SELECT count() FROM {db}.ad_window_parts")).await };

    let first = batch_of(2_000);
    let rows = first.rows.len() as i64;
    assert!(rows > 30, "several windows × keys × partitions: {rows}");
    sink.write(&first).await.unwrap();
    assert_eq!(raw().await, rows);
    // The retry of the same batch, its rows in another order (and a new
    // inserted_at on the server): dropped.
    let mut again = batch_of(2_000);
    again.rows.reverse();
    sink.write(&again).await.unwrap();
    assert_eq!(raw().await, rows, "the re-sent batch was written again");
    // A batch cut elsewhere (more events: a replay after a crash) is
    // another batch: written, and the versions collapse the repeated rows
    // in the views.
    let more = batch_of(2_100);
    sink.write(&more).await.unwrap();
    assert_eq!(raw().await, rows + more.rows.len() as i64);
    assert_eq!(scalar(&format!("SELECT sum(impressions) + sum(clicks) FROM {db}.ad_metrics_10s")).await, 2_100);
    // ad_metrics_latest (GLOBAL IN since the cluster schema) on one server:
    // the six latest 10 s windows of the 21 s of event time (all three).
    assert_eq!(scalar(&format!("SELECT count(DISTINCT window_start) FROM {db}.ad_metrics_latest")).await, 3);
    assert_eq!(scalar(&format!("SELECT sum(impressions) + sum(clicks) FROM {db}.ad_metrics_latest")).await, 2_100);
    exec(&format!("DROP DATABASE {db}")).await;
}
