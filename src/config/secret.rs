//! Secrets as a type that cannot leak by accident ([`Sensitive`], as
//! Vector's `SensitiveString`): `Debug` and `Display` print `**REDACTED**`,
//! and the only way to the value is [`Sensitive::expose`], at the one place
//! that hands it to a client library. Passwords, URLs that may carry one in
//! their userinfo, and librdkafka option values are held in it, so a
//! configuration struct derives `Debug` and still prints no secret. Plus
//! the helpers that keep credentials out of log lines.

use std::path::Path;

use anyhow::Context as _;

/// A value never printed: `Debug` and `Display` show [`REDACTED`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T>(T);

/// What a [`Sensitive`] value prints as.
pub const REDACTED: &str = "**REDACTED**";

/// A password, a URL that may carry one, an option value: text never
/// printed.
pub type Secret = Sensitive<String>;

impl<T> Sensitive<T> {
    /// The value, for the client library that needs it. Never log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> std::fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Sensitive(s.into())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads a secret from a file (Docker/Kubernetes secret mounts); one
    /// trailing newline is not part of it. The error names the file, never
    /// its content.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let mut s = std::fs::read_to_string(path).with_context(|| format!("reading secret file {}", path.display()))?;
        if s.ends_with('\n') {
            s.pop();
            if s.ends_with('\r') {
                s.pop();
            }
        }
        Ok(Sensitive(s))
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Sensitive(s.to_string()))
    }
}

/// The secret from `value` or from the file at `file`; setting both is an
/// error rather than a silent preference, and an empty value counts as unset.
pub fn resolve(value: Option<&Secret>, file: Option<&Path>, what: &str) -> anyhow::Result<Option<Secret>> {
    let value = value.filter(|s| !s.is_empty());
    match (value, file) {
        (Some(_), Some(f)) => {
            anyhow::bail!("{what}: both a value and a file ({}) are set; use one", f.display())
        }
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(f)) => Ok(Some(Secret::from_file(f)?)),
        (None, None) => Ok(None),
    }
}

/// `url` with the password of its userinfo part (`scheme://user:pass@host`)
/// replaced, for log lines and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_string() };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{}{user}:<redacted>{}", &url[..scheme_end], &rest[at..])
}

/// A `key=value` librdkafka option for display: the key only, since any
/// value (`sasl.password`, `ssl.key.password`, `sasl.oauthbearer.config`…)
/// may be a secret.
pub fn redact_option(opt: &str) -> String {
    match opt.split_once('=') {
        Some((k, _)) => format!("{}=<redacted>", k.trim()),
        None => "<redacted>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let s: Secret = "hunter2".parse().unwrap();
        assert_eq!(format!("{s:?}"), "**REDACTED**");
        assert_eq!(format!("{s}"), "**REDACTED**");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(**REDACTED**)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("http://127.0.0.1:8123"), "http://127.0.0.1:8123");
        assert_eq!(redact_url("https://u:p%40ss@ch.example:8443/x?a=b"), "https://u:<redacted>@ch.example:8443/x?a=b");
        assert_eq!(redact_url("https://token@ch.example"), "https://token:<redacted>@ch.example");
        assert_eq!(redact_url("http://host/path@x"), "http://host/path@x");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    #[test]
    fn options_keep_only_their_keys() {
        assert_eq!(redact_option("sasl.password=s3cr3t"), "sasl.password=<redacted>");
        assert_eq!(redact_option("garbage"), "<redacted>");
    }

    #[test]
    fn value_or_file_but_not_both() {
        let dir = std::env::temp_dir().join(format!("adstream-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "from-file\n").unwrap();
        let v = Secret::new("from-env");
        assert_eq!(resolve(Some(&v), None, "x").unwrap(), Some(v.clone()));
        assert_eq!(resolve(None, Some(&f), "x").unwrap(), Some(Secret::new("from-file")));
        assert_eq!(resolve(Some(&Secret::new("")), Some(&f), "x").unwrap(), Some(Secret::new("from-file")));
        assert_eq!(resolve(None, None, "x").unwrap(), None);
        let both = resolve(Some(&v), Some(&f), "ClickHouse password").unwrap_err().to_string();
        assert!(both.contains("both") && !both.contains("from-env") && !both.contains("from-file"), "{both}");
        let missing = resolve(None, Some(&dir.join("nope")), "x").unwrap_err();
        assert!(format!("{missing:#}").contains("nope"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
