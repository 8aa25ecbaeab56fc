//! The README's set-up commands, as written in README.md: the demo command
//! is run exactly as written (only `--duration 3s` appended), and CI's entry
//! point (`.ci/run`) must invoke exactly the README's test command (running
//! the whole suite from inside itself would recurse). So the README cannot
//! drift from what works: change either command to something that does not
//! work and these tests fail.
//!
//! The docs themselves: README.md stays at most 300 lines and BENCHMARKS.md
//! 400 (details go to docs/), and every relative link in README.md,
//! BENCHMARKS.md, RELIABILITY.md and docs/*.md, anchors included, and every
//! repository path they name (`src/…/x.rs`, `scripts/x.sh`, …) exists, so
//! a moved file or a renamed heading shows here.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The commands of the ```sh blocks of the README's Quick start, in order:
/// one per block (each block must hold exactly one command line).
fn quick_start_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let start = readme.find("\n## Quick start\n").expect("README has a `## Quick start` section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut commands = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("```").expect("closed ```sh block");
        let lines: Vec<&str> =
            body[..close].lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert_eq!(lines.len(), 1, "one command per Quick start block: {lines:?}");
        commands.push(lines[0].to_string());
        rest = &body[close + 3..];
    }
    assert!(commands.len() >= 2, "Quick start has the demo and the test command: {commands:?}");
    commands
}

/// The demo command: the Quick start's first block.
fn demo_command() -> String {
    quick_start_commands()[0].clone()
}

/// The test command: the Quick start's second block.
fn test_command() -> String {
    quick_start_commands()[1].clone()
}

/// The command `.ci/run` ends in: its `exec` line, without `exec` and
/// without a leading `bash`/`sh` interpreter.
fn ci_command() -> Vec<String> {
    let script = std::fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    let line = script
        .lines()
        .map(str::trim)
        .rfind(|l| l.starts_with("exec "))
        .unwrap_or_else(|| panic!(".ci/run has no `exec` line:\n{script}"));
    let mut words: Vec<String> = line.split_whitespace().skip(1).map(str::to_string).collect();
    if words.first().is_some_and(|w| w == "bash" || w == "sh") {
        words.remove(0);
    }
    words
}

#[test]
fn ci_runs_exactly_the_readme_test_command_and_it_exists() {
    let readme = test_command();
    let words: Vec<String> = readme.split_whitespace().map(str::to_string).collect();
    assert_eq!(ci_command(), words, ".ci/run must run the README's test command `{readme}`");
    // As written, the README runs the script directly: it must be there,
    // executable, and valid shell.
    let script = repo().join(&words[0]);
    let meta = std::fs::metadata(&script).unwrap_or_else(|e| panic!("README test command {readme:?}: {e}"));
    assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0, "{readme} is not executable");
    let syntax = Command::new("bash").arg("-n").arg(&script).output().expect("bash -n");
    assert!(syntax.status.success(), "{readme}: {}", String::from_utf8_lossy(&syntax.stderr));
    println!("readme: .ci/run runs `{readme}`, the README's test command");
}

#[test]
#[ignore = "builds the release binary (minutes on a fresh clone): run scripts/test.sh"]
fn the_readme_demo_command_runs_as_written() {
    let demo = demo_command();
    let test = test_command();
    // Never the suite itself from inside the suite.
    assert!(demo != test && !demo.contains("test.sh") && !demo.contains(".ci/"), "{demo:?} is not a demo command");
    let cmdline = format!("{demo} --duration 3s");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &cmdline]).current_dir(repo()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("ADSTREAM_") {
            cmd.env_remove(k);
        }
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("sh");
    // A fresh clone builds the release binary first.
    let limit = Duration::from_secs(40 * 60);
    let out = loop {
        if child.try_wait().expect("wait").is_some() {
            break child.wait_with_output().expect("output");
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("`{cmdline}` did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "`{cmdline}` (the README's, as written) failed: {}\n{stderr}\n{stdout}", out.status);
    let rows = stdout.lines().filter(|l| l.contains(" | impressions ") && l.contains(" | clicks ")).count();
    assert!(rows >= 15, "`{cmdline}` printed {rows} window rows (want a window: 5 campaigns x 3 formats):\n{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("demo done: ")), "{stdout}");
    println!("readme: `{cmdline}` exited 0 with {rows} window rows in {:.1} s", t0.elapsed().as_secs_f64());
}

/// The Markdown files of the repository's documentation: README.md,
/// BENCHMARKS.md, RELIABILITY.md and docs/*.md.
fn doc_files() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = ["README.md", "BENCHMARKS.md", "RELIABILITY.md"].iter().map(|f| repo().join(f)).collect();
    let mut docs: Vec<_> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// `text` without its fenced code blocks (their `](` and `#` are not Markdown).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, spaces to `-`, punctuation
/// other than `-` and `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> std::collections::BTreeSet<String> {
    prose(text).lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

/// Every broken relative link (`[x](path#anchor)`: the file must exist, the
/// anchor must be a heading of it) and every repository path named in the
/// prose (`src/…/x.rs`, `tests/x.rs`, `scripts/x.sh`, `sql/x.sql`, …) that
/// does not exist, in `file`.
fn broken_references(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let body = prose(&text);
    let dir = file.parent().expect("a file's directory");
    let mut bad = Vec::new();
    let mut rest = body.as_str();
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let end = tail.find(')').unwrap_or(tail.len());
        let target = &tail[..end];
        rest = &tail[end..];
        if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
            continue;
        }
        let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
        let linked = if path.is_empty() { file.to_path_buf() } else { dir.join(path) };
        if !linked.exists() {
            bad.push(format!("link {target}: no {}", linked.display()));
        } else if !anchor.is_empty() && linked.extension().is_some_and(|e| e == "md") {
            let linked_text = std::fs::read_to_string(&linked).expect("linked file");
            if !anchors(&linked_text).contains(anchor) {
                bad.push(format!("link {target}: no heading #{anchor}"));
            }
        }
    }
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    for word in body.split(|c: char| !is_path_char(c)) {
        let word = word.trim_end_matches('.');
        let named = ["src/", "tests/", "scripts/", "sql/", "bench/", "docs/", "deploy/", "superset/"]
            .iter()
            .any(|p| word.starts_with(p));
        let file_like = [".rs", ".sh", ".sql", ".md", ".py", ".toml", ".yml", ".xml"].iter().any(|x| word.ends_with(x));
        if named && file_like && !word.contains('*') && !repo().join(word).exists() {
            bad.push(format!("path {word} does not exist"));
        }
    }
    bad
}

#[test]
fn the_docs_link_only_to_what_exists() {
    let mut bad = Vec::new();
    let files = doc_files();
    for f in &files {
        for b in broken_references(f) {
            bad.push(format!("{}: {b}", f.strip_prefix(repo()).unwrap_or(f).display()));
        }
    }
    assert!(bad.is_empty(), "broken references in the docs:\n{}", bad.join("\n"));
    println!("readme: every link and path in {} Markdown files resolves", files.len());
}

#[test]
fn the_check_sees_a_broken_link_a_missing_anchor_and_a_missing_path() {
    let dir = repo().join("target").join("readme-check");
    std::fs::create_dir_all(&dir).expect("target/readme-check");
    let f = dir.join("x.md");
    std::fs::write(
        &f,
        "# Top\n\n## The `x` part: y, z\n\n[ok](#the-x-part-y-z) [bad](#nope) [gone](nowhere.md)\n\
         `src/lib.rs` is there, `src/nothing/here.rs` is not.\n\n```sh\n[not a link](in-a-code-block.md)\n```\n",
    )
    .expect("write");
    let bad = broken_references(&f);
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad[0].contains("#nope") && bad[1].contains("nowhere.md") && bad[2].contains("src/nothing/here.rs"),
        "{bad:?}"
    );
}

#[test]
fn readme_and_benchmarks_stay_short() {
    for (file, limit) in [("README.md", 300), ("BENCHMARKS.md", 400)] {
        let lines = std::fs::read_to_string(repo().join(file)).expect(file).lines().count();
        assert!(lines <= limit, "{file} has {lines} lines (at most {limit}: details go to docs/)");
        println!("readme: {file} {lines} lines (limit {limit})");
    }
}
