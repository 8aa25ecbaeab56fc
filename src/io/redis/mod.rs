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
pub mod served;

pub use publish::{lookup, Publication, Publisher, NOT_LEADER};

/// A client for a `redis://` or `rediss://` URL, checked: a one-line
/// error naming the flag otherwise. With `--redis-user`/`--redis-password` (overriding the URL's)
/// and, for `rediss://`, the TLS files of `--redis-ca-file` etc. (read now;
/// the system's OpenSSL, see [`crate::io::tls`]). TLS files with a
/// `redis://` URL are refused: they would be ignored silently.
pub fn client_with(url: &str, auth: &crate::config::RedisAuth) -> anyhow::Result<redis::Client> {
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
    let mut info: redis::ConnectionInfo =
        redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| bad(e.to_string().replace('\n', " ")))?;
    let mut redis_settings = info.redis_settings().clone();
    if let Some(user) = &auth.user {
        redis_settings = redis_settings.set_username(user);
    }
    if let Some(p) = &auth.password {
        redis_settings = redis_settings.set_password(p.expose());
    }
    info = info.set_redis_settings(redis_settings);
    let tls = parsed.scheme() == "rediss";
    if auth.tls.is_empty() {
        return redis::Client::open(info).map_err(|e| bad(e.to_string().replace('\n', " ")));
    }
    if !tls {
        anyhow::bail!(
            "--redis-ca-file/--redis-cert-file/--redis-key-file need a rediss:// --redis-url (ADSTREAM_REDIS_URL), not {shown}"
        );
    }
    let pem = crate::io::tls::read(&auth.tls, "--redis", "ADSTREAM_REDIS")?;
    // Checked here too, so a file that is not PEM is one line naming it
    // now rather than a handshake error at the first publish.
    crate::io::tls::connector(&auth.tls, "--redis", "ADSTREAM_REDIS")?;
    let certs = redis::TlsCertificates {
        client_tls: pem.identity.map(|(client_cert, client_key)| redis::ClientTlsConfig { client_cert, client_key }),
        root_cert: pem.ca,
    };
    redis::Client::build_with_tls(info, certs).map_err(|e| bad(e.to_string().replace('\n', " ")))
}

/// What to fix for a Redis error, and whether it is a misconfiguration
/// (permanent: wrong password or user, untrusted certificate, TLS against
/// a plaintext port) rather than an outage. `tls`: the URL is `rediss://`.
/// `msg`: the error's text (redis-rs names the kind, e.g. `AuthenticationFailed`).
pub fn hint(msg: &str, tls: bool) -> (&'static str, bool) {
    let m = msg.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    if has("authenticationfailed") || has("wrongpass") || has("noauth") || has("noperm") {
        (
            "set --redis-user and the password (ADSTREAM_REDIS_USER, ADSTREAM_REDIS_PASSWORD or --redis-password-file); \
             the ACL user needs ~adstream:* and the commands of @write @read",
            true,
        )
    } else if has("certificate verify failed") || has("self-signed certificate") || has("unable to get local issuer") {
        ("set --redis-ca-file (ADSTREAM_REDIS_CA_FILE): the CA that signed Redis's certificate", true)
    } else if has("wrong version number") || has("packet length too long") {
        ("the port does not speak TLS: use redis:// in --redis-url (ADSTREAM_REDIS_URL), or Redis's tls-port", true)
    } else if tls && (has("connection reset") || has("alert") || has("certificate required")) {
        (
            "Redis closed the TLS connection: does it require a client certificate (tls-auth-clients)? \
             set --redis-cert-file and --redis-key-file (ADSTREAM_REDIS_CERT_FILE, ADSTREAM_REDIS_KEY_FILE)",
            false,
        )
    } else if tls && has("timed out") {
        ("no TLS answer: is the port plaintext? use redis:// in --redis-url (ADSTREAM_REDIS_URL)", false)
    } else if !tls && (has("connection reset") || has("closed") || has("unexpected end")) {
        ("Redis closed the connection: is it a TLS port? use rediss:// in --redis-url (ADSTREAM_REDIS_URL)", false)
    } else {
        ("set --redis-url (ADSTREAM_REDIS_URL)", false)
    }
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

    fn client(url: &str) -> anyhow::Result<redis::Client> {
        client_with(url, &crate::config::RedisAuth::default())
    }

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
