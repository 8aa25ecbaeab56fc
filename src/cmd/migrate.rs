//! `adstream migrate`: the schema (`sql/`, embedded) applied to ClickHouse
//! idempotently, on one server or `--cluster`; `--print` shows the
//! statements instead.

use std::process::ExitCode;

use crate::config::MigrateConfig;
use crate::io::clickhouse::{self, schema_cluster};

pub async fn migrate(config: MigrateConfig) -> anyhow::Result<ExitCode> {
    let (ch, cluster) = (&config.clickhouse, config.cluster.as_deref());
    if config.print {
        let script = schema_cluster::script(&ch.database, cluster)?;
        // A closed pipe (| head) is not an error.
        let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), script.as_bytes());
        return Ok(ExitCode::SUCCESS);
    }
    schema_cluster::migrate(&clickhouse::client(ch)?, ch, cluster)
        .await
        .map_err(|e| clickhouse::retry::schema_error(e, ch))?;
    let on = cluster.map(|c| format!(" on cluster {c}")).unwrap_or_default();
    println!("schema applied{on}: database {} at {}", ch.database, ch.display_url());
    Ok(ExitCode::SUCCESS)
}
