//! [`Checkpoint`]: where a partition resumes, encoded as Kafka commit
//! metadata.

use super::Held;

/// Where to resume a partition and what its clocks were there.
///
/// Two offsets: `offset`, committed to Kafka, is where the base windows
/// need the stream again (every event before it is in rows of closed base
/// windows), so the group's lag means what operators expect; `resume_offset`
/// (at or before it) is where a restart reads from, which also rebuilds the
/// longer windows still open (a 1 h rollup needs up to an hour back). It
/// travels in the commit metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The Kafka offset to commit.
    pub offset: i64,
    /// The next message to read after a restart (`<= offset`).
    pub resume_offset: i64,
    /// Max event time seen before `resume_offset` (None: no event yet).
    pub max_ts_at_resume: Option<i64>,
    /// Max event time seen overall; every window closed at that watermark
    /// (`end + lateness <= closed_max_ts`) has been emitted as final.
    pub closed_max_ts: Option<i64>,
    /// Max event time seen before `offset` (metadata token `bat=`), when
    /// known: with it a restart can read from `offset` and seed the longer
    /// windows from the final base rows downstream
    /// ([`PartitionWindows::restore_seeded`]). `None`: not recorded (older
    /// metadata), or a checkpoint whose `offset` has no known clock.
    pub base_at: Option<Option<i64>>,
    /// The event held for corroboration before `resume_offset`, if any
    /// (metadata token `held=TS:SUPPORT`, absent when none), so a replay
    /// moves the watermark exactly as the first pass did.
    pub held_at_resume: Option<Held>,
    /// The event held for corroboration before `offset` (metadata token
    /// `bheld=TS:SUPPORT`, written beside `bat=`), for a restart that reads
    /// on from `offset` ([`PartitionWindows::restore_seeded`]).
    pub held_at_base: Option<Held>,
}

impl Checkpoint {
    const PREFIX: &'static str = "adstream/2";

    /// Encodes the checkpoint as Kafka commit metadata (well under the
    /// broker's 4 KiB `offset.metadata.max.bytes`). The prefix carries the
    /// meaning of the clocks: `adstream/1` (watermark = max − lateness) is
    /// not read back as `/2`, so an upgrade starts those partitions fresh
    /// from the committed offset rather than misreading them.
    pub fn metadata(&self) -> String {
        fn t(v: Option<i64>) -> String {
            v.map_or_else(|| "-".to_string(), |v| v.to_string())
        }
        let mut m = format!("{} at={} closed={}", Self::PREFIX, t(self.max_ts_at_resume), t(self.closed_max_ts));
        if self.resume_offset != self.offset {
            // `from=` first: older readers take the fourth token as it.
            m.push_str(&format!(" from={}", self.resume_offset));
            if let Some(b) = self.base_at {
                m.push_str(&format!(" bat={}", t(b)));
            }
            if let Some(h) = self.held_at_base {
                m.push_str(&format!(" bheld={}:{}", h.ts, h.support));
            }
        }
        if let Some(h) = self.held_at_resume {
            m.push_str(&format!(" held={}:{}", h.ts, h.support));
        }
        m
    }

    /// A checkpoint that resumes where it commits.
    pub fn at(offset: i64, max_ts_at_resume: Option<i64>, closed_max_ts: Option<i64>) -> Self {
        Checkpoint {
            offset,
            resume_offset: offset,
            max_ts_at_resume,
            closed_max_ts,
            base_at: Some(max_ts_at_resume),
            held_at_resume: None,
            held_at_base: None,
        }
    }

    /// Decodes commit metadata written by [`Checkpoint::metadata`]. Returns
    /// `None` for metadata of another writer (or none at all): the partition
    /// then starts fresh from the committed offset.
    pub fn from_metadata(offset: i64, metadata: &str) -> Option<Checkpoint> {
        let mut parts = metadata.split(' ');
        if parts.next()? != Self::PREFIX {
            return None;
        }
        fn t(v: &str) -> Option<Option<i64>> {
            if v == "-" {
                Some(None)
            } else {
                v.parse().ok().map(Some)
            }
        }
        let at = t(parts.next()?.strip_prefix("at=")?)?;
        let closed = t(parts.next()?.strip_prefix("closed=")?)?;
        // Optional tokens, in this order. `from=` absent (a checkpoint
        // without longer windows open, or written before rollups): resume
        // where committed. `held=` absent: no event held (or written before
        // the rule).
        let mut rest = parts.peekable();
        let resume_offset = match rest.next_if(|t| t.starts_with("from=")) {
            Some(f) => f.strip_prefix("from=")?.parse().ok().filter(|&r| r <= offset)?,
            None => offset,
        };
        // Optional trailing `key=value` tokens after `from=`; unknown keys
        // are ignored. `held=` absent: no event held (or written before the
        // rule). `bat=`/`bheld=`: the clock before the commit offset.
        let mut base_at = (resume_offset == offset).then_some(at);
        let (mut held, mut held_at_base) = (None, None);
        fn held_token(v: &str) -> Option<Held> {
            let (ts, support) = v.split_once(':')?;
            Some(Held { ts: ts.parse().ok()?, support: support.parse().ok()? })
        }
        for tok in rest {
            if let Some(v) = tok.strip_prefix("bat=") {
                base_at = Some(t(v)?);
            } else if let Some(v) = tok.strip_prefix("held=") {
                held = Some(held_token(v)?);
            } else if let Some(v) = tok.strip_prefix("bheld=") {
                held_at_base = Some(held_token(v)?);
            }
        }
        if resume_offset == offset {
            held_at_base = held;
        }
        Some(Checkpoint {
            offset,
            resume_offset,
            max_ts_at_resume: at,
            closed_max_ts: closed,
            base_at,
            held_at_resume: held,
            held_at_base,
        })
    }
}
