//! Which ClickHouse errors are worth retrying.
//!
//! An outage (connection refused or reset, a timeout, a server busy merging
//! or out of memory) ends by itself: the sink retries with backoff and the
//! consumer waits behind backpressure. A refusal (wrong password, a table
//! or column that is gone, data the table's types do not accept) does not:
//! retrying it forever would stall the partition silently. Such an error is
//! *permanent*: adstream logs one line naming the table and the fix, counts
//! it, and exits non-zero without committing the batch, so an orchestrator
//! alerts or restarts it and the batch is replayed once the cause is fixed.
//!
//! The split follows Vector's ClickHouse sink (`Code: 53` type mismatch and
//! `Code: 117` incorrect data are not retried; other 4xx answers are not
//! retried either, 5xx, 408 and 429 are) and ClickHouse's own HTTP status
//! mapping (`exceptionCodeToHTTPStatus`: 400/401/403/404 for the codes
//! listed in [`PERMANENT`]), plus the codes ClickHouse answers with a 500
//! although retrying cannot help (16 `NO_SUCH_COLUMN_IN_TABLE`, 10
//! `NOT_FOUND_COLUMN_IN_BLOCK`, 70 `CANNOT_CONVERT_TYPE`). Anything not
//! recognised as permanent is retried: a wrongly retried error costs a
//! stall that `/healthz` reports, a wrongly permanent one costs a restart.
//!
//! The decision is made once, where the client's error is met: every
//! ClickHouse call of the sink, the schema migration, the learner's store
//! and `report` turns the `clickhouse` crate's error into a
//! [`ClickHouseError`] through a [`Boundary`] (what adstream was doing, at
//! which server), and callers only ask [`ClickHouseError::is_retriable`].
//! The crate hands the server's answer over as text (`BadResponse`: the
//! body, or `Code: N` from the `X-ClickHouse-Exception-Code` header when the
//! body is empty, or the status line), so [`classify_text`] reads the code
//! there, in this one place.

use std::fmt;

/// What a permanent error asks the operator to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// User or password refused.
    Credentials,
    /// The user lacks a grant (or has a read-only profile).
    Grants,
    /// A table, column or database is missing or has other types than
    /// adstream's schema (`sql/`).
    Schema,
    /// ClickHouse refused the statement itself (syntax, unknown function or
    /// setting): adstream and the server disagree on the SQL.
    Statement,
}

/// ClickHouse error codes (`src/Common/ErrorCodes.cpp`) that retrying
/// cannot cure, with their names.
pub const PERMANENT: &[(u32, &str, Fix)] = &[
    (6, "CANNOT_PARSE_TEXT", Fix::Schema),
    (8, "THERE_IS_NO_COLUMN", Fix::Schema),
    (10, "NOT_FOUND_COLUMN_IN_BLOCK", Fix::Schema),
    (15, "DUPLICATE_COLUMN", Fix::Schema),
    (16, "NO_SUCH_COLUMN_IN_TABLE", Fix::Schema),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", Fix::Schema),
    (36, "BAD_ARGUMENTS", Fix::Statement),
    (44, "ILLEGAL_COLUMN", Fix::Schema),
    (46, "UNKNOWN_FUNCTION", Fix::Statement),
    (47, "UNKNOWN_IDENTIFIER", Fix::Schema),
    (50, "UNKNOWN_TYPE", Fix::Schema),
    (53, "TYPE_MISMATCH", Fix::Schema),
    (60, "UNKNOWN_TABLE", Fix::Schema),
    (62, "SYNTAX_ERROR", Fix::Statement),
    (70, "CANNOT_CONVERT_TYPE", Fix::Schema),
    (73, "UNKNOWN_FORMAT", Fix::Statement),
    (81, "UNKNOWN_DATABASE", Fix::Schema),
    (115, "UNKNOWN_SETTING", Fix::Statement),
    (117, "INCORRECT_DATA", Fix::Schema),
    (164, "READONLY", Fix::Grants),
    (192, "UNKNOWN_USER", Fix::Credentials),
    (193, "WRONG_PASSWORD", Fix::Credentials),
    (194, "REQUIRED_PASSWORD", Fix::Credentials),
    (321, "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE", Fix::Schema),
    (497, "ACCESS_DENIED", Fix::Grants),
    (511, "UNKNOWN_ROLE", Fix::Grants),
    (516, "AUTHENTICATION_FAILED", Fix::Credentials),
];

/// A ClickHouse error that retrying cannot cure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permanent {
    /// The server's exception code, if it sent one.
    pub code: Option<u32>,
    /// The code's name (`TYPE_MISMATCH`), or the HTTP status, or
    /// `SCHEMA_MISMATCH` for the client's own check of a table's columns.
    pub name: String,
    pub fix: Fix,
    /// The server's message, first line only (ClickHouse appends a
    /// multi-line help text to authentication failures).
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Transient,
    Permanent(Permanent),
}

/// Classifies the text of an error answer: a ClickHouse exception
/// (`Code: 53. DB::Exception: ... (TYPE_MISMATCH) (version ...)`, or just
/// `Code: 53` when the body was empty), or an HTTP status line
/// (`403 Forbidden`) from a proxy in front of it. Pure.
pub fn classify_text(text: &str) -> Class {
    let first = text.trim().lines().next().unwrap_or("").trim();
    if let Some(code) = exception_code(text) {
        return match PERMANENT.iter().find(|(c, _, _)| *c == code) {
            Some(&(_, name, fix)) => Class::Permanent(Permanent {
                code: Some(code),
                name: name.to_string(),
                fix,
                message: first.to_string(),
            }),
            None => Class::Transient,
        };
    }
    // No exception code: a status line, as the client reports an empty
    // error body. 4xx is the client's fault except 408 (timeout) and 429
    // (throttled), as in Vector's HTTP retry logic.
    let status: Option<u16> = first.split_whitespace().next().and_then(|s| s.parse().ok());
    match status {
        Some(s @ (401 | 403)) => Class::Permanent(Permanent {
            code: None,
            name: format!("HTTP {s}"),
            fix: Fix::Credentials,
            message: first.to_string(),
        }),
        Some(s @ 400..=499) if s != 408 && s != 429 => Class::Permanent(Permanent {
            code: None,
            name: format!("HTTP {s}"),
            fix: Fix::Statement,
            message: first.to_string(),
        }),
        _ => Class::Transient,
    }
}

/// The number after the first `Code: `, as ClickHouse starts every
/// exception text (possibly after a client's prefix such as `bad response: `).
fn exception_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")?;
    let digits: String = text[at + 6..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Classifies an error of the `clickhouse` client as it comes out of the
/// client (never an `anyhow` chain). Network failures and timeouts are
/// transient; a server answer is classified by [`classify_text`] (the
/// client hands over the body, or `Code: N` from the exception header, or
/// the status line, as text); the client's own check that a table has the
/// row's columns (`SchemaMismatch`) is permanent.
pub fn classify(e: &clickhouse::error::Error) -> Class {
    match e {
        clickhouse::error::Error::BadResponse(text) => classify_text(text),
        clickhouse::error::Error::SchemaMismatch(text) => Class::Permanent(Permanent {
            code: None,
            name: "SCHEMA_MISMATCH".to_string(),
            fix: Fix::Schema,
            message: text.lines().next().unwrap_or("").to_string(),
        }),
        _ => Class::Transient,
    }
}

/// What adstream was doing when ClickHouse answered.
#[derive(Debug, Clone)]
pub enum Target {
    /// Inserting into this table (`database.table`).
    Table(String),
    /// Applying the schema to this database.
    Schema(String),
    /// Reading for `report` or the learner.
    Read(String),
}

/// An error at the ClickHouse boundary, classified once, where the
/// client's error is met ([`Boundary`]): the one place that decides whether
/// a caller retries. Callers ask [`ClickHouseError::is_retriable`].
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseError {
    /// ClickHouse (or a proxy in front of it) refused for good: one line
    /// naming what was refused, why, and the fix. Never retried.
    #[error(transparent)]
    Permanent(Box<PermanentError>),
    /// An outage, a timeout, an overloaded server, or an answer not known
    /// to be permanent: retried with backoff. What adstream was doing
    /// (`writing to db.table: inserting window rows`), then the client's
    /// error as its source.
    #[error(transparent)]
    Transient(anyhow::Error),
    /// Not an answer from ClickHouse: adstream's own refusal around its
    /// calls (the schema cannot be rendered, an old layout must be upgraded
    /// by hand on a cluster). Only met while applying the schema.
    #[error(transparent)]
    Local(anyhow::Error),
}

impl ClickHouseError {
    /// Whether retrying may cure it (an outage: yes; a refusal: no).
    pub fn is_retriable(&self) -> bool {
        matches!(self, ClickHouseError::Transient(_))
    }

    /// The refusal, if ClickHouse refused for good.
    pub fn permanent(&self) -> Option<&PermanentError> {
        match self {
            ClickHouseError::Permanent(p) => Some(p),
            _ => None,
        }
    }
}

impl From<anyhow::Error> for ClickHouseError {
    /// adstream's own error (see [`ClickHouseError::Local`]).
    fn from(e: anyhow::Error) -> Self {
        ClickHouseError::Local(e)
    }
}

/// Where the client's errors become [`ClickHouseError`]s: what adstream is
/// doing ([`Target`]) at which server (for a refusal's line).
#[derive(Debug, Clone, Copy)]
pub struct Boundary<'a> {
    target: &'a Target,
    config: &'a crate::config::ClickHouseConfig,
}

impl<'a> Boundary<'a> {
    pub fn new(target: &'a Target, config: &'a crate::config::ClickHouseConfig) -> Self {
        Boundary { target, config }
    }

    /// The client's `error`, classified.
    pub fn error(&self, error: clickhouse::error::Error) -> ClickHouseError {
        self.classify(error, None)
    }

    /// The client's `error` in `step` (`inserting window rows`), classified;
    /// a transient one names the step before the client's error.
    pub fn step(&self, step: impl Into<String>) -> impl FnOnce(clickhouse::error::Error) -> ClickHouseError + 'a {
        let (step, b) = (step.into(), *self);
        move |error| b.classify(error, Some(step))
    }

    fn classify(&self, error: clickhouse::error::Error, step: Option<String>) -> ClickHouseError {
        match classify(&error) {
            Class::Permanent(p) => ClickHouseError::Permanent(Box::new(PermanentError {
                target: self.target.clone(),
                error: p,
                url: self.config.display_url(),
                user: self.config.user.clone(),
            })),
            Class::Transient => {
                let mut e = anyhow::Error::new(error);
                if let Some(step) = step {
                    e = e.context(step);
                }
                if let Target::Table(t) = self.target {
                    e = e.context(format!("writing to {t}"));
                }
                ClickHouseError::Transient(e)
            }
        }
    }
}

/// The one-line error for a permanent failure: what was refused, why, and
/// the fix.
#[derive(Debug)]
pub struct PermanentError {
    pub target: Target,
    pub error: Permanent,
    pub url: String,
    pub user: String,
}

impl PermanentError {
    fn fix(&self) -> String {
        let table = match &self.target {
            Target::Table(t) => t.clone(),
            Target::Schema(db) | Target::Read(db) => format!("the tables of database {db}"),
        };
        match self.error.fix {
            Fix::Credentials => format!(
                "check the user ({}: --clickhouse-user / ADSTREAM_CLICKHOUSE_USER) and its password \
                 (ADSTREAM_CLICKHOUSE_PASSWORD or --clickhouse-password-file) for {}",
                self.user, self.url
            ),
            Fix::Grants => format!(
                "grant user {} SELECT and INSERT on the database (and CREATE for the schema), or use a user that has them",
                self.user
            ),
            Fix::Schema => match &self.target {
                Target::Table(t) => format!(
                    "restore {t} to adstream's schema (sql/): a dropped table or database is re-created by \
                     `adstream migrate` (or by restarting adstream, which applies the schema first); a dropped \
                     or changed column must be put back by hand (ALTER TABLE {t} ADD/MODIFY COLUMN as in sql/)"
                ),
                _ => format!("restore {table} to adstream's schema (sql/), e.g. with `adstream migrate`"),
            },
            Fix::Statement => {
                "ClickHouse refused adstream's SQL: check the server version and its settings (see README)".to_string()
            }
        }
    }
}

impl fmt::Display for PermanentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.target {
            Target::Table(t) => format!("writing to {t}"),
            Target::Schema(db) => format!("applying the schema to database {db}"),
            Target::Read(db) => format!("reading database {db}"),
        };
        let code = self.error.code.map(|c| format!("Code {c} ")).unwrap_or_default();
        write!(
            f,
            "ClickHouse at {} refused {what} with a permanent error ({code}{}): {} | fix: {}",
            self.url,
            self.error.name,
            self.error.message,
            self.fix()
        )
    }
}

impl std::error::Error for PermanentError {}

/// An error from applying the schema at start (`migrate`, `run`): a
/// refusal as its one line, anything else (ClickHouse unreachable) with the
/// endpoint and the flag that sets it.
pub fn schema_error(e: ClickHouseError, config: &crate::config::ClickHouseConfig) -> anyhow::Error {
    if e.permanent().is_some() {
        return e.into(); // names the endpoint and the fix itself
    }
    let fix = tls_hint(&format!("{e:#}"), config.url.expose().trim_start().to_ascii_lowercase().starts_with("https:"));
    anyhow::Error::new(e).context(format!("ClickHouse at {} ({fix})", config.display_url()))
}

/// The setting to fix for a connection error, by what TLS said: the CA,
/// the client certificate, or the URL's scheme against the port's.
pub fn tls_hint(msg: &str, https: bool) -> &'static str {
    let m = msg.to_ascii_lowercase();
    let has = |s: &str| m.contains(s);
    if has("certificate verify failed") || has("unable to get local issuer") || has("self-signed certificate") {
        "set --clickhouse-ca-file / ADSTREAM_CLICKHOUSE_CA_FILE: the CA that signed ClickHouse's certificate"
    } else if has("wrong version number") || has("packet length too long") {
        "the port does not speak TLS: use http:// or ClickHouse's https_port in --clickhouse-url / ADSTREAM_CLICKHOUSE_URL"
    } else if https && (has("certificate required") || has("alert bad certificate") || has("alert handshake failure")) {
        "ClickHouse refused the TLS handshake: set --clickhouse-cert-file and --clickhouse-key-file \
         (ADSTREAM_CLICKHOUSE_CERT_FILE, ADSTREAM_CLICKHOUSE_KEY_FILE) if it requires a client certificate"
    } else if !https && (has("connection closed before message completed") || has("connection reset")) {
        "the server closed the connection: is it an HTTPS port? use https:// in --clickhouse-url / ADSTREAM_CLICKHOUSE_URL"
    } else {
        "set --clickhouse-url / ADSTREAM_CLICKHOUSE_URL"
    }
}

/// Whether `e` is (or wraps) a [`ClickHouseError`] that retrying cannot
/// cure: for callers that mix ClickHouse's errors with others in `anyhow`.
pub fn is_permanent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClickHouseError>().is_some_and(|c| c.permanent().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error texts as the engine and the client produce them (chdb 26.9 via
    /// chfront, and ClickHouse 23.3's authentication failure as quoted in
    /// DarkWanderer/ClickHouse.Client#365).
    const AUTH: &str = "Code: 516. DB::Exception: default: Authentication failed: password is incorrect, or there \
                        is no user with such name.\n\nIf you have installed ClickHouse and forgot password you can \
                        reset it in the configuration file.\nThe password for default user is typically located at \
                        /etc/clickhouse-server/users.d/default-password.xml\nand deleting this file will reset the \
                        password.\nSee also /etc/clickhouse-server/users.xml on the server where ClickHouse is \
                        installed.\n\n. (AUTHENTICATION_FAILED) (version 23.3.2.37 (official build))";
    const NO_COLUMN: &str = "Code: 16. DB::Exception: No such column is_final in table rel.ad_window_parts \
                             (d1ea9bbe-b284-4f72-b40e-a5669fee1c0b). (NO_SUCH_COLUMN_IN_TABLE)";
    const NO_TABLE: &str = "Code: 60. DB::Exception: Table rel.ad_window_parts does not exist. (UNKNOWN_TABLE)";
    const TYPE: &str = "Code: 53. DB::Exception: Type mismatch in IN or VALUES section. Expected: UInt64. Got: \
                        String. (TYPE_MISMATCH) (version 24.8.4.13 (official build))";
    const PARTS: &str = "Code: 252. DB::Exception: Too many parts (3001 with average size of 1.00 KiB) in table \
                         'adtech.ad_window_parts'. Merges are processing significantly slower than inserts. \
                         (TOO_MANY_PARTS) (version 24.8.4.13 (official build))";
    const MEMORY: &str = "Code: 241. DB::Exception: Memory limit (total) exceeded: would use 3.60 GiB (attempt to \
                          allocate chunk of 4194304 bytes), maximum: 3.60 GiB. (MEMORY_LIMIT_EXCEEDED)";

    fn permanent(text: &str) -> Permanent {
        match classify_text(text) {
            Class::Permanent(p) => p,
            Class::Transient => panic!("transient: {text}"),
        }
    }

    #[test]
    fn refusals_are_permanent_with_their_code_and_fix() {
        let p = permanent(AUTH);
        assert_eq!((p.code, p.name.as_str(), p.fix), (Some(516), "AUTHENTICATION_FAILED", Fix::Credentials));
        assert!(!p.message.contains('\n') && p.message.ends_with("no user with such name."), "{}", p.message);
        let p = permanent(NO_COLUMN);
        assert_eq!((p.code, p.name.as_str(), p.fix), (Some(16), "NO_SUCH_COLUMN_IN_TABLE", Fix::Schema));
        assert_eq!(p.message, NO_COLUMN);
        assert_eq!(permanent(NO_TABLE).name, "UNKNOWN_TABLE");
        assert_eq!(permanent(TYPE).code, Some(53));
        assert_eq!(permanent("Code: 117. DB::Exception: Incorrect data. (INCORRECT_DATA)").code, Some(117));
        assert_eq!(
            permanent("Code: 62. DB::Exception: Syntax error: failed at position 1. (SYNTAX_ERROR)").fix,
            Fix::Statement
        );
        assert_eq!(permanent("Code: 497. DB::Exception: u: Not enough privileges. (ACCESS_DENIED)").fix, Fix::Grants);
        assert_eq!(permanent("Code: 81. DB::Exception: Database x does not exist. (UNKNOWN_DATABASE)").code, Some(81));
        // The client's prefix and an empty body (only the header's code).
        assert_eq!(permanent(&format!("bad response: {NO_TABLE}")).code, Some(60));
        assert_eq!(permanent("Code: 194").name, "REQUIRED_PASSWORD");
        // A proxy's refusal without a ClickHouse code.
        assert_eq!(permanent("401 Unauthorized").fix, Fix::Credentials);
        assert_eq!(permanent("403 Forbidden").fix, Fix::Credentials);
        assert_eq!(permanent("404 Not Found").fix, Fix::Statement);
    }

    #[test]
    fn outages_and_overload_are_transient() {
        for text in [
            PARTS,
            MEMORY,
            "Code: 159. DB::Exception: Timeout exceeded: elapsed 30.1 seconds. (TIMEOUT_EXCEEDED)",
            "Code: 209. DB::NetException: Timeout exceeded while reading from socket. (SOCKET_TIMEOUT)",
            "Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)",
            "Code: 242. DB::Exception: Table is in readonly mode. (TABLE_IS_READ_ONLY)",
            "Code: 3. DB::Exception: Cannot read request body. (UNEXPECTED_END_OF_FILE)",
            "Code: 1001. DB::Exception: chfront: OSError(28). (STD_EXCEPTION)",
            "500 Internal Server Error",
            "502 Bad Gateway",
            "503 Service Unavailable",
            "408 Request Timeout",
            "429 Too Many Requests",
            "",
            "<html>oops</html>",
        ] {
            assert_eq!(classify_text(text), Class::Transient, "{text}");
        }
    }

    fn config(url: &str, user: &str) -> crate::config::ClickHouseConfig {
        crate::config::ClickHouseConfig {
            url: crate::config::secret::Secret::new(url),
            database: "rel".into(),
            user: user.into(),
            password: None,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(1),
            tls: Default::default(),
        }
    }

    #[test]
    fn client_errors_are_classified_where_they_are_met() {
        use clickhouse::error::Error as Ch;
        let cfg = config("http://h:8123", "default");
        let table = Target::Table("rel.ad_window_parts".into());
        let at = Boundary::new(&table, &cfg);
        let e = at.step("inserting window rows")(Ch::BadResponse(NO_COLUMN.into()));
        assert!(!e.is_retriable());
        let p = e.permanent().expect("permanent");
        assert_eq!((p.error.code, p.error.fix), (Some(16), Fix::Schema));
        let line = e.to_string();
        assert_eq!(format!("{:#}", anyhow::Error::new(e)), line, "one line, no chain");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("writing to rel.ad_window_parts"), "{line}");
        assert!(line.contains("Code 16 NO_SUCH_COLUMN_IN_TABLE"), "{line}");
        assert!(line.contains("ALTER TABLE rel.ad_window_parts ADD/MODIFY COLUMN"), "{line}");

        let cfg = config("http://h:8123", "bob");
        let schema = Target::Schema("adtech".into());
        let e = Boundary::new(&schema, &cfg).step("applying 001_database.sql")(Ch::BadResponse(AUTH.into()));
        let line = e.to_string();
        assert!(!e.is_retriable());
        assert!(!line.contains('\n') && !line.contains("forgot password"), "{line}");
        assert!(line.contains("schema to database adtech") && line.contains("ADSTREAM_CLICKHOUSE_PASSWORD"), "{line}");
        assert!(line.contains("user (bob"), "{line}");
        let e = anyhow::Error::new(e).context("learn --once");
        assert!(is_permanent(&e), "found under a caller's context");

        let e = at.error(Ch::SchemaMismatch("missing column is_final".into()));
        assert!(matches!(e.permanent(), Some(PermanentError { error: Permanent { fix: Fix::Schema, .. }, .. })));
        assert!(matches!(classify(&Ch::SchemaMismatch("x".into())), Class::Permanent(_)));

        let outages: [fn() -> Ch; 3] =
            [|| Ch::TimedOut, || Ch::Network("connection refused".into()), || Ch::BadResponse(PARTS.into())];
        for transient in outages {
            assert_eq!(classify(&transient()), Class::Transient);
            let e = at.step("inserting window rows")(transient());
            assert!(e.is_retriable() && e.permanent().is_none());
            // The same text as the contexts the sink used to attach.
            let before = anyhow::Error::new(transient())
                .context("inserting window rows")
                .context("writing to rel.ad_window_parts");
            let now = anyhow::Error::new(e).context("a caller's context");
            assert_eq!(format!("{now:#}"), format!("a caller's context: {before:#}"));
            assert!(!is_permanent(&anyhow::Error::new(at.error(Ch::TimedOut))));
        }
        // A read names nothing before the client's error.
        let read = Target::Read("rel".into());
        let e = Boundary::new(&read, &cfg).error(Ch::TimedOut);
        assert_eq!((format!("{e}"), format!("{e:#}")), ("timeout expired".into(), "timeout expired".into()));
        // adstream's own error is neither retried nor a refusal.
        let e = ClickHouseError::from(anyhow::anyhow!("Code: 60. not from ClickHouse's client"));
        assert!(!e.is_retriable() && e.permanent().is_none());
        assert!(!is_permanent(&anyhow::anyhow!("Code: 60. not from ClickHouse's client")));
    }
}
