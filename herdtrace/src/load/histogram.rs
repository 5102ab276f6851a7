//! A fixed-size log-linear histogram of u64 values (latencies in µs).
//!
//! Values below 64 have a bucket each (exact). Above, every power of two is
//! split into 32 equal buckets, so a bucket is at most 1/32 of its lower bound
//! wide. `quantile` reports the highest value of the bucket holding the
//! nearest-rank value, capped at the recorded maximum; so for the exact
//! nearest-rank value `v` the reported `r` satisfies `v <= r <= v + v/32`
//! (`r == v` below 64). `max`, `min` and `count` are exact. 1920 buckets cover
//! all of u64; recording is an index computation and an increment.

/// Sub-buckets per power of two: 2^SUB_BITS.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are recorded exactly.
const LINEAR: u64 = 2 * SUB;
/// Total bucket count: the linear part plus 32 per exponent 6..=63.
pub const BUCKETS: usize = LINEAR as usize + (64 - (SUB_BITS as usize + 1)) * SUB as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket of `v`.
pub fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS + 1
    let shift = exp - SUB_BITS;
    let mantissa = (v >> shift) - SUB; // 0..SUB
    LINEAR as usize + (exp - SUB_BITS - 1) as usize * SUB as usize + mantissa as usize
}

/// The lowest and highest value of bucket `i`.
pub fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < LINEAR {
        return (i, i);
    }
    let r = i - LINEAR;
    let exp = r / SUB + u64::from(SUB_BITS) + 1;
    let shift = exp - u64::from(SUB_BITS);
    let low = (SUB + r % SUB) << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Exact maximum (None when empty).
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Exact minimum (None when empty).
    #[cfg(test)]
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// The nearest-rank `q` quantile (0 < q <= 1) within the error documented
    /// above; None when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // ceil(q * count), robust to 0.99 * 100 = 98.999…; at least rank 1.
        let rank = ((q * self.count as f64) - 1e-9)
            .ceil()
            .clamp(1.0, self.count as f64) as u64;
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bounds(i).1.min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random values spread over many magnitudes.
    fn values(n: usize, seed: u64) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let magnitude = (x >> 58) as u32; // 0..63
                (x >> 7) % (1u64 << magnitude.min(40)).max(1)
            })
            .collect()
    }

    fn exact_quantile(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64) - 1e-9).ceil().max(1.0) as usize;
        sorted[rank.min(sorted.len()) - 1]
    }

    #[test]
    fn bucket_count_covers_u64() {
        assert_eq!(BUCKETS, 1920);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(bounds(BUCKETS - 1).1, u64::MAX);
    }

    #[test]
    fn every_value_lies_in_its_bucket_and_buckets_are_contiguous() {
        let mut probes: Vec<u64> = (0..300).collect();
        for e in 6..64 {
            let p = 1u64 << e;
            probes.extend([p - 1, p, p + 1, p + p / 3, p | (p - 1)]);
        }
        probes.push(u64::MAX);
        for v in probes {
            let (lo, hi) = bounds(index(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo}, {hi}]");
            if v >= LINEAR {
                assert!((hi - lo + 1) * SUB <= lo, "bucket of {v} wider than lo/32");
            } else {
                assert_eq!((lo, hi), (v, v));
            }
        }
        for i in 1..BUCKETS {
            assert_eq!(bounds(i).0, bounds(i - 1).1 + 1, "gap before bucket {i}");
        }
    }

    #[test]
    fn empty_histogram() {
        let h = Histogram::new();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.min(), None);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), Some(25));
        assert_eq!(h.quantile(0.99), Some(50));
        assert_eq!(h.quantile(0.01), Some(1));
        assert_eq!(h.quantile(1.0), Some(50));
        assert_eq!(h.min(), Some(1));
        assert_eq!(h.max(), Some(50));
    }

    #[test]
    fn p99_of_hundred_is_the_99th_value() {
        let mut h = Histogram::new();
        for v in 1..=100 {
            h.record(v * 1000);
        }
        let p99 = h.quantile(0.99).expect("non-empty");
        assert!((99_000..=99_000 + 99_000 / 32).contains(&p99), "{p99}");
        assert_eq!(h.max(), Some(100_000));
        assert_eq!(h.quantile(1.0), Some(100_000));
    }

    #[test]
    fn quantiles_within_documented_error() {
        let vals = values(20_000, 7);
        let mut h = Histogram::new();
        for &v in &vals {
            h.record(v);
        }
        let mut sorted = vals.clone();
        sorted.sort_unstable();
        for q in [0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&sorted, q);
            let got = h.quantile(q).expect("non-empty");
            assert!(
                got >= exact && got <= exact + exact / 32,
                "q {q}: exact {exact} got {got}"
            );
        }
        assert_eq!(h.max(), sorted.last().copied());
        assert_eq!(h.min(), sorted.first().copied());
        assert_eq!(h.count(), 20_000);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (a, b) = (values(5000, 1), values(3000, 2));
        let mut ha = Histogram::new();
        let mut hb = Histogram::new();
        let mut all = Histogram::new();
        for &v in &a {
            ha.record(v);
            all.record(v);
        }
        for &v in &b {
            hb.record(v);
            all.record(v);
        }
        ha.merge(&hb);
        assert_eq!(ha, all);
        let mut empty = Histogram::new();
        empty.merge(&Histogram::new());
        assert_eq!(empty.min(), None);
        empty.merge(&all);
        assert_eq!(empty, all);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.quantile(1.0), Some(u64::MAX));
        assert_eq!(h.quantile(0.5), Some(0));
    }
}
