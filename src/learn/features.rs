//! The feature set of the CTR model and its hashing into the weight table
//! (the hashing trick, Weinberger et al. 2009, as in Vowpal Wabbit).
//!
//! An example is a [`Context`]: campaign, format, country, device and UTC
//! hour of day. Its features are nine binary indicators: a bias, the five
//! main effects, and the crosses campaign × format, format × country and
//! format × device (the interactions the traffic has). Each is hashed with
//! xxh3 under a seed derived from the feature's name, so that equal values
//! of different features (or of a cross and a main effect) land in
//! unrelated slots, not systematically in the same one. The hashes are full
//! 64-bit values, stable across runs, versions and machines (format,
//! country and device are hashed by their names, not by enum position);
//! [`Features::slots`] folds them into `2^bits` slots. Nothing here
//! allocates.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::engine::{AdFormat, Country, Device};

/// Features per example.
pub const FEATURES: usize = 9;

/// The features' names, in slot order; each one's hash seed is the xxh3 of
/// its name.
pub const NAMES: [&str; FEATURES] =
    ["bias", "campaign", "format", "country", "device", "hour", "campaign*format", "format*country", "format*device"];

/// What the model sees of an example: one segment at one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context<'a> {
    pub campaign_id: &'a str,
    pub ad_format: AdFormat,
    pub country: Country,
    pub device: Device,
    /// UTC hour of day, 0..23 (see [`hour_of_day`]); any other value is
    /// just another (never trained) hour.
    pub hour: u8,
}

/// UTC hour of day (0..23) of a time in microseconds since the epoch, e.g.
/// a window's start.
pub fn hour_of_day(timestamp_us: i64) -> u8 {
    // rem_euclid(24) is in 0..24, so the cast cannot truncate.
    timestamp_us.div_euclid(3_600_000_000).rem_euclid(24) as u8
}

/// The 64-bit hashes of an example's features (index as [`NAMES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub hashes: [u64; FEATURES],
}

/// An example's features folded into `2^bits` slots: distinct slot
/// indices with how many features fell in each (a hash collision inside
/// one example gives a count of 2, i.e. x_i = 2, as the hashing trick
/// defines it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    index: [u32; FEATURES],
    count: [u8; FEATURES],
    len: usize,
}

impl Slots {
    /// `(slot, x_i)` pairs, slots distinct.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.index[..self.len].iter().zip(&self.count[..self.len]).map(|(&i, &c)| (i as usize, f64::from(c)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn seed(name: &str) -> u64 {
    xxh3_64(name.as_bytes())
}

/// The hash of `parts` under the seed of `name`: each part is hashed with
/// the previous hash as its seed, so ("ab", "c") and ("a", "bc") differ.
fn hash(name: &str, parts: &[&[u8]]) -> u64 {
    parts.iter().fold(seed(name), |h, p| xxh3_64_with_seed(p, h))
}

impl Features {
    pub fn of(c: &Context<'_>) -> Features {
        let campaign = c.campaign_id.as_bytes();
        let format = c.ad_format.as_str().as_bytes();
        let country = c.country.as_str().as_bytes();
        let device = c.device.as_str().as_bytes();
        let values: [&[&[u8]]; FEATURES] = [
            &[],
            &[campaign],
            &[format],
            &[country],
            &[device],
            &[&[c.hour]],
            &[campaign, format],
            &[format, country],
            &[format, device],
        ];
        Features { hashes: std::array::from_fn(|k| hash(NAMES[k], values[k])) }
    }

    /// The slots in a table of `2^bits` (`bits` in 1..=32): the low bits of
    /// each hash, duplicates merged.
    pub fn slots(&self, bits: u8) -> Slots {
        let mask = if bits >= 32 { u64::from(u32::MAX) } else { (1u64 << bits) - 1 };
        let mut out = Slots { index: [0; FEATURES], count: [0; FEATURES], len: 0 };
        for h in self.hashes {
            // Masked to at most 32 bits, so the cast keeps every bit.
            let i = (h & mask) as u32;
            match out.index[..out.len].iter().position(|&j| j == i) {
                Some(k) => out.count[k] += 1,
                None => {
                    out.index[out.len] = i;
                    out.count[out.len] = 1;
                    out.len += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(campaign_id: &str) -> Context<'_> {
        Context { campaign_id, ad_format: AdFormat::Banner, country: Country::Us, device: Device::Ios, hour: 9 }
    }

    #[test]
    fn hashes_are_stable_and_seeded_per_feature() {
        let f = Features::of(&ctx("C001"));
        assert_eq!(f, Features::of(&ctx("C001")));
        // Pinned: a model snapshot is only meaningful if these never change.
        assert_eq!(f.hashes[0], xxh3_64(b"bias"), "the bias is its seed");
        let format_seed = xxh3_64(b"format");
        assert_eq!(f.hashes[2], xxh3_64_with_seed(b"banner", format_seed));
        // Every feature hashes differently, also where the value bytes agree.
        let distinct: std::collections::BTreeSet<u64> = f.hashes.into_iter().collect();
        assert_eq!(distinct.len(), FEATURES);
        // Only the campaign's features move with the campaign.
        let g = Features::of(&ctx("C002"));
        let moved: Vec<&str> = (0..FEATURES).filter(|&k| f.hashes[k] != g.hashes[k]).map(|k| NAMES[k]).collect();
        assert_eq!(moved, ["campaign", "campaign*format"]);
    }

    #[test]
    fn crosses_do_not_confuse_their_parts() {
        assert_ne!(hash("x", &[b"ab", b"c"]), hash("x", &[b"a", b"bc"]));
        assert_ne!(hash("x", &[b"a", b"b"]), hash("y", &[b"a", b"b"]));
    }

    #[test]
    fn slots_fold_hashes_and_merge_collisions() {
        let f = Features { hashes: [0, 1, 2, 3, 4, 5, 6, 7, 9] };
        let s = f.slots(3); // 9 & 7 = 1 collides with 1
        let pairs: Vec<(usize, f64)> = s.iter().collect();
        assert_eq!(pairs, [(0, 1.0), (1, 2.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0), (6, 1.0), (7, 1.0)]);
        assert_eq!(s.iter().map(|(_, x)| x).sum::<f64>(), FEATURES as f64);
        let one = f.slots(1);
        assert_eq!(one.iter().collect::<Vec<_>>(), [(0, 4.0), (1, 5.0)]);
        let real = Features::of(&ctx("C001")).slots(20);
        assert_eq!(real.len(), FEATURES, "no collision among one example's features at 20 bits");
        assert!(real.iter().all(|(i, _)| i < 1 << 20));
    }

    #[test]
    fn hour_of_day_is_utc() {
        assert_eq!(hour_of_day(0), 0);
        assert_eq!(hour_of_day(3_600_000_000 * 25 + 1), 1);
        assert_eq!(hour_of_day(-1), 23);
        assert_eq!(hour_of_day(1_765_324_800_000_000 + 13 * 3_600_000_000), 13);
    }
}
