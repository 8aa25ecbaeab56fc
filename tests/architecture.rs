//! The layout's rules, checked from the source text (run it to see the
//! module graph: `cargo test --test architecture -- --nocapture`):
//! - the engine (`src/engine/`) imports no I/O crate and nothing of the
//!   I/O, observability, pipeline or command-line layers;
//! - nor does the CTR model (`src/learn/`), which also leaves the synthetic
//!   traffic (`crate::generator`) to its tests;
//! - the commands (`src/cmd/`, one file per subcommand) sit between the
//!   command line and everything else: they may import the pipeline, I/O,
//!   observability, configuration and the engine, but not `cli`, and
//!   nothing below them imports them;
//! - the pipeline's stages (`src/pipeline/`) and the commands leave every
//!   librdkafka call to `io::kafka`;
//! - no import circles between modules (files), tests excluded;
//! - the README's architecture sketch names every module folder there is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates and layers the engine must not reach.
const ENGINE_FORBIDDEN: &[&str] = &[
    "tokio",
    "rdkafka",
    "hyper",
    "hyper_util",
    "clickhouse",
    "clap",
    "redis",
    "metrics",
    "metrics_exporter_prometheus",
    "std::net",
    "std::fs",
    "crate::io",
    "crate::obs",
    "crate::pipeline",
    "crate::cli",
    "crate::config",
    "crate::shutdown",
    "crate::cmd",
    // No clock: the time comes in as data (`engine::Now`, from `crate::clock`).
    "crate::clock",
    "Instant::now",
    "std::time::Instant::now",
    "SystemTime",
    "std::time::SystemTime",
    "Utc::now",
    "chrono::Utc::now",
    "Local::now",
    "chrono::Local::now",
];

/// The layers below the commands: none of them may import `crate::cmd`.
const BELOW_CMD: &[&str] = &["engine", "learn", "generator", "config", "io", "obs", "pipeline", "shutdown", "clock"];

/// What the CTR model must not reach: the engine's list, and the synthetic
/// traffic (only its tests learn from the generator).
fn learn_forbidden() -> Vec<&'static str> {
    ENGINE_FORBIDDEN.iter().copied().chain(["crate::generator"]).collect()
}

struct Module {
    file: PathBuf,
    /// The code without its `#[cfg(test)]` module(s) and comments.
    code: String,
    /// Child modules declared with `mod x;`.
    children: BTreeSet<String>,
    /// `pub use child::{A, B}`: name → child module path.
    reexports: BTreeMap<String, String>,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/io/kafka/mod.rs` → `io::kafka`; `src/lib.rs` → `` (the crate root).
fn module_path(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_string());
    }
    parts.join("::")
}

fn strip(text: &str) -> String {
    // Everything from the first `#[cfg(test)]` on is test code here (each
    // file keeps its tests at the end).
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

fn ident(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// `a::b::{c, d::e}` → [["a","b","c"], ["a","b","d","e"]] (one brace level).
fn expand(path: &str) -> Vec<Vec<String>> {
    let (head, group) = match path.find('{') {
        Some(i) => (&path[..i], Some(&path[i + 1..path.rfind('}').unwrap_or(path.len())])),
        None => (path, None),
    };
    let base: Vec<String> = head.split("::").map(|s| ident(s.trim()).to_string()).filter(|s| !s.is_empty()).collect();
    match group {
        None => vec![base],
        Some(g) => g
            .split(',')
            .map(|item| {
                let mut p = base.clone();
                p.extend(item.split("::").map(|s| ident(s.trim()).to_string()).filter(|s| !s.is_empty()));
                p
            })
            .collect(),
    }
}

fn load() -> BTreeMap<String, Module> {
    let mut files = Vec::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "main.rs") {
                files.push(p);
            }
        }
    }
    let mut mods = BTreeMap::new();
    for file in files {
        let path = module_path(&file);
        let code = strip(&std::fs::read_to_string(&file).expect("read"));
        let mut children = BTreeSet::new();
        let mut reexports = BTreeMap::new();
        for line in code.lines().map(str::trim) {
            let decl = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
            if let Some(m) = decl.strip_prefix("mod ").filter(|m| m.ends_with(';')) {
                children.insert(ident(m).to_string());
            }
            if let Some(u) = line.strip_prefix("pub use ").or_else(|| line.strip_prefix("pub(crate) use ")) {
                for p in expand(u.trim_end_matches(';')) {
                    if p.len() >= 2 {
                        let child = &p[0];
                        let module = if path.is_empty() { child.clone() } else { format!("{path}::{child}") };
                        reexports.insert(p[p.len() - 1].clone(), module);
                    }
                }
            }
        }
        mods.insert(path, Module { file, code, children, reexports });
    }
    mods
}

/// The module (file) a path names: the longest prefix that is a module,
/// followed through that module's re-exports.
fn resolve(mods: &BTreeMap<String, Module>, segments: &[String]) -> Option<String> {
    let mut best = None;
    for n in (1..=segments.len()).rev() {
        let cand = segments[..n].join("::");
        if let Some(m) = mods.get(&cand) {
            best = match segments.get(n).and_then(|name| m.reexports.get(name)) {
                Some(target) if mods.contains_key(target) => Some(target.clone()),
                _ => Some(cand),
            };
            break;
        }
    }
    best
}

/// Module → modules its (non-test) code refers to.
fn graph(mods: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, m) in mods {
        let parent: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        let mut deps = BTreeSet::new();
        for line in m.code.lines().map(str::trim) {
            if line.starts_with("pub use ") || line.starts_with("pub(crate) use ") {
                continue; // re-exports are followed, not counted
            }
            let mut rest = line;
            while let Some(i) = rest.find("crate::").or_else(|| rest.find("super::")) {
                let is_super = rest[i..].starts_with("super::");
                let after = &rest[i + 7..]; // "crate::" and "super::" are both 7 bytes
                let end = after.find([';', '(', ' ', ')']).unwrap_or(after.len());
                let (text, tail) = if after[..end].contains('{') {
                    let close = after.find('}').map_or(after.len(), |c| c + 1);
                    (&after[..close], &after[close..])
                } else {
                    (&after[..end], &after[end..])
                };
                for p in expand(text) {
                    let full: Vec<String> = if is_super {
                        // The parent of `a::b` is `a`, for `a/b.rs` and `a/b/mod.rs` alike.
                        parent[..parent.len().saturating_sub(1)].iter().cloned().chain(p).collect()
                    } else {
                        p
                    };
                    if let Some(t) = resolve(mods, &full) {
                        if &t != path && !t.is_empty() {
                            deps.insert(t);
                        }
                    }
                }
                rest = tail;
            }
            // `use child::X` inside a parent module.
            if let Some(u) = line.strip_prefix("use ") {
                for p in expand(u.trim_end_matches(';')) {
                    if p.first().is_some_and(|c| m.children.contains(c)) {
                        let full: Vec<String> = parent.iter().cloned().chain(p).collect();
                        if let Some(t) = resolve(mods, &full) {
                            deps.insert(t);
                        }
                    }
                }
            }
        }
        g.insert(path.clone(), deps);
    }
    g
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for d in g.get(n).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let i = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut c = stack[i..].to_vec();
                    c.push(d.clone());
                    return Some(c);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(n, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The lines of the (non-test) modules under `prefix` that name one of
/// `forbidden`; also how many modules were looked at. A file that is test
/// code as a whole (`tests.rs`, declared `#[cfg(test)] mod tests;`) is
/// skipped.
fn forbidden_uses(mods: &BTreeMap<String, Module>, prefix: &str, forbidden: &[&str]) -> (usize, Vec<String>) {
    let mut seen = 0;
    let mut bad = Vec::new();
    let inside = |p: &str| p == prefix || p.starts_with(&format!("{prefix}::"));
    // Test modules (`…::tests` and any module inside one) may use anything.
    for (_, m) in mods.iter().filter(|(p, _)| inside(p) && !p.split("::").any(|s| s == "tests")) {
        seen += 1;
        for line in m.code.lines() {
            for f in forbidden {
                let hit = line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).any(|w| {
                    w == *f || w.starts_with(&format!("{f}::")) || (w.starts_with("::") && w[2..].starts_with(f))
                });
                if hit {
                    bad.push(format!("{}: {}", m.file.display(), line.trim()));
                }
            }
        }
    }
    (seen, bad)
}

#[test]
fn the_engine_does_no_io() {
    let (seen, bad) = forbidden_uses(&load(), "engine", ENGINE_FORBIDDEN);
    assert!(seen >= 8, "engine files found: {seen}");
    assert!(bad.is_empty(), "the engine reaches I/O:\n{}", bad.join("\n"));
}

#[test]
fn the_ctr_model_does_no_io() {
    let (seen, bad) = forbidden_uses(&load(), "learn", &learn_forbidden());
    assert!(seen >= 5, "learn files found: {seen}");
    assert!(bad.is_empty(), "src/learn reaches I/O or the generator:\n{}", bad.join("\n"));
}

#[test]
fn the_commands_sit_on_top() {
    let mods = load();
    let (seen, bad) = forbidden_uses(&mods, "cmd", &["crate::cli"]);
    assert!(seen >= 8, "cmd files found: {seen}");
    assert!(bad.is_empty(), "a command reaches the command line:\n{}", bad.join("\n"));
    for layer in BELOW_CMD {
        let (seen, bad) = forbidden_uses(&mods, layer, &["crate::cmd"]);
        assert!(seen >= 1, "{layer} files found: {seen}");
        assert!(bad.is_empty(), "{layer} imports a command:\n{}", bad.join("\n"));
    }
    // One file per subcommand: `adstream <name>` is `src/cmd/<name>.rs`.
    let cli = std::fs::read_to_string(src().join("cli/mod.rs")).expect("cli");
    let enum_body = cli.split("pub enum Command {").nth(1).and_then(|b| b.split("\n}").next()).expect("enum Command");
    let mut names = Vec::new();
    for line in enum_body.lines().map(str::trim) {
        if let Some(variant) = line.strip_suffix("Args),").and_then(|l| l.split('(').next()) {
            names.push(variant.to_ascii_lowercase());
        }
    }
    assert!(names.len() >= 7, "subcommands found: {names:?}");
    let missing: Vec<_> = names.iter().filter(|n| !mods.contains_key(&format!("cmd::{n}"))).collect();
    assert!(missing.is_empty(), "subcommands without their file in src/cmd/: {missing:?}");
}

#[test]
fn the_pipeline_and_the_commands_leave_librdkafka_to_io_kafka() {
    let mods = load();
    for layer in ["pipeline", "cmd"] {
        let (seen, bad) = forbidden_uses(&mods, layer, &["rdkafka"]);
        assert!(seen >= 4, "{layer} files found: {seen}");
        assert!(bad.is_empty(), "src/{layer} calls librdkafka itself:\n{}", bad.join("\n"));
    }
}

#[test]
fn the_check_sees_a_forbidden_import_and_a_circle() {
    // The checks above and below must be able to fail.
    let module = |code: &str| Module {
        file: PathBuf::from("src/learn/x.rs"),
        code: code.to_string(),
        children: BTreeSet::new(),
        reexports: BTreeMap::new(),
    };
    let mut fake = BTreeMap::new();
    fake.insert("learn::x".to_string(), module("use redis::Client;\nfn f() { ::tokio::spawn(g()); }"));
    fake.insert("learn::tests".to_string(), module("use crate::generator::Traffic;"));
    fake.insert("learner".to_string(), module("use redis::Client;"));
    let (seen, bad) = forbidden_uses(&fake, "learn", &learn_forbidden());
    assert_eq!((seen, bad.len()), (1, 2), "{bad:?}");
    let line = "use crate::obs::Stats;";
    assert!(line
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .any(|w| w.starts_with("crate::obs")));
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(find_cycle(&g).map(|c| c.len()), Some(4));
    g.insert("c".to_string(), BTreeSet::new());
    assert_eq!(find_cycle(&g), None);
}

#[test]
fn no_import_circles_between_modules() {
    let mods = load();
    let g = graph(&mods);
    for (m, deps) in &g {
        let shown = if m.is_empty() { "(crate root)" } else { m.as_str() };
        println!("{shown:24} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    // Sanity: the graph is not empty and knows the known edges.
    assert!(g.get("cmd::run").is_some_and(|d| d.contains("engine::processor") && d.contains("io::kafka")), "{g:?}");
    assert!(g.get("cli::app").is_some_and(|d| d.contains("cmd")), "{g:?}");
    assert!(g.get("io::kafka::dlq").is_some_and(|d| d.contains("io::kafka")), "{g:?}");
    if let Some(c) = find_cycle(&g) {
        panic!("import circle: {}", c.join(" -> "));
    }
}

#[test]
fn the_readme_sketch_names_every_module_folder() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let mut missing = Vec::new();
    for e in std::fs::read_dir(src()).expect("src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            let name = format!("src/{}/", p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            if !readme.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(missing.is_empty(), "README's architecture section does not name {missing:?}");
}
