//! `adstream predict`: the prediction `adstream learn` cached in Redis for
//! one segment, printed as the dashboard shows CTR; exit codes say when
//! there is none or it is older than `--max-age` (see `cli::exit`).

use std::process::ExitCode;

use crate::config::PredictConfig;
use crate::io::redis;

/// Redis holds no prediction for the segment.
pub const NO_PREDICTION: u8 = 3;
/// The cached prediction is older than `--max-age`.
pub const STALE: u8 = 4;

pub async fn predict(config: PredictConfig) -> anyhow::Result<ExitCode> {
    let cfg = &config;
    let client = redis::client_with(cfg.redis_url.expose(), &cfg.redis_auth)?;
    let segment = (cfg.campaign.as_str(), cfg.ad_format.as_str(), cfg.country.as_str(), cfg.device.as_str());
    let tls = cfg.redis_url.expose().trim_start().to_ascii_lowercase().starts_with("rediss:");
    let cached = redis::lookup(client, cfg.redis_timeout, &cfg.redis_prefix, segment).await.map_err(|e| {
        anyhow::anyhow!(
            "Redis at {}: {}: {}",
            crate::config::secret::redact_url(cfg.redis_url.expose()),
            e.to_string().replace('\n', " "),
            redis::hint(&format!("{e:#}"), tls).0
        )
    })?;
    let name = format!("{} | {} | {} | {}", cfg.campaign, cfg.ad_format, cfg.country, cfg.device);
    let Some(c) = cached else {
        eprintln!(
            "no prediction cached for {name} (model {:?}: `adstream learn` has not published it, or it expired)",
            cfg.model
        );
        return Ok(ExitCode::from(NO_PREDICTION));
    };
    let age_ms = chrono::Utc::now().timestamp_millis().saturating_sub(c.published_ms).max(0);
    let age = std::time::Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
    let window = crate::engine::time::format_seconds(c.window_ms.saturating_mul(1000));
    if age > cfg.max_age {
        eprintln!(
            "the cached prediction for {name} is {:.0} s old, more than --max-age {} (is `adstream learn` running?)",
            age.as_secs_f64(),
            humantime::format_duration(cfg.max_age)
        );
        return Ok(ExitCode::from(STALE));
    }
    println!(
        "{name} | CTR {:.2}% | model v{} | learned through {window} | age {:.1} s",
        c.ctr * 100.0,
        c.version,
        age.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
