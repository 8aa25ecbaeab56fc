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
    prefix: String,
    ttl: Duration,
}

/// Why a publish was refused by the script (not a Redis failure).
pub const NOT_LEADER: &str = "NOTLEADER";

/// Checks the lease, writes the version's hashes, moves `current` (never
/// backwards) and deletes every version but the newest two.
/// KEYS: lease, current, versions. ARGV: owner, version, ttl (s), prefix,
/// then (key, field, value) triples.
const PUBLISH: &str = r#"
local v = redis.call('GET', KEYS[1])
if (not v) or string.sub(v, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
  return redis.error_reply('NOTLEADER this learner does not hold the lease')
end
local ver = tonumber(ARGV[2])
local cur = tonumber(redis.call('GET', KEYS[2]) or '')
if cur and cur > ver then
  return redis.error_reply('NOTLEADER current is at version ' .. cur .. ', newer than ' .. ver)
end
local ttl = tonumber(ARGV[3])
local set = ARGV[4] .. ':keys:v' .. ARGV[2]
local seen = {}
for i = 5, #ARGV, 3 do
  redis.call('HSET', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    redis.call('EXPIRE', ARGV[i], ttl)
    redis.call('SADD', set, ARGV[i])
  end
end
redis.call('EXPIRE', set, ttl)
redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl)
if cur ~= ver then
  redis.call('LPUSH', KEYS[3], ARGV[2])
end
redis.call('EXPIRE', KEYS[3], ttl)
while redis.call('LLEN', KEYS[3]) > 2 do
  local old = redis.call('RPOP', KEYS[3])
  local oldset = ARGV[4] .. ':keys:v' .. old
  local keys = redis.call('SMEMBERS', oldset)
  for i = 1, #keys, 1000 do
    redis.call('DEL', unpack(keys, i, math.min(i + 999, #keys)))
  end
  redis.call('DEL', oldset)
end
return 1
"#;

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
    pub fn new(client: redis::Client, prefix: &str, ttl: Duration, timeout: Duration) -> anyhow::Result<Publisher> {
        let con = ConnectionManager::new_lazy_with_config(client, config(timeout))?;
        Ok(Publisher { con, prefix: prefix.to_string(), ttl })
    }

    /// Redis's `used_memory` (INFO memory), bytes.
    pub async fn used_memory(&self) -> redis::RedisResult<Option<u64>> {
        let mut con = self.con.clone();
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut con).await?;
        Ok(info.lines().find_map(|l| l.strip_prefix("used_memory:")).and_then(|v| v.trim().parse().ok()))
    }

    /// This publisher's lease on its prefix (see [`super::lease`]).
    pub fn lease(&self, owner: String, ttl: Duration) -> super::lease::Lease {
        super::lease::Lease::new(self.con.clone(), &self.prefix, owner, ttl)
    }

    /// `PING`.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        redis::cmd("PING").query_async::<String>(&mut con).await.map(|_| ())
    }

    /// Writes the version's hashes and switches `current` to it, in one
    /// script, if `owner` holds the lease and `current` is not newer (an
    /// error starting with [`NOT_LEADER`] otherwise); then deletes the
    /// versions older than the previous one.
    pub async fn publish(&self, owner: &str, p: &Publication<'_>) -> redis::RedisResult<()> {
        let ttl = i64::try_from(self.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let script = redis::Script::new(PUBLISH);
        let mut inv = script.prepare_invoke();
        inv.key(format!("{}:lease", self.prefix))
            .key(current_key(&self.prefix))
            .key(format!("{}:versions", self.prefix))
            .arg(owner)
            .arg(p.version)
            .arg(ttl)
            .arg(&self.prefix);
        for (campaign, format, country, device, ctr) in p.predictions {
            inv.arg(hash_key(&self.prefix, p.version, campaign, format))
                .arg(field(country, device))
                .arg(format!("{ctr} {} {}", p.window_ms, p.published_ms));
        }
        let mut con = self.con.clone();
        inv.invoke_async::<i64>(&mut con).await.map(|_| ())
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
    prefix: &str,
    segment: (&str, &str, &str, &str),
) -> anyhow::Result<Option<Cached>> {
    let mut con = ConnectionManager::new_with_config(client, config(timeout)).await?;
    let Some(version): Option<u64> = con.get(current_key(prefix)).await? else { return Ok(None) };
    let (campaign, format, country, device) = segment;
    let value: Option<String> = con.hget(hash_key(prefix, version, campaign, format), field(country, device)).await?;
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

    #[tokio::test]
    async fn a_redis_that_accepts_and_never_answers_fails_the_publish_and_lookup_within_the_timeout() {
        let (url, task) = crate::io::silent::silent_listener("redis").await;
        let timeout = Duration::from_millis(300);
        let guard = Duration::from_secs(20);
        let p = Publisher::new(
            crate::io::redis::client_with(&url, &Default::default()).unwrap(),
            "ctr",
            Duration::from_secs(60),
            timeout,
        )
        .unwrap();
        let preds = [("C001", "banner", "US", "iOS", 0.01)];
        let t0 = std::time::Instant::now();
        let pub_ = Publication { version: 1, window_ms: 0, published_ms: 0, predictions: &preds };
        let r = tokio::time::timeout(guard, p.publish("owner", &pub_)).await.expect("the timeout must end the publish");
        assert!(r.is_err(), "nothing answered, yet the publish succeeded");
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(5), "publish took {took:?} with a 300 ms timeout");
        let t0 = std::time::Instant::now();
        let r = tokio::time::timeout(
            guard,
            lookup(
                crate::io::redis::client_with(&url, &Default::default()).unwrap(),
                timeout,
                "ctr",
                ("C001", "banner", "US", "iOS"),
            ),
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
