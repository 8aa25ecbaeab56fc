//! A global allocator that counts: the engine bench reports heap
//! allocations (and bytes) per event, which is how "no per-event heap
//! allocation" is checked rather than assumed; the scaling bench reports
//! the heap in use and its peak, which is how "memory grows with open
//! windows × keys, never with events" is checked.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Bytes currently allocated (requested sizes, not the allocator's rounding).
static LIVE: AtomicU64 = AtomicU64::new(0);
/// Highest `LIVE` since the last [`reset_peak`].
static PEAK: AtomicU64 = AtomicU64::new(0);

/// [`System`], plus relaxed counters bumped on every allocation
/// (reallocations count as one allocation of the new size).
pub struct Counting;

fn grew(by: usize) {
    let live = LIVE.fetch_add(by as u64, Relaxed) + by as u64;
    PEAK.fetch_max(live, Relaxed);
}

// SAFETY: forwards every call unchanged to `System`; the counters have no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        grew(layout.size());
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        grew(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        // Counted as the new block arriving before the old one leaves (the
        // worst case when the allocator has to move it).
        grew(new_size);
        LIVE.fetch_sub(layout.size() as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

/// (allocations, bytes requested) since the process started.
pub fn counters() -> (u64, u64) {
    (ALLOCS.load(Relaxed), BYTES.load(Relaxed))
}

/// Heap bytes in use now.
pub fn live() -> u64 {
    LIVE.load(Relaxed)
}

/// Highest heap bytes in use since the last [`reset_peak`].
pub fn peak() -> u64 {
    PEAK.load(Relaxed)
}

/// Starts a new peak measurement from the heap in use now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}
