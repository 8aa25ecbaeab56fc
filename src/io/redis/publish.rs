//! Writing a model version's predictions, and reading one back.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands as _;

use super::{current_key, field, hash_key};

/// One version's predictions: every segment seen lately.
pub struct Publication<'a> {
    pub version: u64,
    /// Start of the newest learned window, Unix ms.
    pub window_ms: i64,
    pub published_ms: i64,
    /// (campaign, format, country, device, predicted clicks per impression).
    pub predictions: &'a [(&'a str, &'a str, &'a str, &'a str, f64)],
}

/// Publishes versions through one [`ConnectionManager`] (it reconnects by
/// itself after an outage; a failed publish is reported and the next
/// window's publish writes everything again).
#[derive(Clone)]
pub struct Publisher {
    con: ConnectionManager,
    model: String,
    ttl: Duration,
}

/// `timeout` (`--redis-timeout`, 2 s by default) bounds a command and a
/// connection attempt alike: a dead Redis, or one that accepts and never
/// answers, costs a publish about twice this (one retry), never a stalled
/// learner.
fn config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
}

impl Publisher {
    /// A publisher that connects on first use (so a learner starts while
    /// Redis is down, and publishes once it is back).
    pub fn new(client: redis::Client, model: &str, ttl: Duration, timeout: Duration) -> anyhow::Result<Publisher> {
        let con = ConnectionManager::new_lazy_with_config(client, config(timeout))?;
        Ok(Publisher { con, model: model.to_string(), ttl })
    }

    /// `PING`.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<String>(&mut con).await.map(|_| ())
    }

    /// Writes the version's hashes and switches `current` to it, in one
    /// MULTI/EXEC.
    pub async fn publish(&self, p: &Publication<'_>) -> redis::RedisResult<()> {
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let mut by_key: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
        for (campaign, format, country, device, ctr) in p.predictions {
            by_key
                .entry(hash_key(&self.model, p.version, campaign, format))
                .or_default()
                .push((field(country, device), format!("{ctr} {} {}", p.window_ms, p.published_ms)));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (key, fields) in &by_key {
            pipe.hset_multiple(key, fields).ignore();
            pipe.expire(key, ttl).ignore();
        }
        pipe.set_ex(current_key(&self.model), p.version, ttl as u64).ignore();
        let mut con = self.con.clone();
        pipe.query_async::<()>(&mut con).await
    }
}

/// A prediction as cached.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub version: u64,
    pub ctr: f64,
    pub window_ms: i64,
    pub published_ms: i64,
}

/// The current version's prediction for a segment: `Ok(None)` if Redis
/// holds no current version or no such segment.
pub async fn lookup(
    client: redis::Client,
    timeout: Duration,
    model: &str,
    segment: (&str, &str, &str, &str),
) -> anyhow::Result<Option<Cached>> {
    let mut con = ConnectionManager::new_with_config(client, config(timeout)).await?;
    let Some(version): Option<u64> = con.get(current_key(model)).await? else { return Ok(None) };
    let (campaign, format, country, device) = segment;
    let value: Option<String> = con.hget(hash_key(model, version, campaign, format), field(country, device)).await?;
    let Some(value) = value else { return Ok(None) };
    parse_value(version, &value).map(Some)
}

fn parse_value(version: u64, value: &str) -> anyhow::Result<Cached> {
    let mut it = value.split(' ');
    let bad = || anyhow::anyhow!("a cached prediction {value:?} is not `ctr window_ms published_ms`");
    let ctr: f64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let window_ms: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let published_ms: i64 = it.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    if !(0.0..=1.0).contains(&ctr) || it.next().is_some() {
        return Err(bad());
    }
    Ok(Cached { version, ctr, window_ms, published_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local listener that accepts every connection and never answers.
    async fn silent_listener() -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn a_redis_that_accepts_and_never_answers_fails_the_publish_and_lookup_within_the_timeout() {
        let (url, task) = silent_listener().await;
        let timeout = Duration::from_millis(300);
        let guard = Duration::from_secs(20);
        let p =
            Publisher::new(crate::io::redis::client(&url).unwrap(), "ctr", Duration::from_secs(60), timeout).unwrap();
        let preds = [("C001", "banner", "US", "iOS", 0.01)];
        let t0 = std::time::Instant::now();
        let pub_ = Publication { version: 1, window_ms: 0, published_ms: 0, predictions: &preds };
        let r = tokio::time::timeout(guard, p.publish(&pub_)).await.expect("the timeout must end the publish");
        assert!(r.is_err(), "nothing answered, yet the publish succeeded");
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "publish took {took:?} with a 300 ms timeout");
        let t0 = std::time::Instant::now();
        let r = tokio::time::timeout(
            guard,
            lookup(crate::io::redis::client(&url).unwrap(), timeout, "ctr", ("C001", "banner", "US", "iOS")),
        )
        .await
        .expect("the timeout must end the lookup");
        assert!(r.is_err());
        assert!(t0.elapsed() < Duration::from_secs(5), "lookup took {:?}", t0.elapsed());
        task.abort();
    }

    #[test]
    fn values_round_trip_and_garbage_is_refused() {
        let c = parse_value(3, "0.0526 1765327570000 1765327581234").unwrap();
        assert_eq!(c, Cached { version: 3, ctr: 0.0526, window_ms: 1765327570000, published_ms: 1765327581234 });
        for bad in ["", "0.1", "x 1 2", "0.1 1 2 3", "1.5 1 2", "0.1 a 2"] {
            assert!(parse_value(1, bad).is_err(), "{bad}");
        }
    }
}
