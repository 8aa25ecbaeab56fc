//! `--config adstream.toml`: settings from a file, below the environment.
//!
//! Every flag already has an `ADSTREAM_*` variable, so the file is applied
//! by filling in the variables that are *not* set, before clap parses: then
//! clap's own rules give flags > environment > file > defaults, with no
//! second source of truth for names, defaults or validation.
//!
//! Keys are flag names (`clickhouse-url` or `clickhouse_url`). Top-level keys
//! apply to every subcommand that has the flag; a table named after a
//! subcommand (`[run]`, `[generate]`, `[demo]`, `[migrate]`, `[report]`,
//! `[learn]`, `[predict]`) applies to that subcommand only and wins over the
//! top level. An unknown key or table is an error, so a
//! typo does not silently fall back to a default.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};

/// Where the settings file is: `--config FILE`/`--config=FILE` on the
/// command line, else `ADSTREAM_CONFIG`.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os("ADSTREAM_CONFIG").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The subcommand named on the command line (the first word that is not a
/// flag or the value of a global flag).
fn subcommand(args: &[OsString], names: &[String]) -> Option<String> {
    args.iter().skip(1).filter_map(|a| a.to_str()).find(|a| names.iter().any(|n| n == a)).map(str::to_string)
}

/// Per subcommand: setting key → `ADSTREAM_*` variable, from the clap
/// definitions. A key is the flag's name or the variable's name without
/// `ADSTREAM_`, with `-` or `_` (`kafka-option`, `kafka_options`).
fn known_keys(cmd: &clap::Command) -> BTreeMap<String, BTreeMap<String, String>> {
    cmd.get_subcommands()
        .map(|sub| {
            let mut keys = BTreeMap::new();
            for a in sub.get_arguments().chain(cmd.get_arguments()) {
                let Some(env) = a.get_env().and_then(|e| e.to_str()) else { continue };
                if env == "ADSTREAM_CONFIG" {
                    continue;
                }
                if let Some(long) = a.get_long() {
                    keys.insert(norm(long), env.to_string());
                }
                if let Some(rest) = env.strip_prefix("ADSTREAM_") {
                    keys.insert(norm(rest), env.to_string());
                }
            }
            (sub.get_name().to_string(), keys)
        })
        .collect()
}

fn norm(key: &str) -> String {
    key.replace('-', "_").to_ascii_lowercase()
}

fn value_text(path: &Path, key: &str, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            // The only list is `kafka-option`, whose values may hold commas.
            let items = a.iter().map(|x| value_text(path, key, x)).collect::<anyhow::Result<Vec<_>>>()?;
            items.join(&crate::cli::KAFKA_OPTIONS_SEPARATOR.to_string())
        }
        toml::Value::Table(_) => bail!("{}: `{key}` is a table; expected a value", path.display()),
    })
}

/// The variables the file sets for `sub` (the file's values, not yet
/// merged with the environment).
pub fn settings(
    path: &Path,
    text: &str,
    cmd: &clap::Command,
    sub: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        anyhow!("{}: not valid TOML: {}", path.display(), e.message().replace('\n', " "))
    })?;
    let known = known_keys(cmd);
    let mut top = BTreeMap::new();
    let mut section = BTreeMap::new();
    for (key, value) in &table {
        if let toml::Value::Table(t) = value {
            let Some(keys) = known.get(key.as_str()) else {
                bail!(
                    "{}: unknown table [{key}]; tables are subcommands: {}",
                    path.display(),
                    known.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            };
            for (k, v) in t {
                let Some(env) = keys.get(&norm(k)) else {
                    bail!("{}: [{key}] {k}: `adstream {key}` has no flag --{}", path.display(), k.replace('_', "-"));
                };
                if sub == Some(key.as_str()) {
                    section.insert(env.clone(), value_text(path, k, v)?);
                }
            }
        } else {
            let Some(env) = known.values().find_map(|keys| keys.get(&norm(key))) else {
                bail!(
                    "{}: unknown setting `{key}` (keys are flag names, see adstream <command> --help)",
                    path.display()
                );
            };
            top.insert(env.clone(), value_text(path, key, value)?);
        }
    }
    top.extend(section);
    Ok(top.into_iter().collect())
}

/// Loads the settings file, if any, into the environment variables that are
/// not already set. Call before clap parses and before any thread starts.
pub fn apply(args: &[OsString], cmd: &clap::Command) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = config_path(args) else { return Ok(None) };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--config {}: cannot read it (ADSTREAM_CONFIG)", path.display()))?;
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let sub = subcommand(args, &names);
    for (env, value) in settings(&path, &text, cmd, sub.as_deref())? {
        if std::env::var_os(&env).is_none() {
            // Single-threaded at this point: main calls this first thing.
            std::env::set_var(&env, value);
        }
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn cmd() -> clap::Command {
        crate::cli::Cli::command()
    }

    #[test]
    fn sections_override_the_top_level_for_their_subcommand_only() {
        let text = "brokers = \"k1:9092\"\nwindow = \"5s\"\nkafka-option = [\"a=1\", \"debug=consumer,cgrp\"]\n\
                    [run]\nwindow = \"30s\"\ndrain = true\n[generate]\nrate = 50\n";
        let p = Path::new("a.toml");
        let run: BTreeMap<_, _> = settings(p, text, &cmd(), Some("run")).unwrap().into_iter().collect();
        assert_eq!(run["ADSTREAM_BROKERS"], "k1:9092");
        assert_eq!(run["ADSTREAM_WINDOW"], "30s");
        assert_eq!(run["ADSTREAM_DRAIN"], "true");
        assert_eq!(run["ADSTREAM_KAFKA_OPTIONS"], "a=1\ndebug=consumer,cgrp");
        assert!(!run.contains_key("ADSTREAM_RATE"));
        let demo: BTreeMap<_, _> = settings(p, text, &cmd(), Some("demo")).unwrap().into_iter().collect();
        assert_eq!(demo["ADSTREAM_WINDOW"], "5s");
    }

    #[test]
    fn traffic_flags_are_settings_of_the_generating_commands() {
        let text = "traffic = \"segmented\"\n[generate]\ncampaigns = 1000\nprint-truth = true\n";
        let p = Path::new("a.toml");
        for sub in ["generate", "demo", "run"] {
            let set: BTreeMap<_, _> = settings(p, text, &cmd(), Some(sub)).unwrap().into_iter().collect();
            assert_eq!(set["ADSTREAM_TRAFFIC"], "segmented", "{sub}");
            assert_eq!(set.contains_key("ADSTREAM_CAMPAIGNS"), sub == "generate", "{sub}");
        }
        let e = settings(p, "[demo]\nprint-truth = true\n", &cmd(), Some("demo")).unwrap_err().to_string();
        assert!(e.contains("`adstream demo` has no flag --print-truth"), "{e}");
    }

    #[test]
    fn unknown_keys_and_tables_are_errors() {
        let p = Path::new("a.toml");
        for (text, want) in [
            ("brokerz = \"x\"", "unknown setting `brokerz`"),
            ("[runn]\nwindow = \"5s\"", "unknown table [runn]"),
            ("[generate]\ngroup = \"g\"", "`adstream generate` has no flag --group"),
            ("window = ", "not valid TOML"),
        ] {
            let e = settings(p, text, &cmd(), Some("run")).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn the_shipped_example_is_valid_for_every_subcommand() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/adstream.example.toml"));
        let text = std::fs::read_to_string(p).unwrap();
        for sub in cmd().get_subcommands().map(|s| s.get_name().to_string()) {
            let set = settings(p, &text, &cmd(), Some(&sub)).unwrap();
            assert!(set.iter().any(|(k, v)| k == "ADSTREAM_BROKERS" && v == "127.0.0.1:9092"), "{sub}: {set:?}");
        }
    }

    #[test]
    fn config_path_from_either_spelling() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(config_path(&a(&["adstream", "run", "--config", "x.toml"])), Some(PathBuf::from("x.toml")));
        assert_eq!(config_path(&a(&["adstream", "--config=y.toml", "run"])), Some(PathBuf::from("y.toml")));
    }
}
