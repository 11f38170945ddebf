//! The generator's randomness: a SplitMix64 stream and a Zipf sampler over ranks.
//!
//! Both are written out here rather than taken from `rand`, because the generator
//! promises the same chain for the same seed forever: `rand`'s standard generators and
//! distributions are explicitly allowed to change their output between versions, and a
//! data lake or a benchmark baseline generated today must be reproducible after a
//! dependency update.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, fast, and good enough for
/// choosing among transaction shapes. Not for anything secret.
#[derive(Clone, Debug)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A stream determined by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x5851_F42D_4C95_7F2D,
        }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0), by multiply-shift: the bias is below
    /// `n / 2^64`, irrelevant here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An index into a slice of length `n`.
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// A number in `lo..=hi` (`lo` when `hi < lo`).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64 + 1;
        lo + self.below(span) as i64
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Picks an index with probability proportional to its weight.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut pick = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            let w = u64::from(*w);
            if pick < w {
                return i;
            }
            pick -= w;
        }
        weights.len().saturating_sub(1)
    }

    /// 32 random bytes.
    pub(crate) fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for chunk in out.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

/// Zipf's law over ranks `0..n`: rank `k` has weight `1 / (k + 1)^s`. Sampled by binary
/// search in a precomputed cumulative table (`8 n` bytes), which is exact and fast for
/// the account counts a load test uses (a million accounts is 8 MB).
#[derive(Clone, Debug)]
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `n` ranks (at least 1) with exponent `s` (0: uniform;
    /// negative or NaN values are taken as 0).
    pub(crate) fn new(n: u64, s: f64) -> Self {
        let s = if s.is_finite() && s > 0.0 { s } else { 0.0 };
        let n = n.max(1);
        let mut cdf = Vec::with_capacity(n as usize);
        let mut total = 0.0f64;
        for k in 0..n {
            total += ((k + 1) as f64).powf(-s);
            cdf.push(total);
        }
        Self { cdf }
    }

    /// A rank.
    pub(crate) fn sample(&self, rng: &mut Rng) -> u64 {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let target = rng.unit() * total;
        let rank = self.cdf.partition_point(|c| *c <= target);
        rank.min(self.cdf.len() - 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(7).next_u64(), Rng::new(8).next_u64());
    }

    #[test]
    fn ranges_hold() {
        let mut rng = Rng::new(1);
        for _ in 0..10_000 {
            let v = rng.range(-3, 5);
            assert!((-3..=5).contains(&v));
            assert!(rng.below(7) < 7);
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.range(4, 4), 4);
        assert_eq!(rng.weighted(&[0, 0, 5]), 2);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(3);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        // Rank 0 has weight 1 of H(1000) ~ 7.49: about 13 %.
        assert!((11_000..16_000).contains(&counts[0]), "{}", counts[0]);
        assert!(counts[0] > counts[1] && counts[1] > counts[9]);
        assert!(counts[999] < counts[9]);
        let uniform = Zipf::new(10, 0.0);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            seen[uniform.sample(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
