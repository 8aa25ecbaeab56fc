//! The learner's bookkeeping: which windows the model has learned, and how
//! much of each, so that every counted event is learned exactly once.
//!
//! `adstream learn` feeds it the closed segment windows of ClickHouse in
//! time order ([`Learner::learn_window`]): each segment of a window is
//! predicted first (progressive validation, [`Quality`]), then learned as
//! one aggregated example. A window is learned when it is closed on every
//! partition that is not idle, so a partition that stopped sending does
//! not hold the model back; the rows of such a partition can still change
//! after its window was learned (it wakes up, or its windows were only
//! fired, not closed). So the learner keeps, per window still open to
//! revision, the counts it learned per segment (the **ledger**), and when
//! it reads such a window again it learns the difference
//! ([`Learner::revise`]): never a count twice. Once a window is closed on
//! every partition ([`Learner::settle`]) it cannot change any more and
//! leaves the ledger.
//!
//! Everything here is plain data, saved whole as one snapshot
//! ([`Learner::to_bytes`]): the model, its counters, `learned_through` and
//! the ledger change together, so a learner restored from any snapshot
//! knows exactly what its model has learned, and relearns what came after.

use std::collections::{BTreeMap, HashMap};

use super::features::{hour_of_day, Context, Features};
use super::ftrl::{Ftrl, Params, ParamsError};
use super::quality::{Quality, Report};
use super::snapshot::SnapshotError;
use crate::engine::{AdFormat, Country, Device};

/// One segment: what the model predicts for, across hours (the engine's
/// one segment type).
pub use crate::engine::Segment;

/// A segment's features at a time (the hour of day of `at_us`).
pub fn features(segment: &Segment, at_us: i64) -> Features {
    Features::of(&Context {
        campaign_id: &segment.campaign_id,
        ad_format: segment.ad_format,
        country: segment.country,
        device: segment.device,
        hour: hour_of_day(at_us),
    })
}

/// One segment's counts in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub segment: Segment,
    pub impressions: u64,
    pub clicks: u64,
}

/// One window of the segment rollup, as read from ClickHouse.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
    pub examples: Vec<Example>,
}

/// A segment's prediction, made before the window was learned, beside what
/// the window observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub segment: Segment,
    /// Predicted clicks per impression.
    pub p: f64,
    pub impressions: u64,
    pub clicks: u64,
}

/// What learning a new window did.
#[derive(Debug, Clone)]
pub struct Learned {
    pub start_us: i64,
    pub end_us: i64,
    /// The model version after it.
    pub version: u64,
    pub quality: Report,
    pub predictions: Vec<Prediction>,
}

/// What revising a learned window did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Revised {
    /// Segments whose counts grew, learned as their difference.
    pub examples: u64,
    pub impressions: u64,
    pub clicks: u64,
    /// Segments whose counts went *down* (cannot happen with adstream's
    /// tables; counted, not learned).
    pub shrunk: u64,
}

/// Why a window was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnError {
    /// Not newer than the newest learned window.
    NotNewer { start_us: i64, learned_through: i64 },
}

impl std::fmt::Display for LearnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LearnError::NotNewer { start_us, learned_through } => {
                write!(f, "window {start_us} is not newer than the newest learned window {learned_through}")
            }
        }
    }
}

impl std::error::Error for LearnError {}

/// The learned counts of one window still open to revision.
type Ledger = BTreeMap<i64, (i64, HashMap<Segment, (u64, u64)>)>;

/// The model with its record of what it learned (see the module docs).
#[derive(Debug, Clone)]
pub struct Learner {
    model: Ftrl,
    /// Start of the newest window learned.
    learned_through: Option<i64>,
    /// Bumped by every step that changed the model.
    version: u64,
    windows: u64,
    revisions: u64,
    ledger: Ledger,
    /// Windows starting at or before it are out of revision (closed
    /// everywhere, or past the horizon); those after it, up to
    /// `learned_through`, are open: in the ledger, or empty when they were
    /// passed (learned as a whole if rows come).
    settled_through: Option<i64>,
}

/// One window let go by [`Learner::settle`], with what was learned of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetGo {
    pub start_us: i64,
    pub end_us: i64,
    pub impressions: u64,
    pub clicks: u64,
    /// Closed everywhere (false: given up on past the revision horizon).
    pub closed: bool,
}

/// What [`Learner::settle`] let go of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settled {
    /// Windows now closed everywhere.
    pub closed: u64,
    /// Windows given up on while still open somewhere (older than the
    /// revision horizon): a later change to them will not be learned.
    pub abandoned: u64,
    /// Each window let go, in order.
    pub windows: Vec<LetGo>,
}

/// Why a learner cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LearnerError {
    /// The model's parameters are refused (the model's own message).
    #[error(transparent)]
    Params(#[from] ParamsError),
}

impl Learner {
    pub fn new(params: Params) -> Result<Learner, LearnerError> {
        Ok(Learner {
            model: Ftrl::new(params)?,
            learned_through: None,
            version: 0,
            windows: 0,
            revisions: 0,
            ledger: Ledger::new(),
            settled_through: None,
        })
    }

    pub fn model(&self) -> &Ftrl {
        &self.model
    }
    pub fn learned_through(&self) -> Option<i64> {
        self.learned_through
    }
    pub fn version(&self) -> u64 {
        self.version
    }
    /// New windows learned.
    pub fn windows(&self) -> u64 {
        self.windows
    }
    /// Differences learned in windows learned before.
    pub fn revisions(&self) -> u64 {
        self.revisions
    }
    /// Windows still open to revision (start times, ascending).
    pub fn open_windows(&self) -> impl Iterator<Item = i64> + '_ {
        self.ledger.keys().copied()
    }
    /// Windows starting at or before it are out of revision (see
    /// [`Learner::settle`]).
    pub fn settled_through(&self) -> Option<i64> {
        self.settled_through
    }

    /// Whether a window starting at `start_us` is open to revision: learned
    /// or passed, and not settled.
    pub fn is_open(&self, start_us: i64) -> bool {
        self.learned_through.is_some_and(|t| start_us <= t) && self.settled_through.is_none_or(|s| start_us > s)
    }

    /// Predicted clicks per impression of `segment` at `at_us`.
    pub fn predict(&self, segment: &Segment, at_us: i64) -> f64 {
        self.model.predict(&features(segment, at_us))
    }

    /// Learns a window newer than every learned one: predicts every
    /// segment first (scored into the window's quality), then learns them.
    pub fn learn_window(&mut self, w: &Window) -> Result<Learned, LearnError> {
        if let Some(t) = self.learned_through {
            if w.start_us <= t {
                return Err(LearnError::NotNewer { start_us: w.start_us, learned_through: t });
            }
        }
        let mut quality = Quality::new();
        let mut predictions = Vec::with_capacity(w.examples.len());
        let mut counts = HashMap::with_capacity(w.examples.len());
        // Every segment is scored by the model as it was before the window
        // (progressive validation per window), then the window is learned.
        let features: Vec<_> = w.examples.iter().map(|e| features(&e.segment, w.start_us)).collect();
        let before: Vec<f64> = features.iter().map(|x| self.model.predict(x)).collect();
        for ((e, x), &p) in w.examples.iter().zip(&features).zip(&before) {
            self.model.learn(x, e.impressions, e.clicks);
            quality.add(p, e.impressions, e.clicks);
            predictions.push(Prediction {
                segment: e.segment.clone(),
                p,
                impressions: e.impressions,
                clicks: e.clicks,
            });
            let c = counts.entry(e.segment.clone()).or_insert((0u64, 0u64));
            c.0 += e.impressions;
            c.1 += e.clicks;
        }
        self.ledger.insert(w.start_us, (w.end_us, counts));
        self.learned_through = Some(w.start_us);
        self.windows += 1;
        self.version += 1;
        Ok(Learned {
            start_us: w.start_us,
            end_us: w.end_us,
            version: self.version,
            quality: quality.report(),
            predictions,
        })
    }

    /// Reads a learned window again and learns what grew since. A window
    /// open to revision but not in the ledger had no rows when it was
    /// passed: all of it is learned (and it joins the ledger). A settled
    /// window, or one not reached yet, is left alone: `None`.
    pub fn revise(&mut self, w: &Window) -> Option<Revised> {
        if !self.is_open(w.start_us) {
            return None;
        }
        let (_, learned) = self.ledger.entry(w.start_us).or_insert_with(|| (w.end_us, HashMap::new()));
        let mut r = Revised::default();
        for e in &w.examples {
            let had = learned.get(&e.segment).copied().unwrap_or((0, 0));
            if e.impressions < had.0 || e.clicks < had.1 {
                r.shrunk += 1;
                continue;
            }
            let (di, dc) = (e.impressions - had.0, e.clicks - had.1);
            if di == 0 && dc == 0 {
                continue;
            }
            self.model.learn(&features(&e.segment, w.start_us), di, dc);
            learned.insert(e.segment.clone(), (e.impressions, e.clicks));
            r.examples += 1;
            r.impressions += di;
            r.clicks += dc;
        }
        if r.examples > 0 {
            self.revisions += 1;
            self.version += 1;
        }
        Some(r)
    }

    /// Lets go of the windows that can no longer change: those starting at
    /// or before `closed_through` (closed on every partition), and those
    /// starting before `horizon_us` whatever their state; the settled line
    /// moves past both (never past `learned_through`, never back).
    pub fn settle(&mut self, closed_through: Option<i64>, horizon_us: i64) -> Settled {
        let mut s = Settled::default();
        while let Some((&start, _)) = self.ledger.first_key_value() {
            let closed = closed_through.is_some_and(|c| start <= c);
            if closed {
                s.closed += 1;
            } else if start < horizon_us {
                s.abandoned += 1;
            } else {
                break;
            }
            if let Some((end_us, counts)) = self.ledger.remove(&start) {
                let (impressions, clicks) = counts.values().fold((0, 0), |(i, c), (si, sc)| (i + si, c + sc));
                s.windows.push(LetGo { start_us: start, end_us, impressions, clicks, closed });
            }
        }
        if let Some(t) = self.learned_through {
            let line = closed_through.unwrap_or(i64::MIN).max(horizon_us.saturating_sub(1)).min(t);
            if self.settled_through.is_none_or(|old| line > old) {
                self.settled_through = Some(line);
            }
        }
        s
    }

    /// The snapshot bytes: see [`Learner::from_bytes`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.learned_through.unwrap_or(NONE).to_le_bytes());
        for v in [self.version, self.windows, self.revisions] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.settled_through.unwrap_or(NONE).to_le_bytes());
        out.extend_from_slice(&(self.ledger.len() as u32).to_le_bytes());
        for (start, (end, counts)) in &self.ledger {
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&end.to_le_bytes());
            out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
            let mut sorted: Vec<_> = counts.iter().collect();
            sorted.sort();
            for (s, (i, c)) in sorted {
                let name = s.campaign_id.as_bytes();
                let len = name.len().min(u16::MAX as usize);
                out.extend_from_slice(&(len as u16).to_le_bytes());
                out.extend_from_slice(&name[..len]);
                out.extend_from_slice(&[s.ad_format.index() as u8, s.country.index() as u8, s.device.index() as u8]);
                out.extend_from_slice(&i.to_le_bytes());
                out.extend_from_slice(&c.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.model.to_bytes());
        out
    }

    /// A learner from snapshot bytes, everything checked:
    ///
    /// ```text
    /// magic "ADLR", version 2 (u8), learned_through i64 (i64::MIN: none),
    /// version, windows, revisions (u64 each), settled_through i64
    /// (i64::MIN: none; absent in version 1, read as learned_through: a
    /// window missing from its ledger is not revised),
    /// ledger windows u32; per window: start i64, end i64, segments u32;
    ///   per segment: campaign length u16 + bytes, format, country,
    ///   device (u8 each, their index), impressions u64, clicks u64
    /// the model (src/learn/snapshot.rs) to the end
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Learner, SnapshotError> {
        let mut r = Cursor(bytes);
        if r.take(4)? != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        let v = r.u8()?;
        if v != VERSION && v != 1 {
            return Err(SnapshotError::Version(v));
        }
        let through = r.i64()?;
        let (version, windows, revisions) = (r.u64()?, r.u64()?, r.u64()?);
        // Version 1 had no settled line: everything learned and not in the
        // ledger was settled.
        let settled = if v == 1 { NONE } else { r.i64()? };
        let mut ledger = Ledger::new();
        for _ in 0..r.u32()? {
            let (start, end) = (r.i64()?, r.i64()?);
            let n = r.u32()?;
            let mut counts = HashMap::with_capacity(n.min(1 << 20) as usize);
            for _ in 0..n {
                let len = r.u16()? as usize;
                let campaign_id = std::str::from_utf8(r.take(len)?)
                    .map_err(|_| SnapshotError::Params("a ledger campaign is not UTF-8".into()))?
                    .to_string();
                let bad = |what: &str| SnapshotError::Params(format!("a ledger {what} index is out of range"));
                let ad_format = *AdFormat::ALL.get(r.u8()? as usize).ok_or_else(|| bad("format"))?;
                let country = *Country::ALL.get(r.u8()? as usize).ok_or_else(|| bad("country"))?;
                let device = *Device::ALL.get(r.u8()? as usize).ok_or_else(|| bad("device"))?;
                let (i, c) = (r.u64()?, r.u64()?);
                counts.insert(Segment { campaign_id, ad_format, country, device }, (i, c));
            }
            ledger.insert(start, (end, counts));
        }
        let model = Ftrl::from_bytes(r.0)?;
        let learned_through = (through != NONE).then_some(through);
        let settled_through = match (settled != NONE).then_some(settled) {
            None if v == 1 => ledger.keys().next().map_or(learned_through, |first| Some(first - 1)),
            s => s,
        };
        Ok(Learner { model, learned_through, version, windows, revisions, ledger, settled_through })
    }
}

const MAGIC: &[u8; 4] = b"ADLR";
const VERSION: u8 = 2;
const NONE: i64 = i64::MIN;

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.0.len() < n {
            return Err(SnapshotError::Length { expected: n, actual: self.0.len() });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(c: &str, f: AdFormat) -> Segment {
        Segment { campaign_id: c.into(), ad_format: f, country: Country::ALL[0], device: Device::ALL[0] }
    }

    fn window(start_s: i64, rows: &[(Segment, u64, u64)]) -> Window {
        Window {
            start_us: start_s * 1_000_000,
            end_us: (start_s + 10) * 1_000_000,
            examples: rows
                .iter()
                .map(|(s, i, c)| Example { segment: s.clone(), impressions: *i, clicks: *c })
                .collect(),
        }
    }

    #[test]
    fn refused_parameters_are_a_typed_error_with_the_model_s_message() {
        let bad = Params { bits: 0, ..Params::default() };
        let Err(e) = Learner::new(bad) else { panic!("bits 0 is refused") };
        let LearnerError::Params(inner) = &e;
        assert_eq!(Some(inner), Ftrl::new(bad).err().as_ref());
        assert_eq!(inner, &ParamsError::Bits(0));
        assert!(e.to_string().starts_with("bits 0 outside 1..="), "{e}");
        assert!(Learner::new(Params::default()).is_ok());
    }

    fn learner() -> Learner {
        Learner::new(Params { bits: 12, ..Params::default() }).unwrap()
    }

    #[test]
    fn a_revision_learns_only_the_difference() {
        let (a, b) = (seg("C001", AdFormat::Banner), seg("C002", AdFormat::Interstitial));
        let mut l = learner();
        l.learn_window(&window(0, &[(a.clone(), 100, 5)])).unwrap();
        assert_eq!(l.model().counters().impressions, 100);
        // Read again unchanged: nothing learned, version unchanged.
        let v = l.version();
        assert_eq!(l.revise(&window(0, &[(a.clone(), 100, 5)])), Some(Revised::default()));
        assert_eq!(l.version(), v);
        // It grew, and a new segment appeared: the difference only.
        let r = l.revise(&window(0, &[(a.clone(), 130, 7), (b.clone(), 10, 1)])).unwrap();
        assert_eq!((r.examples, r.impressions, r.clicks), (2, 40, 3));
        let c = l.model().counters();
        assert_eq!((c.impressions, c.clicks), (140, 8));
        // Once settled, a window is never revised again.
        let s = l.settle(Some(0), i64::MIN);
        assert_eq!((s.closed, s.abandoned, s.windows.len()), (1, 0, 1));
        assert_eq!((s.windows[0].impressions, s.windows[0].clicks, s.windows[0].closed), (140, 8, true));
        assert_eq!(l.revise(&window(0, &[(a, 500, 50)])), None);
        assert_eq!(l.model().counters().impressions, 140);
    }

    #[test]
    fn a_window_is_scored_by_the_model_from_before_it() {
        let (a, b) = (seg("C001", AdFormat::Banner), seg("C001", AdFormat::Interstitial));
        let mut l = learner();
        l.learn_window(&window(0, &[(a.clone(), 100, 30)])).unwrap();
        let (pa, pb) = (l.predict(&a, 10_000_000), l.predict(&b, 10_000_000));
        let learned = l.learn_window(&window(10, &[(a.clone(), 100, 1), (b.clone(), 100, 1)])).unwrap();
        assert_eq!(learned.predictions.iter().map(|p| p.p).collect::<Vec<_>>(), vec![pa, pb]);
        assert_ne!(l.predict(&b, 10_000_000), pb, "and then learned it");
    }

    #[test]
    fn an_older_window_is_refused_and_shrinking_is_not_learned() {
        let a = seg("C001", AdFormat::Banner);
        let mut l = learner();
        l.learn_window(&window(10, &[(a.clone(), 50, 2)])).unwrap();
        assert!(l.learn_window(&window(10, &[(a.clone(), 50, 2)])).is_err());
        assert!(l.learn_window(&window(0, &[(a.clone(), 50, 2)])).is_err());
        let r = l.revise(&window(10, &[(a, 40, 2)])).unwrap();
        assert_eq!((r.shrunk, r.examples), (1, 0));
        assert_eq!(l.model().counters().impressions, 50);
    }

    #[test]
    fn settle_abandons_only_past_the_horizon() {
        let a = seg("C001", AdFormat::Banner);
        let mut l = learner();
        for s in [0, 10, 20, 30] {
            l.learn_window(&window(s, &[(a.clone(), 1, 0)])).unwrap();
        }
        // Closed everywhere through 0; the horizon at 20 s gives up on 10.
        let s = l.settle(Some(0), 20_000_000);
        assert_eq!((s.closed, s.abandoned), (1, 1));
        assert_eq!(
            s.windows.iter().map(|w| (w.start_us, w.closed)).collect::<Vec<_>>(),
            [(0, true), (10_000_000, false)]
        );
        assert_eq!(l.settled_through(), Some(19_999_999));
        assert_eq!(l.open_windows().collect::<Vec<_>>(), vec![20_000_000, 30_000_000]);
    }

    #[test]
    fn a_window_passed_empty_is_learned_whole_when_rows_come_until_settled() {
        let a = seg("C001", AdFormat::Banner);
        let mut l = learner();
        l.learn_window(&window(0, &[(a.clone(), 10, 1)])).unwrap();
        // Window 10 had no rows when the frontier passed it.
        l.learn_window(&window(20, &[(a.clone(), 10, 1)])).unwrap();
        let r = l.revise(&window(10, &[(a.clone(), 7, 2)])).unwrap();
        assert_eq!((r.examples, r.impressions, r.clicks), (1, 7, 2));
        // Once in the ledger, only its difference.
        let r = l.revise(&window(10, &[(a.clone(), 9, 2)])).unwrap();
        assert_eq!((r.impressions, r.clicks), (2, 0));
        // Not reached yet: not a revision.
        assert_eq!(l.revise(&window(30, &[(a.clone(), 1, 0)])), None);
        // Settled through 10: window 10 is out, and so would an empty one be.
        l.settle(Some(10_000_000), i64::MIN);
        assert_eq!(l.revise(&window(10, &[(a.clone(), 90, 2)])), None);
        assert_eq!(l.model().counters().impressions, 29);
        // The settled line survives a snapshot, and never moves back.
        let r = Learner::from_bytes(&l.to_bytes()).unwrap();
        assert_eq!(r.settled_through(), Some(10_000_000));
        l.settle(Some(0), i64::MIN);
        assert_eq!(l.settled_through(), Some(10_000_000));
    }

    #[test]
    fn a_snapshot_restores_everything_and_corruption_is_refused() {
        let (a, b) = (seg("C001", AdFormat::Banner), seg("Cé", AdFormat::RewardedVideo));
        let mut l = learner();
        l.learn_window(&window(0, &[(a.clone(), 100, 5), (b.clone(), 7, 3)])).unwrap();
        l.learn_window(&window(10, &[(a.clone(), 80, 4)])).unwrap();
        l.revise(&window(0, &[(a.clone(), 110, 5), (b.clone(), 7, 3)]));
        let bytes = l.to_bytes();
        let mut r = Learner::from_bytes(&bytes).unwrap();
        assert_eq!(r.to_bytes(), bytes);
        assert_eq!((r.learned_through(), r.version(), r.windows(), r.revisions()), (Some(10_000_000), 3, 2, 1));
        assert_eq!(r.model(), l.model());
        // The restored ledger knows what was learned: the same revision
        // learns the same difference on both.
        let next = window(0, &[(a.clone(), 120, 6), (b, 7, 3)]);
        assert_eq!(r.revise(&next), l.revise(&next));
        assert_eq!(r.model(), l.model());
        for cut in [0, 3, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(Learner::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert_eq!(Learner::from_bytes(&bad).unwrap_err(), SnapshotError::NotASnapshot);
    }
}
