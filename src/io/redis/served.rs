//! What `GET /ctr` answers from: the latest prediction of every segment
//! `adstream learn` published, in process beside the Redis copy, in a
//! concurrent map (dashmap: lookups never wait for the publisher). Bounded
//! by the segments of one published version: each publish inserts them and
//! drops the entries of older versions.

use dashmap::DashMap;
use serde::Serialize;

/// One served prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    /// Predicted clicks per impression.
    pub ctr: f64,
    pub version: u64,
    pub window_ms: i64,
    pub published_ms: i64,
}

/// Why `GET /ctr` has no prediction to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrError {
    /// A query parameter is missing or empty (400).
    BadRequest(String),
    /// No prediction for the segment (404).
    NotFound(String),
}

impl CtrError {
    /// `{"error":"…"}` and a newline.
    pub fn json(&self) -> String {
        let (CtrError::BadRequest(error) | CtrError::NotFound(error)) = self;
        json_line(&ErrorBody { error })
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// The body of a `GET /ctr` answer, fields in this order.
#[derive(Serialize)]
struct CtrBody<'a> {
    campaign: &'a str,
    format: &'a str,
    country: &'a str,
    device: &'a str,
    ctr: f64,
    ctr_percent: f64,
    model_version: u64,
    window_start_ms: i64,
    published_ms: i64,
}

fn json_line<T: Serialize>(value: &T) -> String {
    // Serialising a struct of strings and numbers cannot fail; an empty
    // object would rather than a panic.
    let mut s = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
    s.push('\n');
    s
}

/// The key of one segment.
fn key(campaign: &str, format: &str, country: &str, device: &str) -> String {
    format!("{campaign}|{format}|{country}|{device}")
}

/// The value of `key` in a query string (`a=1&b=2`), percent-decoded.
fn query_param(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// `campaign|format|country|device` → the latest prediction.
#[derive(Default)]
pub struct ServedPredictions(DashMap<String, Served>);

impl ServedPredictions {
    /// The prediction of segment `(campaign, format, country, device)`.
    pub fn insert(&self, segment: (&str, &str, &str, &str), served: Served) {
        self.0.insert(key(segment.0, segment.1, segment.2, segment.3), served);
    }

    /// Drops every prediction not of `version`.
    pub fn keep_version(&self, version: u64) {
        self.0.retain(|_, v| v.version == version);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The JSON answer to `GET /ctr?campaign=C001&format=banner&country=US&device=iOS`.
    pub fn ctr(&self, query: &str) -> Result<String, CtrError> {
        let mut parts = Vec::with_capacity(4);
        for k in ["campaign", "format", "country", "device"] {
            match query_param(query, k) {
                Some(v) if !v.is_empty() => parts.push(v),
                _ => {
                    return Err(CtrError::BadRequest(format!(
                        "missing query parameter {k} (campaign, format, country, device)"
                    )))
                }
            }
        }
        let key = key(&parts[0], &parts[1], &parts[2], &parts[3]);
        let Some(s) = self.0.get(&key).map(|r| *r) else {
            return Err(CtrError::NotFound(format!("no prediction for {key}")));
        };
        Ok(json_line(&CtrBody {
            campaign: &parts[0],
            format: &parts[1],
            country: &parts[2],
            device: &parts[3],
            ctr: s.ctr,
            ctr_percent: s.ctr * 100.0,
            model_version: s.version,
            window_start_ms: s.window_ms,
            published_ms: s.published_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_decoded() {
        assert_eq!(query_param("campaign=C001&format=banner", "format").as_deref(), Some("banner"));
        assert_eq!(query_param("a=x%7Cy", "a").as_deref(), Some("x|y"));
        assert_eq!(query_param("a=1", "b"), None);
    }

    #[test]
    fn ctr_answers_in_the_documented_json_and_only_for_the_current_version() {
        let m = ServedPredictions::default();
        let s = Served { ctr: 0.0123, version: 7, window_ms: 1_700_000_000_000, published_ms: 1_700_000_012_345 };
        m.insert(("C\"1", "banner", "US", "iOS"), s);
        let q = "campaign=C%221&format=banner&country=US&device=iOS";
        assert_eq!(
            m.ctr(q).unwrap(),
            "{\"campaign\":\"C\\\"1\",\"format\":\"banner\",\"country\":\"US\",\"device\":\"iOS\",\"ctr\":0.0123,\
             \"ctr_percent\":1.23,\"model_version\":7,\"window_start_ms\":1700000000000,\
             \"published_ms\":1700000012345}\n"
        );
        let missing = m.ctr("campaign=C001").unwrap_err();
        assert!(matches!(missing, CtrError::BadRequest(_)), "{missing:?}");
        assert_eq!(
            missing.json(),
            "{\"error\":\"missing query parameter format (campaign, format, country, device)\"}\n"
        );
        let other = m.ctr("campaign=C002&format=banner&country=US&device=iOS").unwrap_err();
        assert_eq!(other, CtrError::NotFound("no prediction for C002|banner|US|iOS".into()));
        m.keep_version(8);
        assert_eq!(m.len(), 0);
        assert!(matches!(m.ctr(q), Err(CtrError::NotFound(_))));
    }
}
