//! The real broker and ClickHouse the end-to-end benches run against
//! (`ADSTREAM_BROKERS`, `ADSTREAM_CLICKHOUSE_URL`, as for the tests), and
//! the few admin calls the benches need.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::procstat::run_measured;

pub fn brokers() -> String {
    std::env::var("ADSTREAM_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("ADSTREAM_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("tokio runtime")
}

/// Deletes a bench topic (its data would otherwise stay on disk).
pub fn delete_topic(topic: &str) -> anyhow::Result<()> {
    // The brokers and security settings of the ADSTREAM_* environment,
    // the same the adstream children read.
    let admin: AdminClient<DefaultClientContext> = adstream::testing::kafka_client_config_from_env()?
        .set("bootstrap.servers", brokers())
        .create()
        .context("Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    runtime()?.block_on(admin.delete_topics(&[topic], &opts)).context("deleting topic")?;
    Ok(())
}

/// Deletes every topic whose name contains `part` (the repartition and
/// changelog topics a peer created under its application id / group);
/// returns how many.
pub fn delete_topics_containing(part: &str) -> anyhow::Result<usize> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let consumer: BaseConsumer = adstream::testing::kafka_client_config_from_env()?
        .set("bootstrap.servers", brokers())
        .create()
        .context("Kafka client")?;
    let md = consumer.fetch_metadata(None, Duration::from_secs(30)).context("listing topics")?;
    let names: Vec<String> = md.topics().iter().map(|t| t.name().to_string()).filter(|n| n.contains(part)).collect();
    if names.is_empty() {
        return Ok(0);
    }
    let admin: AdminClient<DefaultClientContext> = adstream::testing::kafka_client_config_from_env()?
        .set("bootstrap.servers", brokers())
        .create()
        .context("Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    for r in runtime()?.block_on(admin.delete_topics(&refs, &opts)).context("deleting topics")? {
        if let Err((topic, code)) = r {
            anyhow::bail!("deleting {topic}: {code}");
        }
    }
    Ok(names.len())
}

/// A query's result as TabSeparated text.
pub fn query_tsv(sql: &str) -> anyhow::Result<String> {
    let client = adstream::testing::clickhouse_client_from_env()?.with_url(clickhouse_url());
    runtime()?
        .block_on(async {
            let mut cur = client.query(sql).fetch_bytes("TabSeparated")?;
            let mut out = Vec::new();
            while let Some(chunk) = cur.next().await? {
                out.extend_from_slice(&chunk);
            }
            anyhow::Ok(String::from_utf8_lossy(&out).into_owned())
        })
        .with_context(|| format!("ClickHouse: {sql}"))
}

/// Fills `topic` with `events` seeded events (`generate --rate 0 --seed
/// 42 --jitter 1s`; `partitions` when it creates the topic, else 3), not
/// timed; its logs are `<out>/<name>.{out,err}`.
pub fn preload(
    adstream: &str,
    topic: &str,
    events: u64,
    event_rate: f64,
    partitions: Option<i32>,
    out: &Path,
    name: &str,
) -> anyhow::Result<()> {
    let mut cmd = Command::new(adstream);
    cmd.args(["generate", "--topic", topic, "--rate", "0", "--seed", "42", "--jitter", "1s"])
        .args(["--event-rate", &event_rate.to_string(), "--count", &events.to_string()])
        .env("ADSTREAM_BROKERS", brokers());
    if let Some(p) = partitions {
        cmd.args(["--partitions", &p.to_string()]);
    }
    let log = out.join(name);
    let pre = run_measured(&mut cmd, &log, Duration::from_secs(3600), false)?;
    anyhow::ensure!(pre.exit_code == 0, "preload failed: see {}", log.with_extension("err").display());
    println!("  preloaded in {:.1} s", pre.wall_s);
    Ok(())
}

/// A unique name for this bench process: `prefix_<pid>_<n>`.
pub fn unique(prefix: &str, n: usize) -> String {
    format!("{prefix}_{}_{n}", std::process::id())
}

/// Numbers out of a progress line, commas removed: `"12,000.5"` → 12000.5.
pub fn number_after(text: &str, label: &str) -> Option<f64> {
    let at = text.rfind(label)? + label.len();
    let tail = text[at..].trim_start();
    let num: String = tail.chars().take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.').collect();
    num.replace(',', "").trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_after_labels() {
        let line = "Done: 12,000 events delivered in 1.50 s | Average rate: 8,312.4 events/sec | Failed deliveries: 0";
        assert_eq!(super::number_after(line, "Done:"), Some(12000.0));
        assert_eq!(super::number_after(line, "Average rate:"), Some(8312.4));
        assert_eq!(super::number_after(line, "Failed deliveries:"), Some(0.0));
        assert_eq!(super::number_after(line, "nope"), None);
    }
}
