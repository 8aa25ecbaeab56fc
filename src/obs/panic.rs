//! A panic as one log record: the default hook prints several lines of
//! plain text to stderr, which breaks `--log-format json` (one object per
//! line) for log shippers. Installed by `main` after logging is set up.

use std::backtrace::{Backtrace, BacktraceStatus};

/// Replaces the default panic hook with one that logs a single `ERROR`
/// record through `tracing` (with the backtrace, folded into one line, as a
/// field when `RUST_BACKTRACE` asks for one).
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(non-string payload)");
        let location = info.location().map(|l| (l.file(), l.line(), l.column()));
        let thread = std::thread::current();
        let line = one_line(thread.name(), payload, location);
        let bt = Backtrace::capture();
        if bt.status() == BacktraceStatus::Captured {
            // Folded too: the text format prints fields inline.
            let bt = bt.to_string().lines().map(str::trim).collect::<Vec<_>>().join(" | ");
            tracing::error!(target: "panic", backtrace = %bt, "{line}");
        } else {
            tracing::error!(target: "panic", "{line}");
        }
    }));
}

/// `thread 'NAME' panicked at FILE:LINE:COL: MESSAGE`, like the default
/// hook's first line, with the message's own line breaks folded into ` | `.
pub fn one_line(thread: Option<&str>, payload: &str, location: Option<(&str, u32, u32)>) -> String {
    let at = location.map(|(f, l, c)| format!(" at {f}:{l}:{c}")).unwrap_or_default();
    let msg = payload.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" | ");
    format!("thread '{}' panicked{at}: {msg}", thread.unwrap_or("<unnamed>"))
}

/// Debug builds only: `ADSTREAM_TEST_PANIC=1` panics right after start, so
/// the test suite can check what a panic looks like in the logs. Release
/// builds ignore the variable (the check is compiled out).
pub fn test_trigger() {
    #[cfg(debug_assertions)]
    if std::env::var_os("ADSTREAM_TEST_PANIC").is_some_and(|v| v == "1") {
        panic!("ADSTREAM_TEST_PANIC: a test panic\nwith a second line");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_line() {
        let s =
            one_line(Some("main"), "assertion `left == right` failed\n  left: 1\n right: 2", Some(("src/x.rs", 3, 9)));
        assert_eq!(
            s,
            "thread 'main' panicked at src/x.rs:3:9: assertion `left == right` failed |   left: 1 |  right: 2"
        );
        assert_eq!(one_line(None, "boom", None), "thread '<unnamed>' panicked: boom");
    }
}
