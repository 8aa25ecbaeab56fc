//! TLS for the HTTP (ClickHouse) and Redis connections, through the
//! system's OpenSSL (`native-tls`), the same library librdkafka is built
//! with (rdkafka's `ssl` feature): one TLS implementation, one trust store
//! (`/etc/ssl/certs`), one source of security updates (the OS packages),
//! and no second crypto library to compile. Certificates and keys are PEM
//! files (a key in PKCS#8, as `openssl genpkey` and `openssl req -newkey`
//! write it); a custom CA is added to the system's roots, and hostname
//! verification stays on.

use anyhow::Context as _;

use crate::config::TlsFiles;

/// The PEM bytes of one connection's TLS files, read now: an unreadable
/// file is one line naming `{flag}-…-file` and its `{env}_…_FILE`.
pub struct Pem {
    pub ca: Option<Vec<u8>>,
    /// Client certificate and key, both or neither.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

pub fn read(tls: &TlsFiles, flag: &str, env: &str) -> anyhow::Result<Pem> {
    let read = |what: &str, p: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        let Some(p) = p else { return Ok(None) };
        std::fs::read(p)
            .with_context(|| format!("{flag}-{what}-file {} ({env}_{}_FILE)", p.display(), what.to_ascii_uppercase()))
            .map(Some)
    };
    let ca = read("ca", &tls.ca)?;
    let identity = match (read("cert", &tls.cert)?, read("key", &tls.key)?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("{flag}-cert-file and {flag}-key-file go together: set both or neither"),
    };
    Ok(Pem { ca, identity })
}

/// A TLS connector for `tls`; errors name the flag to fix.
pub fn connector(tls: &TlsFiles, flag: &str, env: &str) -> anyhow::Result<native_tls::TlsConnector> {
    let pem = read(tls, flag, env)?;
    let mut b = native_tls::TlsConnector::builder();
    if let Some(ca) = &pem.ca {
        let cert = native_tls::Certificate::from_pem(ca)
            .map_err(|e| anyhow::anyhow!("{flag}-ca-file: not a PEM certificate ({e}) ({env}_CA_FILE)"))?;
        b.add_root_certificate(cert);
    }
    if let Some((cert, key)) = &pem.identity {
        let id = native_tls::Identity::from_pkcs8(cert, key).map_err(|e| {
            anyhow::anyhow!(
                "{flag}-cert-file/{flag}-key-file: not a PEM certificate and PKCS#8 key ({e}) ({env}_CERT_FILE, {env}_KEY_FILE)"
            )
        })?;
        b.identity(id);
    }
    b.build().map_err(|e| anyhow::anyhow!("{flag}-ca-file/-cert-file/-key-file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_one_line_naming_the_flag() {
        let dir = std::env::temp_dir().join(format!("adstream-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let files = TlsFiles { ca: Some(junk.clone()), ..Default::default() };
        let e = format!("{:#}", connector(&files, "--clickhouse", "ADSTREAM_CLICKHOUSE").unwrap_err());
        assert!(e.contains("--clickhouse-ca-file") && !e.contains('\n'), "{e}");
        let files = TlsFiles { cert: Some(junk.clone()), key: Some(junk), ca: None };
        let e = format!("{:#}", connector(&files, "--redis", "ADSTREAM_REDIS").unwrap_err());
        assert!(e.contains("--redis-cert-file") && !e.contains('\n'), "{e}");
        let files = TlsFiles { ca: Some(dir.join("missing.pem")), ..Default::default() };
        let e = format!("{:#}", connector(&files, "--redis", "ADSTREAM_REDIS").unwrap_err());
        assert!(e.contains("--redis-ca-file") && e.contains("missing.pem"), "{e}");
        assert!(connector(&TlsFiles::default(), "--x", "X").is_ok(), "no files: the system's roots");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
