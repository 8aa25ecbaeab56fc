//! One writer per model: a lease in Redis with a fencing token.
//!
//! The lease is one key, `{prefix}:lease`, holding `"{owner} {token}"` with
//! a PX expiry of `--lease-ttl`; `{prefix}:fence` is a counter, bumped at
//! every acquisition, that gives each holder a token larger than its
//! predecessors'. A learner writes (its snapshot to ClickHouse, its
//! predictions to Redis) only right after it renewed the lease, and the
//! Redis publish checks the lease inside its own script, so once the lease
//! is someone else's nothing of the old holder's lands in Redis, and the
//! old holder stops at its next renewal. A learner that does not hold the
//! lease is a hot standby: it tries again every poll, and takes over at
//! most `--lease-ttl` after the holder died (immediately after a holder's
//! clean exit, which releases it).
//!
//! Redis is then needed to learn: while it is down no one holds a lease,
//! learning pauses (its lag grows, nothing is lost) and resumes when Redis
//! is back.

use std::time::Duration;

use redis::aio::ConnectionManager;

/// Acquires the lease if it is free, renews it if it is ours; returns the
/// token, or nil if another owner holds it.
const ACQUIRE: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  local t = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. t, 'PX', ARGV[2])
  return t
end
local sp = string.find(v, ' ', 1, true)
if sp and string.sub(v, 1, sp - 1) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(string.sub(v, sp + 1))
end
return false
"#;

/// Deletes the lease if it is ours.
const RELEASE: &str = r#"
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// This process's claim on a model's lease.
pub struct Lease {
    con: ConnectionManager,
    key: String,
    fence_key: String,
    owner: String,
    ttl: Duration,
}

impl Lease {
    /// `owner` must be unique to this process (host, pid and start time).
    pub fn new(con: ConnectionManager, prefix: &str, owner: String, ttl: Duration) -> Lease {
        Lease { con, key: format!("{prefix}:lease"), fence_key: format!("{prefix}:fence"), owner, ttl }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes the lease if free or renews ours, for `ttl` from now: the
    /// fencing token while it is ours, `None` while another holds it.
    pub async fn acquire(&self) -> redis::RedisResult<Option<u64>> {
        let ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut con = self.con.clone();
        redis::Script::new(ACQUIRE)
            .key(&self.key)
            .key(&self.fence_key)
            .arg(&self.owner)
            .arg(ms)
            .invoke_async(&mut con)
            .await
    }

    /// Gives the lease up (a clean exit), so a standby takes over at once.
    pub async fn release(&self) -> redis::RedisResult<()> {
        let mut con = self.con.clone();
        redis::Script::new(RELEASE).key(&self.key).arg(&self.owner).invoke_async::<i64>(&mut con).await.map(|_| ())
    }
}

/// A name for this process's lease: host, pid and start time.
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}-{}-{}", if host.is_empty() { "learn" } else { &host }, std::process::id(), nanos)
}
