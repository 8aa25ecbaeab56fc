//! Redis: the cache the ad server reads the predicted CTR from (`adstream
//! learn` writes it, `adstream predict` reads it). Redis is never the
//! system of record: the model lives in ClickHouse (`ad_ctr_model`), and
//! every learned window republishes every segment, so a flushed or
//! restarted Redis is whole again after the next window.
//!
//! # Keys
//! Under the prefix `P` (`--redis-prefix`; by default `adstream:{database}:
//! {model}`, so two databases or two models never share a key) at version
//! `V`:
//! - `P:v{V}:{campaign}:{format}`: one hash per campaign × format,
//!   fields `{country}|{device}`, values `{ctr} {window_ms} {published_ms}`
//!   (the predicted clicks per impression, the start of the window the
//!   model had learned through, and when it was published, both Unix ms);
//! - `P:current`: the version readers use; it never moves backwards;
//! - `P:versions` (the published versions, newest first) and `P:keys:v{V}`
//!   (a version's hashes): once `current` moves on, every version but the
//!   newest two is deleted (the previous one stays for readers mid-read);
//! - `P:lease` and `P:fence`: the writer's lease ([`lease`]).
//!
//! A version's hashes and the switch of `current` to it are written by one
//! script (atomic in Redis), after it checked that the writer holds the
//! lease, every key with the TTL (`--redis-ttl`), so a reader sees either
//! the previous version or the whole new one, and a learner that stops
//! leaves nothing behind for longer than the TTL.

pub mod lease;
mod publish;

pub use publish::{lookup, Publication, Publisher, NOT_LEADER};

/// A `redis://` or `rediss://` URL, checked: a one-line error naming the
/// flag otherwise.
pub fn client(url: &str) -> anyhow::Result<redis::Client> {
    let shown = crate::config::secret::redact_url(url);
    let bad = |why: String| {
        anyhow::anyhow!("--redis-url {shown:?}: {why}; expected redis://HOST:PORT[/DB] (ADSTREAM_REDIS_URL)")
    };
    if url.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(bad(format!("scheme {:?} is not redis or rediss", parsed.scheme())));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    redis::Client::open(url).map_err(|e| bad(e.to_string().replace('\n', " ")))
}

/// The default prefix of a model's keys: its database and its name.
pub fn default_prefix(database: &str, model: &str) -> String {
    format!("adstream:{database}:{model}")
}

/// The hash of one campaign × format at a version.
pub fn hash_key(prefix: &str, version: u64, campaign: &str, format: &str) -> String {
    format!("{prefix}:v{version}:{campaign}:{format}")
}

/// The pointer to the current version.
pub fn current_key(prefix: &str) -> String {
    format!("{prefix}:current")
}

/// The field of one country × device.
pub fn field(country: &str, device: &str) -> String {
    format!("{country}|{device}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_in_one_line() {
        assert!(client("redis://127.0.0.1:6379").is_ok());
        assert!(client("redis://127.0.0.1:6379/2").is_ok());
        for bad in ["", "  ", "127.0.0.1:6379", "http://127.0.0.1:6379", "redis://", "redis://:6379"] {
            let e = client(bad).unwrap_err().to_string();
            assert!(e.starts_with("--redis-url") && !e.contains('\n'), "{bad:?}: {e}");
        }
        let e = client("http://u:hunter2@h:1/").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn keys() {
        let p = default_prefix("adtech", "ctr");
        assert_eq!(hash_key(&p, 7, "C001", "banner"), "adstream:adtech:ctr:v7:C001:banner");
        assert_eq!(current_key(&p), "adstream:adtech:ctr:current");
        assert_eq!(field("US", "iOS"), "US|iOS");
    }
}
