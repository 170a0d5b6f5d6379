//! Distinct users per window as a HyperLogLog sketch (precision 14: 16,384 one-byte registers, standard error
//! 1.04/√16384 ≈ 0.81 %; counts up to about 40,000 use linear counting and are within a few users of exact).
//! Merging is a register-wise maximum, so merging the same users twice changes nothing: a replay after a crash cannot
//! inflate the count, which is why the aggregator persists sketches rather than user lists.
//!
//! ```
//! use weir_analytics::hll::Hll;
//!
//! let (mut monday, mut tuesday) = (Hll::default(), Hll::default());
//! for user in 0..1000 {
//!     monday.insert(format!("user-{user}").as_bytes());
//! }
//! for user in 500..1500 {
//!     tuesday.insert(format!("user-{user}").as_bytes());
//! }
//! monday.merge(&tuesday);
//! let both = monday.estimate();
//! assert!((1485..=1515).contains(&both), "{both}");
//! // Merging the same users again changes nothing: a replay cannot inflate the count.
//! monday.merge(&tuesday);
//! assert_eq!(monday.estimate(), both);
//! // Stored as bytes and read back whole.
//! assert_eq!(Hll::from_bytes(&monday.to_bytes()), monday);
//! ```

pub const PRECISION: u32 = 14;
pub const REGISTERS: usize = 1 << PRECISION;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hll {
    registers: Vec<u8>,
}

impl Default for Hll {
    fn default() -> Self {
        Hll { registers: vec![0; REGISTERS] }
    }
}

/// FNV-1a then a splitmix64 finaliser: stable across builds and platforms (sketches are stored), well mixed.
pub fn hash(s: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Hll {
    pub fn insert_hash(&mut self, h: u64) {
        let idx = (h >> (64 - PRECISION)) as usize;
        let rank = ((h << PRECISION) | (1 << (PRECISION - 1))).leading_zeros() as u8 + 1;
        if rank > self.registers[idx] {
            self.registers[idx] = rank;
        }
    }

    pub fn insert(&mut self, item: &[u8]) {
        self.insert_hash(hash(item));
    }

    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(*b);
        }
    }

    pub fn estimate(&self) -> u64 {
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0;
        for &r in &self.registers {
            sum += 1.0 / f64::from(1u32 << r.min(31));
            if r == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let e = if raw <= 2.5 * m && zeros > 0 { m * (m / f64::from(zeros)).ln() } else { raw };
        e.round() as u64
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.registers.clone()
    }

    /// A sketch from stored bytes; anything of the wrong length reads as empty rather than failing a flush.
    pub fn from_bytes(b: &[u8]) -> Hll {
        if b.len() == REGISTERS {
            Hll { registers: b.to_vec() }
        } else {
            Hll::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_within_the_documented_error_and_merges_are_idempotent() {
        for n in [1u64, 10, 1000, 20_000, 200_000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.insert(format!("user-{i}").as_bytes());
            }
            let e = h.estimate() as f64;
            let err = (e - n as f64).abs() / n as f64;
            assert!(err < 0.03, "n={n}: estimate {e}, error {err:.4}");
            let before = h.clone();
            h.merge(&before);
            assert_eq!(h, before, "merging a sketch with itself changes nothing");
        }
        let (mut a, mut b) = (Hll::default(), Hll::default());
        for i in 0..5000 {
            a.insert(format!("u{i}").as_bytes());
        }
        for i in 2500..7500 {
            b.insert(format!("u{i}").as_bytes());
        }
        a.merge(&b);
        assert!((a.estimate() as f64 - 7500.0).abs() < 7500.0 * 0.02, "{}", a.estimate());
        assert_eq!(Hll::from_bytes(&a.to_bytes()), a);
    }
}
