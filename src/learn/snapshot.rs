//! A model as bytes and back (for a future snapshot in ClickHouse):
//! compact (only the coordinates ever touched, `n_i > 0`, are written) and
//! versioned. Little-endian throughout:
//!
//! ```text
//! magic  "ADFT"                       4 bytes
//! version 1                           u8
//! bits                                u8
//! alpha, beta, l1, l2                 4 × f64
//! examples, impressions, clicks       3 × u64
//! coordinates                         u32
//! per coordinate, by ascending index: index u32, z f64, n f64   (20 bytes)
//! ```
//!
//! Reading checks everything a corrupt or foreign blob could get wrong:
//! magic, version, parameters, exact length, indices inside the table and
//! strictly ascending, z finite, n finite and positive.

use std::fmt;

use super::ftrl::{Counters, Ftrl, Params};

const MAGIC: &[u8; 4] = b"ADFT";
/// The version [`Ftrl::to_bytes`] writes and [`Ftrl::from_bytes`] reads.
pub const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 1 + 4 * 8 + 3 * 8 + 4;
const COORDINATE: usize = 4 + 8 + 8;

/// Why bytes are not a model.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotError {
    NotASnapshot,
    Version(u8),
    Params(String),
    Length { expected: usize, actual: usize },
    Coordinate { index: u32, reason: &'static str },
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NotASnapshot => write!(f, "not a model snapshot (no ADFT header)"),
            SnapshotError::Version(v) => write!(f, "model snapshot version {v}, this build reads {VERSION}"),
            SnapshotError::Params(e) => write!(f, "model snapshot parameters: {e}"),
            SnapshotError::Length { expected, actual } => {
                write!(f, "model snapshot is {actual} bytes, its header says {expected}")
            }
            SnapshotError::Coordinate { index, reason } => write!(f, "model snapshot coordinate {index}: {reason}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// Reads fixed-size little-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        // Callers check the length first; a short read yields zeros.
        let mut out = [0u8; N];
        if let Some((head, rest)) = self.0.split_first_chunk::<N>() {
            out = *head;
            self.0 = rest;
        }
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn f64(&mut self) -> f64 {
        f64::from_le_bytes(self.take())
    }
}

impl Ftrl {
    /// The snapshot bytes (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let touched = self.n.iter().filter(|&&n| n > 0.0).count();
        let mut out = Vec::with_capacity(HEADER + touched * COORDINATE);
        let p = self.params;
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(p.bits);
        for v in [p.alpha, p.beta, p.l1, p.l2] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let c = self.counters;
        for v in [c.examples, c.impressions, c.clicks] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        // The table has at most 2^24 coordinates, so both casts are exact.
        out.extend_from_slice(&(touched as u32).to_le_bytes());
        for (i, (z, n)) in self.z.iter().zip(&self.n).enumerate() {
            if *n > 0.0 {
                out.extend_from_slice(&(i as u32).to_le_bytes());
                out.extend_from_slice(&z.to_le_bytes());
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// The model in snapshot bytes, checked (see the module docs).
    pub fn from_bytes(bytes: &[u8]) -> Result<Ftrl, SnapshotError> {
        if bytes.len() < 5 || &bytes[..4] != MAGIC {
            return Err(SnapshotError::NotASnapshot);
        }
        if bytes[4] != VERSION {
            return Err(SnapshotError::Version(bytes[4]));
        }
        if bytes.len() < HEADER {
            return Err(SnapshotError::Length { expected: HEADER, actual: bytes.len() });
        }
        let mut r = Reader(&bytes[5..]);
        let bits = r.u8();
        let params = Params { alpha: r.f64(), beta: r.f64(), l1: r.f64(), l2: r.f64(), bits };
        let mut model = Ftrl::new(params).map_err(|e| SnapshotError::Params(e.to_string()))?;
        model.counters = Counters { examples: r.u64(), impressions: r.u64(), clicks: r.u64() };
        let count = r.u32() as usize;
        let expected = count.checked_mul(COORDINATE).and_then(|b| b.checked_add(HEADER)).unwrap_or(usize::MAX);
        if bytes.len() != expected {
            return Err(SnapshotError::Length { expected, actual: bytes.len() });
        }
        let mut next = 0usize;
        for _ in 0..count {
            let index = r.u32();
            let (z, n) = (r.f64(), r.f64());
            let i = index as usize;
            let bad = |reason| Err(SnapshotError::Coordinate { index, reason });
            if i >= model.z.len() {
                return bad("outside the table");
            }
            if i < next {
                return bad("not in ascending order");
            }
            if !z.is_finite() || !n.is_finite() || n <= 0.0 {
                return bad("z or n not finite, or n not positive");
            }
            model.z[i] = z;
            model.n[i] = n;
            next = i + 1;
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{AdFormat, Country, Device};
    use crate::learn::features::{Context, Features};

    fn trained() -> Ftrl {
        let mut m = Ftrl::new(Params { bits: 16, ..Params::default() }).unwrap();
        for (k, campaign_id) in ["C001", "C002", "C003"].into_iter().enumerate() {
            for hour in 0..24u8 {
                let c = Context {
                    campaign_id,
                    ad_format: AdFormat::ALL[k],
                    country: Country::Jp,
                    device: Device::Android,
                    hour,
                };
                m.learn(&Features::of(&c), 40 + u64::from(hour), 3 + k as u64);
            }
        }
        m
    }

    #[test]
    fn a_model_round_trips_through_bytes() {
        let m = trained();
        let bytes = m.to_bytes();
        let back = Ftrl::from_bytes(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_bytes(), bytes);
        // Compact: only touched coordinates (3 campaigns × 24 hours touch
        // 1 + 3 + 3 + 1 + 1 + 24 + 3 + 3 + 3 = 42 features).
        let touched = m.n.iter().filter(|&&n| n > 0.0).count();
        assert_eq!(touched, 42);
        assert_eq!(bytes.len(), HEADER + 42 * COORDINATE);
        assert_eq!(m.counters().examples, 72);
        // An untrained model is just the header.
        let empty = Ftrl::new(Params::default()).unwrap();
        assert_eq!(empty.to_bytes().len(), HEADER);
        assert_eq!(Ftrl::from_bytes(&empty.to_bytes()).unwrap(), empty);
    }

    #[test]
    fn bad_bytes_are_refused_with_a_reason() {
        let bytes = trained().to_bytes();
        assert_eq!(Ftrl::from_bytes(b"nope"), Err(SnapshotError::NotASnapshot));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert_eq!(Ftrl::from_bytes(&v2), Err(SnapshotError::Version(2)));
        assert!(matches!(Ftrl::from_bytes(&bytes[..bytes.len() - 1]), Err(SnapshotError::Length { .. })));
        assert!(matches!(Ftrl::from_bytes(&bytes[..10]), Err(SnapshotError::Length { .. })));
        let mut bits = bytes.clone();
        bits[5] = 40;
        assert!(matches!(Ftrl::from_bytes(&bits), Err(SnapshotError::Params(_))));
        // The first coordinate's index pointed past the table (bits 16).
        let mut index = bytes.clone();
        index[HEADER..HEADER + 4].copy_from_slice(&70_000u32.to_le_bytes());
        let e = Ftrl::from_bytes(&index).unwrap_err();
        assert!(e.to_string().contains("outside the table"), "{e}");
        // Two coordinates swapped: out of order.
        let mut order = bytes.clone();
        let (a, b) = (HEADER, HEADER + COORDINATE);
        let first: Vec<u8> = order[a..b].to_vec();
        order.copy_within(b..b + COORDINATE, a);
        order[b..b + COORDINATE].copy_from_slice(&first);
        assert!(Ftrl::from_bytes(&order).unwrap_err().to_string().contains("ascending"));
        // A NaN z.
        let mut nan = bytes;
        nan[HEADER + 4..HEADER + 12].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(Ftrl::from_bytes(&nan).unwrap_err().to_string().contains("finite"));
    }
}
