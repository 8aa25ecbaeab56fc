//! The ClickHouse cluster schema and the insert deduplication tokens,
//! checked as far as this machine allows: there is no multi-node ClickHouse
//! here, so every statement `migrate --print --cluster` renders is parsed
//! by the real engine (`formatQuery`), and the tokens are checked on the
//! single-node schema, whose tables deduplicate by token too
//! (`non_replicated_deduplication_window`).

mod common;

use std::time::Duration;

use clap::Parser as _;
use common::*;

use adstream::event::AdFormat;
use adstream::sink::{Batch, OutRow};
use adstream::window::{Totals, WindowRow};

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
    assert_eq!(kinds, [3, 3, 6], "replicated tables, Distributed tables, views");
    // The check can fail: a statement cut short is refused.
    let cut = &stmts[1][..stmts[1].len() - 1];
    assert!(format_query(cut).await.is_err(), "{cut}");
    // And the single-node statements are what `migrate` runs (tests/e2e.rs).
    for s in &single {
        assert!(!format_query(s).await.unwrap().contains("ON CLUSTER"));
    }
    println!("{} cluster statements parsed by the engine: {kinds:?}", stmts.len());
}

fn row(partition: i32, start_s: i64, campaign: u32, version: u64, impressions: u64) -> OutRow {
    let start = start_s * 1_000_000;
    OutRow {
        partition,
        row: WindowRow {
            window_start_us: start,
            window_end_us: start + 10_000_000,
            campaign,
            ad_format: AdFormat::Banner,
            totals: Totals { impressions, clicks: 1, revenue_micros: 2_500 },
            version,
            is_final: version % 2 == 1,
        },
    }
}

fn batch(rows: Vec<OutRow>) -> Batch {
    Batch { rows, names: vec!["C001".into(), "C002".into()].into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs ClickHouse: run scripts/test.sh"]
async fn a_resent_batch_is_dropped_by_its_deduplication_token() {
    let db = unique("dedup");
    let cli = adstream::cli::Cli::try_parse_from([
        "adstream",
        "migrate",
        "--clickhouse-url",
        &clickhouse_url(),
        "--database",
        &db,
    ])
    .unwrap();
    let adstream::cli::Command::Migrate(args) = cli.command else { panic!("migrate") };
    let sink = adstream::sink::clickhouse::ClickHouseSink::connect(&args.clickhouse, None, "ad-events").await.unwrap();
    let rows =
        || vec![row(0, 1_700_000_000, 0, 41, 5), row(1, 1_700_000_000, 0, 17, 3), row(0, 1_700_000_010, 1, 60, 8)];
    let raw = || async { scalar(&format!("SELECT count() FROM {db}.ad_window_parts")).await };

    sink.write(&batch(rows())).await.unwrap();
    assert_eq!(raw().await, 3);
    // The retry of the same batch, its rows in another order (and a new
    // inserted_at on the server): dropped.
    let mut again = rows();
    again.reverse();
    sink.write(&batch(again)).await.unwrap();
    assert_eq!(raw().await, 3, "the re-sent batch was written again");
    // A batch cut differently (one row more) is another batch: written,
    // and the version collapses the repeated rows in the views.
    let mut more = rows();
    more.push(row(2, 1_700_000_000, 0, 9, 1));
    sink.write(&batch(more)).await.unwrap();
    assert_eq!(raw().await, 7);
    assert_eq!(scalar(&format!("SELECT sum(impressions) FROM {db}.ad_metrics_10s")).await, 5 + 3 + 8 + 1);
    // ad_metrics_latest (GLOBAL IN since the cluster schema) on one server.
    assert_eq!(
        tsv(&format!("SELECT campaign_id, impressions FROM {db}.ad_metrics_latest ORDER BY window_start")).await,
        "C001\t9\nC002\t8\n"
    );
    exec(&format!("DROP DATABASE {db}")).await;
}
