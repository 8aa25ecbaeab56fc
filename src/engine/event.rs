//! The ad event as it travels on `ad-events`, and its low-cardinality
//! vocabularies.
//!
//! [`Event`] borrows its strings from the Kafka message buffer: parsing an
//! event allocates nothing unless a string contains a JSON escape.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

/// The ad formats the traffic model knows. Anything else is rejected, so a
/// typo upstream shows up in the rejection stats instead of as a new series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AdFormat {
    Banner,
    Interstitial,
    RewardedVideo,
}

impl AdFormat {
    pub const ALL: [AdFormat; 3] = [AdFormat::Banner, AdFormat::Interstitial, AdFormat::RewardedVideo];

    pub fn as_str(self) -> &'static str {
        match self {
            AdFormat::Banner => "banner",
            AdFormat::Interstitial => "interstitial",
            AdFormat::RewardedVideo => "rewarded_video",
        }
    }

    pub fn parse(s: &str) -> Option<AdFormat> {
        match s {
            "banner" => Some(AdFormat::Banner),
            "interstitial" => Some(AdFormat::Interstitial),
            "rewarded_video" => Some(AdFormat::RewardedVideo),
            _ => None,
        }
    }

    /// Dense index 0..3, used to key window cells without hashing.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Impression,
    Click,
}

impl EventType {
    pub const ALL: [EventType; 2] = [EventType::Impression, EventType::Click];

    /// Dense index 0..2, for per-type counters.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Impression => "impression",
            EventType::Click => "click",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        match s {
            "impression" => Some(EventType::Impression),
            "click" => Some(EventType::Click),
            _ => None,
        }
    }
}

/// The countries of the traffic model (each has its own revenue range).
/// Anything else is rejected (`unknown_country`), like an unknown format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Country {
    Us,
    Kr,
    Jp,
    Uk,
    De,
    Fr,
    Ca,
}

impl Country {
    pub const ALL: [Country; 7] =
        [Country::Us, Country::Kr, Country::Jp, Country::Uk, Country::De, Country::Fr, Country::Ca];

    pub fn as_str(self) -> &'static str {
        match self {
            Country::Us => "US",
            Country::Kr => "KR",
            Country::Jp => "JP",
            Country::Uk => "UK",
            Country::De => "DE",
            Country::Fr => "FR",
            Country::Ca => "CA",
        }
    }

    pub fn parse(s: &str) -> Option<Country> {
        // Matched as bytes: compiled to two byte compares, not a string
        // comparison per country.
        match s.as_bytes() {
            b"US" => Some(Country::Us),
            b"KR" => Some(Country::Kr),
            b"JP" => Some(Country::Jp),
            b"UK" => Some(Country::Uk),
            b"DE" => Some(Country::De),
            b"FR" => Some(Country::Fr),
            b"CA" => Some(Country::Ca),
            _ => None,
        }
    }

    /// Dense index 0..7.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The device platforms of the traffic model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Device {
    Ios,
    Android,
}

impl Device {
    pub const ALL: [Device; 2] = [Device::Ios, Device::Android];

    pub fn as_str(self) -> &'static str {
        match self {
            Device::Ios => "iOS",
            Device::Android => "Android",
        }
    }

    pub fn parse(s: &str) -> Option<Device> {
        match s {
            "iOS" => Some(Device::Ios),
            "Android" => Some(Device::Android),
            _ => None,
        }
    }

    /// Dense index 0..2.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A validated event. Only the fields the aggregation needs are kept;
/// `user_id` is type-checked and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    pub event_id: Cow<'a, str>,
    /// Event time, microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    pub campaign_id: Cow<'a, str>,
    pub ad_format: AdFormat,
    pub country: Country,
    pub device: Device,
    pub event_type: EventType,
    /// Revenue in micro-USD; zero on impressions.
    pub revenue_micros: i64,
}

/// Maps campaign ids to small integers so that window state is keyed by
/// `u32` instead of strings. Looking up a known id does not allocate.
///
/// Ids are reference counted and reused: each partition holds a reference
/// to every campaign it has in an open window (see
/// [`crate::engine::campaigns`]) and gives it back when the last of those
/// windows closes; an id nobody holds is forgotten and, once the names
/// snapshot of the next batch is taken ([`recycle`](Self::recycle)), handed
/// out again. So ids stay dense (at most the campaigns present at once),
/// and so do the window slot tables they index. The number of ids alive at
/// once is capped (`cap`), a last line behind the per-window limit.
#[derive(Debug)]
pub struct Interner {
    /// Ids of up to [`INLINE`] bytes (all real campaign ids), stored in the
    /// table itself: a lookup compares bytes in place instead of following
    /// a pointer to each candidate's string, which with tens of thousands of
    /// campaigns was a cache miss per event.
    short: HashMap<InlineKey, u32, SeededXxh3>,
    /// Longer ids.
    long: HashMap<Arc<str>, u32, SeededXxh3>,
    /// By id; a forgotten id keeps its old name until it is reused, so rows
    /// of a batch cut before that still resolve to it.
    names: Vec<Arc<str>>,
    /// References by id (partitions holding the campaign).
    refs: Vec<u32>,
    /// Forgotten ids, reusable.
    free: Vec<u32>,
    /// Forgotten since the last names snapshot: reusable after the next.
    pending: Vec<u32>,
    /// `names` as handed to batches; rebuilt only after a new id.
    snapshot: Option<Names>,
    cap: usize,
}
/// Campaign names by interned id, shared by the batches of a run: rows
/// carry the `u32` id, not a reference-counted name each (cloning one per
/// row was an atomic write to a scattered cache line per output row).
pub type Names = Arc<[Arc<str>]>;

/// Longest campaign id kept inline in the interner's table.
const INLINE: usize = 15;

/// A short string with its length in the first byte, zero-padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InlineKey([u8; INLINE + 1]);

impl InlineKey {
    fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let mut k = [0u8; INLINE + 1];
        k[0] = u8::try_from(b.len()).ok().filter(|&n| usize::from(n) <= INLINE)?;
        k[1..=b.len()].copy_from_slice(b);
        Some(InlineKey(k))
    }
}

impl std::hash::Hash for InlineKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // One write of the whole key: one XXH3 call per lookup.
        state.write(&self.0);
    }
}

impl Interner {
    pub fn with_capacity_limit(cap: usize) -> Self {
        Interner {
            short: HashMap::with_hasher(SeededXxh3::new()),
            long: HashMap::with_hasher(SeededXxh3::new()),
            names: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            pending: Vec::new(),
            snapshot: None,
            cap,
        }
    }

    /// Every name so far, by id (a forgotten id keeps its last name until
    /// it is reused).
    pub fn names(&mut self) -> Names {
        self.snapshot.get_or_insert_with(|| self.names.iter().cloned().collect()).clone()
    }

    /// The id of `name`, or `None` when `cap` ids are alive. A new id has
    /// no reference: give it one ([`acquire`](Self::acquire)) or drop it
    /// ([`release_if_unused`](Self::release_if_unused)).
    pub fn intern(&mut self, name: &str) -> Option<u32> {
        let key = InlineKey::new(name);
        let known = match &key {
            Some(k) => self.short.get(k),
            None => self.long.get(name),
        };
        if let Some(&id) = known {
            return Some(id);
        }
        if self.live() >= self.cap {
            return None;
        }
        let name: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => {
                self.names[id as usize] = name.clone();
                id
            }
            None => {
                let id = u32::try_from(self.names.len()).ok()?;
                self.names.push(name.clone());
                self.refs.push(0);
                id
            }
        };
        self.snapshot = None;
        match key {
            Some(k) => self.short.insert(k, id),
            None => self.long.insert(name, id),
        };
        Some(id)
    }

    /// Ids alive (interned and not forgotten).
    pub fn live(&self) -> usize {
        self.names.len() - self.free.len() - self.pending.len()
    }

    /// One more holder of `id`.
    pub fn acquire(&mut self, id: u32) {
        self.refs[id as usize] += 1;
    }

    /// One holder fewer; the last one forgets the id.
    pub fn release(&mut self, id: u32) {
        let r = &mut self.refs[id as usize];
        debug_assert!(*r > 0, "campaign {id} released more than acquired");
        *r = r.saturating_sub(1);
        self.release_if_unused(id);
    }

    /// Forgets `id` if nobody holds it (an event that found no open
    /// window, or was rejected after interning).
    pub fn release_if_unused(&mut self, id: u32) {
        if self.refs[id as usize] != 0 {
            return;
        }
        let name = &self.names[id as usize];
        let known = match InlineKey::new(name) {
            Some(k) => self.short.get(&k).copied(),
            None => self.long.get(&**name).copied(),
        };
        // Forget only once: the name maps to this id while it is alive.
        if known == Some(id) {
            match InlineKey::new(name) {
                Some(k) => self.short.remove(&k),
                None => self.long.remove(&**name),
            };
            self.pending.push(id);
        }
    }

    /// Makes the ids forgotten before the last [`names`](Self::names)
    /// snapshot reusable: call right after taking the snapshot that goes
    /// with a batch, so no row of a batch names a reused id.
    pub fn recycle(&mut self) {
        self.free.append(&mut self.pending);
    }

    pub fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }
}

/// XXH3 with a per-process random seed, for the interner: one lookup per
/// event, where SipHash (std's default) cost more than the rest of the
/// lookup. The random seed keeps what SipHash was there for: input cannot be
/// crafted to collide (campaign ids come from the wire).
#[derive(Debug, Clone)]
pub struct SeededXxh3(u64);

impl SeededXxh3 {
    fn new() -> Self {
        SeededXxh3(std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64))
    }
}

impl BuildHasher for SeededXxh3 {
    type Hasher = Xxh3Hasher;
    fn build_hasher(&self) -> Xxh3Hasher {
        Xxh3Hasher(self.0)
    }
}

/// Hashes each `write` with XXH3 seeded by the state so far (a `str` key is
/// one `write` of its bytes plus a one-byte terminator).
pub struct Xxh3Hasher(u64);

impl Hasher for Xxh3Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}

/// Reduces an `event_id` to the 128-bit key deduplication remembers. A
/// canonical lowercase UUID (what the generator and most producers send) is
/// decoded exactly, so two different UUIDs never share a key; any other id is
/// hashed with XXH3-128, where a collision among the ids of one window is
/// about as likely as two random UUIDs being equal.
pub fn event_key(id: &str) -> u128 {
    parse_uuid(id.as_bytes()).unwrap_or_else(|| xxhash_rust::xxh3::xxh3_128(id.as_bytes()))
}

fn parse_uuid(b: &[u8]) -> Option<u128> {
    let b: &[u8; 36] = b.try_into().ok()?;
    if b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    // The 32 hex digits, in order; a table lookup per digit, and one check
    // for a non-digit (0xff in the table) at the end instead of a branch each.
    let mut v: u128 = 0;
    let mut bad = 0u8;
    for part in [&b[0..8], &b[9..13], &b[14..18], &b[19..23], &b[24..36]] {
        for &c in part {
            let d = HEX[c as usize];
            bad |= d;
            v = (v << 4) | u128::from(d & 0x0f);
        }
    }
    (bad & 0xf0 == 0).then_some(v)
}

/// Lowercase hex digit values; 0xff for every other byte.
static HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabularies_round_trip() {
        for f in AdFormat::ALL {
            assert_eq!(AdFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(AdFormat::parse("Banner"), None);
        assert_eq!(AdFormat::parse("video"), None);
        for t in [EventType::Impression, EventType::Click] {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("conversion"), None);
    }

    #[test]
    fn interner_is_stable_and_capped() {
        let mut i = Interner::with_capacity_limit(2);
        assert_eq!(i.intern("C001"), Some(0));
        assert_eq!(i.intern("C002"), Some(1));
        assert_eq!(i.intern("C001"), Some(0));
        assert_eq!(i.intern("C003"), None);
        assert_eq!(&**i.name(1), "C002");
        assert_eq!(i.names().len(), 2);
    }

    #[test]
    fn released_ids_are_reused_only_after_the_next_snapshot() {
        let mut i = Interner::with_capacity_limit(2);
        let a = i.intern("C001").unwrap();
        i.acquire(a);
        i.acquire(a);
        let b = i.intern("C002").unwrap();
        i.acquire(b);
        i.release(a);
        assert_eq!(i.live(), 2, "still held once");
        i.release(a);
        assert_eq!(i.live(), 1);
        // Forgotten, but not reusable before the snapshot of the batch
        // whose rows may still carry it.
        let before = i.names();
        let c = i.intern("C003").unwrap();
        assert_ne!(c, a, "not reused before recycle");
        assert_eq!(i.intern("C004"), None, "cap counts live ids");
        i.acquire(c);
        assert_eq!(&*before[a as usize], "C001");
        i.recycle();
        i.release(b);
        let d = i.intern("C005").unwrap();
        assert_eq!(d, a, "reused after recycle");
        assert_eq!(&*before[a as usize], "C001", "an old snapshot keeps its names");
        assert_eq!(&*i.names()[d as usize], "C005");
        assert_eq!(i.intern("C001"), None, "C001 was forgotten; cap reached (C003, C005 alive, C002 pending)");
        i.recycle();
        i.release(c);
        assert_eq!(i.intern("C001"), Some(b), "a new id for a forgotten name, reusing C002's");
    }

    #[test]
    fn short_and_long_ids_intern_alike() {
        // 15 bytes are kept inline, 16 are not; padding must not make "a"
        // equal "a\0", nor a prefix equal the whole.
        let names = ["", "a", "a\0", "C001", "C0010", &"x".repeat(15), &"x".repeat(16), &"x".repeat(100), "é😀"];
        let mut i = Interner::with_capacity_limit(100);
        let ids: Vec<_> = names.iter().map(|n| i.intern(n).unwrap()).collect();
        assert_eq!(ids, (0..names.len() as u32).collect::<Vec<_>>(), "all distinct");
        for (n, &id) in names.iter().zip(&ids) {
            assert_eq!(i.intern(n), Some(id), "{n:?} again");
            assert_eq!(&**i.name(id), *n);
        }
    }

    #[test]
    fn event_keys_decode_uuids_exactly_and_hash_the_rest() {
        assert_eq!(event_key("00000000-0000-0000-0000-00000000002a"), 42);
        assert_eq!(event_key("ffffffff-ffff-ffff-ffff-ffffffffffff"), u128::MAX);
        let a = event_key("9f1c0a52-3b7e-4c1d-8e2f-0123456789ab");
        assert_ne!(a, event_key("9f1c0a52-3b7e-4c1d-8e2f-0123456789ac"));
        // Not canonical: hashed, so it differs from the lowercase form.
        assert_ne!(a, event_key("9F1C0A52-3B7E-4C1D-8E2F-0123456789AB"));
        assert_eq!(event_key("evt-1"), event_key("evt-1"));
        assert_ne!(event_key("evt-1"), event_key("evt-2"));
        assert_ne!(event_key(""), event_key("x"));
    }
}
