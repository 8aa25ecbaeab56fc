//! Which campaigns one partition has in open windows, and the limit on
//! distinct campaigns per base window.
//!
//! # Reclaiming campaign ids
//! Campaign ids are interned process-wide ([`Interner`]) as small integers
//! that index the windows' slot tables. A partition holds a reference to a
//! campaign from its first event until the watermark closes the last window
//! that campaign is in (the window of its latest event in the longest
//! rollup that keeps campaigns, or its base window); then it gives the
//! reference back, and an id no partition holds is reused. So campaigns
//! that start and end over weeks do not fill a table: what is interned is
//! what is present in open windows, and ids stay dense, which bounds the
//! slot tables (sized by the highest id) by the campaigns present too.
//!
//! # The limit: distinct campaigns per base window, per partition
//! At most [`MAX_CAMPAIGNS_PER_WINDOW`] distinct campaigns are counted in
//! one base window (`--window`) of one partition; an event of a further
//! campaign there is rejected (`too_many_campaigns`, to the dead-letter
//! topic), which keeps a producer sending a fresh campaign id per event
//! from growing memory without bound. The decision is a function of the
//! partition's messages only (the campaigns of the events before it in
//! that base window), never of the process's history, so a replay from a
//! checkpoint decides the same: the checkpoint resumes at or before the
//! first offset of every window still open, and a base window that started
//! before the resume offset lies inside longer windows that are closed
//! (its events there are replay skips either way). Events of a base window
//! already closed (late) are not subject to the limit; they are reported
//! late, as before.
//!
//! Behind that, the interner refuses a new id once [`MAX_LIVE_CAMPAIGNS`]
//! are alive over all partitions (many partitions each at the limit): a
//! last bound on memory, reached only by such an attack, and reported with
//! the same reason.

use std::collections::BTreeMap;

use crate::engine::event::Interner;

/// Most distinct campaigns counted in one base window of one partition.
pub const MAX_CAMPAIGNS_PER_WINDOW: usize = 100_000;

/// Most campaign ids alive at once over all partitions.
pub const MAX_LIVE_CAMPAIGNS: usize = 1_000_000;

/// The distinct campaigns of one base window: a bit per id, and the ids set
/// (to count them and clear the bits without sweeping the whole set).
#[derive(Debug, Default)]
struct BaseSet {
    bits: Vec<u64>,
    ids: Vec<u32>,
}

impl BaseSet {
    fn contains(&self, id: u32) -> bool {
        self.bits.get(id as usize / 64).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    fn insert(&mut self, id: u32) {
        let i = id as usize / 64;
        if i >= self.bits.len() {
            self.bits.resize(i + 1, 0);
        }
        self.bits[i] |= 1 << (id % 64);
        self.ids.push(id);
    }

    fn clear(&mut self) {
        for &id in &self.ids {
            self.bits[id as usize / 64] = 0;
        }
        self.ids.clear();
    }
}

/// The campaigns of one partition (see the module docs).
#[derive(Debug, Default)]
pub struct PartitionCampaigns {
    /// By campaign id: the watermark at which its last open window closes,
    /// or `None` while the partition does not hold it.
    until: Vec<Option<i64>>,
    /// By campaign id: the start of the last base window it was admitted
    /// to (it is in that window's set), so the usual event, in the same
    /// window as its campaign's last one, skips the map below. A base
    /// window never reopens once closed, and an id is released only after
    /// its windows closed, so a stale entry never matches an open window.
    last_base: Vec<i64>,
    /// Campaigns by the watermark that releases them. An entry whose
    /// campaign has a later `until` since is stale and skipped.
    expiry: BTreeMap<i64, Vec<u32>>,
    /// Distinct campaigns of each open base window, by its start.
    base: BTreeMap<i64, BaseSet>,
    /// Sets of closed base windows, cleared, kept for reuse (at most 2).
    spare: Vec<BaseSet>,
    /// Campaigns held.
    held: usize,
}

/// What [`PartitionCampaigns::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Its previous event was in the same base window: admitted then, and
    /// held then until that window's longest span closes, which is this
    /// event's too (every span is a multiple of the base window, epoch
    /// aligned), and no hold expires while its base window is open.
    Again,
    /// Admitted: hold it until its windows close.
    Admitted,
    /// The base window already has `limit` campaigns.
    Full,
}

impl PartitionCampaigns {
    /// Whether campaign `id` may be counted in the base window starting at
    /// `base_start`: it is already there ([`Admission::Again`] when its
    /// previous event was in that window too, the usual case, which the
    /// caller need not hold again), or the window has fewer than `limit`
    /// campaigns (then it is added).
    pub fn admit(&mut self, id: u32, base_start: i64, limit: usize) -> Admission {
        let i = id as usize;
        if self.last_base.get(i) == Some(&base_start) {
            return Admission::Again;
        }
        let spare = &mut self.spare;
        let set = self.base.entry(base_start).or_insert_with(|| spare.pop().unwrap_or_default());
        if !set.contains(id) {
            if set.ids.len() >= limit {
                return Admission::Full;
            }
            set.insert(id);
        }
        if i >= self.last_base.len() {
            self.last_base.resize(i + 1, i64::MIN);
        }
        self.last_base[i] = base_start;
        Admission::Admitted
    }

    /// Whether campaign `id` is held.
    pub fn is_held(&self, id: u32) -> bool {
        self.until.get(id as usize).is_some_and(Option::is_some)
    }

    /// Holds campaign `id` until the watermark reaches `until` (or later, if
    /// already held longer).
    pub fn hold(&mut self, id: u32, until: i64, interner: &mut Interner) {
        let i = id as usize;
        if i >= self.until.len() {
            self.until.resize(i + 1, None);
        }
        match self.until[i] {
            Some(u) if u >= until => {}
            held => {
                if held.is_none() {
                    interner.acquire(id);
                    self.held += 1;
                }
                self.until[i] = Some(until);
                self.expiry.entry(until).or_default().push(id);
            }
        }
    }

    /// Campaigns this partition holds.
    pub fn held(&self) -> usize {
        self.held
    }

    /// The watermark is now `wm`: forgets the base windows that closed
    /// (`base_close(start) <= wm`) and releases the campaigns whose last
    /// window closed.
    pub fn expire(&mut self, wm: i64, base_close: impl Fn(i64) -> i64, interner: &mut Interner) {
        while let Some(e) = self.base.first_entry() {
            if base_close(*e.key()) > wm {
                break;
            }
            let mut set = e.remove();
            if self.spare.len() < 2 {
                set.clear();
                self.spare.push(set);
            }
        }
        while let Some(e) = self.expiry.first_entry() {
            if *e.key() > wm {
                break;
            }
            let at = *e.key();
            for id in e.remove() {
                let slot = &mut self.until[id as usize];
                if *slot == Some(at) {
                    *slot = None;
                    self.held -= 1;
                    interner.release(id);
                }
            }
        }
    }

    /// Gives back every campaign (the partition is revoked).
    pub fn release_all(&mut self, interner: &mut Interner) {
        for (id, u) in self.until.iter_mut().enumerate() {
            if u.take().is_some() {
                interner.release(id as u32);
            }
        }
        self.held = 0;
        self.expiry.clear();
        self.base.clear();
        self.last_base.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_campaign_is_released_when_its_last_window_closes() {
        let mut i = Interner::with_capacity_limit(10);
        let mut c = PartitionCampaigns::default();
        let a = i.intern("A").unwrap();
        assert_ne!(c.admit(a, 0, 10), Admission::Full);
        c.hold(a, 100, &mut i);
        c.hold(a, 50, &mut i);
        c.hold(a, 200, &mut i);
        assert_eq!((c.held(), i.live()), (1, 1));
        c.expire(150, |s| s + 10, &mut i);
        assert_eq!((c.held(), i.live()), (1, 1), "the entry at 100 is stale");
        c.expire(200, |s| s + 10, &mut i);
        assert_eq!((c.held(), i.live()), (0, 0));
    }

    #[test]
    fn the_limit_counts_distinct_campaigns_per_base_window() {
        let mut c = PartitionCampaigns::default();
        assert_ne!(c.admit(1, 0, 2), Admission::Full);
        assert_ne!(c.admit(2, 0, 2), Admission::Full);
        assert_ne!(c.admit(1, 0, 2), Admission::Full, "already there");
        assert_eq!(c.admit(3, 0, 2), Admission::Full, "a third campaign");
        assert_ne!(c.admit(3, 10, 2), Admission::Full, "another window");
        let mut i = Interner::with_capacity_limit(10);
        c.expire(10, |s| s + 10, &mut i);
        assert_ne!(c.admit(3, 0, 2), Admission::Full, "a closed window's set is gone");
    }
}
