//! The ClickHouse schema: `sql/*.sql`, embedded in the binary so `migrate`
//! works from anywhere, applied in file order. Every statement is
//! idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE VIEW`).

use anyhow::bail;

/// The files of `sql/`, in order.
const FILES: &[(&str, &str)] = &[
    ("001_database.sql", include_str!("../../../sql/001_database.sql")),
    ("002_window_parts.sql", include_str!("../../../sql/002_window_parts.sql")),
    ("003_metrics_views.sql", include_str!("../../../sql/003_metrics_views.sql")),
    ("004_late_and_rejected.sql", include_str!("../../../sql/004_late_and_rejected.sql")),
    ("005_dashboard_views.sql", include_str!("../../../sql/005_dashboard_views.sql")),
    ("006_learn.sql", include_str!("../../../sql/006_learn.sql")),
];

/// Identifiers reach SQL only through this check: letters, digits and `_`,
/// not starting with a digit, at most 64 bytes.
pub fn validate_identifier(kind: &str, s: &str) -> anyhow::Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if !ok {
        bail!("{kind} {s:?} is not a plain identifier (letters, digits, _; not starting with a digit)");
    }
    Ok(())
}

/// The statements to run for `database`, each with its file name.
pub fn statements(database: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    validate_identifier("database", database)?;
    let mut out = Vec::new();
    for (file, text) in FILES {
        let body: String = text.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
        for stmt in body.split(';') {
            let stmt = stmt.trim();
            if !stmt.is_empty() {
                out.push((*file, stmt.replace("{database}", database)));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        for ok in ["adtech", "a_1", "_x", "ADTECH"] {
            assert!(validate_identifier("database", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1db", "ad-tech", "ad tech", "x;DROP TABLE y", "a`b", "ü", &"a".repeat(65)] {
            assert!(validate_identifier("database", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_are_substituted_and_split() {
        let s = statements("adx").unwrap();
        assert!(s.len() >= 7);
        assert!(s.iter().all(|(_, q)| !q.contains("{database}") && !q.contains(';')));
        assert!(s[0].1.starts_with("CREATE DATABASE IF NOT EXISTS adx"));
        assert!(s.iter().any(|(_, q)| q.starts_with("CREATE OR REPLACE VIEW adx.ad_metrics_10s")));
        assert!(statements("bad name").is_err());
    }

    /// Everything that grows with time has a retention rule: every table
    /// has a TTL, or is in this list with the rule that bounds it instead.
    #[test]
    fn every_table_has_a_retention_rule() {
        let bounded_otherwise = [
            ("ad_window_parts", "PARTITION BY toYYYYMM"), // the product: drop old months (docs/operations.md)
            ("ad_ctr_model", "ORDER BY (model, version)"), // the learner keeps --keep-snapshots per model
            ("ad_source_partitions", "ORDER BY"),         // a row per topic partition
        ];
        let mut tables = 0;
        for (_, q) in statements("adx").unwrap() {
            let Some(rest) = q.strip_prefix("CREATE TABLE IF NOT EXISTS adx.") else { continue };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            tables += 1;
            match bounded_otherwise.iter().find(|(n, _)| *n == name) {
                Some((_, rule)) => assert!(q.contains(rule), "{name}: {rule}"),
                None => assert!(q.contains("\nTTL "), "{name} has no TTL and no other retention rule"),
            }
        }
        assert!(tables >= 8, "tables found: {tables}");
    }

    #[test]
    fn every_sql_file_is_embedded() {
        let mut on_disk: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/sql"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, embedded);
    }
}
