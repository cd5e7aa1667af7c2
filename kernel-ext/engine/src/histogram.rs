//! A latency histogram with log2 buckets and exact min/max/mean, fixed size
//! and allocation-free, so real-time code may record into it.
//!
//! Bucket `i` (1..=63) counts values in `[2^i, 2^(i+1))`; bucket 0 counts 0
//! and 1. Percentiles are estimated from the buckets (the upper bound of the
//! bucket holding the quantile, clamped to the exact maximum).

/// Number of buckets.
pub const BUCKETS: usize = 64;

/// A log2 histogram of non-negative values (nanoseconds, by convention).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; BUCKETS],
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket index of `value`.
pub const fn bucket_of(value: u64) -> usize {
    if value < 2 { 0 } else { (63 - value.leading_zeros()) as usize }
}

/// The exclusive upper bound of bucket `index` (saturating at u64::MAX).
pub const fn bucket_upper_bound(index: usize) -> u64 {
    if index >= 63 { u64::MAX } else { 1u64 << (index + 1) }
}

impl LatencyHistogram {
    pub const fn new() -> Self {
        Self { buckets: [0; BUCKETS], count: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    /// Adds one sample.
    pub fn record(&mut self, value: u64) {
        self.buckets[bucket_of(value)] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample, if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    /// Largest sample, if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean, rounded down, if any.
    pub fn mean(&self) -> Option<u64> {
        (self.count > 0).then(|| (self.sum / u128::from(self.count)) as u64)
    }

    /// An upper bound for the `per_mille`-th quantile (500 = median, 990 =
    /// p99, 999 = p99.9), from the buckets, clamped to the exact maximum.
    pub fn quantile_per_mille(&self, per_mille: u32) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = (u128::from(self.count) * u128::from(per_mille.min(1000))).div_ceil(1000).max(1) as u64;
        let mut seen = 0;
        for (index, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(bucket_upper_bound(index).saturating_sub(1).min(self.max).max(self.min));
            }
        }
        Some(self.max)
    }

    /// Non-empty buckets as `(exclusive upper bound, count)`.
    pub fn non_empty_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().enumerate().filter(|&(_, &count)| count > 0).map(|(index, &count)| (bucket_upper_bound(index), count))
    }

    /// The raw bucket counts.
    pub fn buckets(&self) -> &[u64; BUCKETS] {
        &self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(2), 1);
        assert_eq!(bucket_of(3), 1);
        assert_eq!(bucket_of(4), 2);
        assert_eq!(bucket_of(1023), 9);
        assert_eq!(bucket_of(1024), 10);
        assert_eq!(bucket_of(u64::MAX), 63);
        assert_eq!(bucket_upper_bound(9), 1024);
        assert_eq!(bucket_upper_bound(63), u64::MAX);
    }

    #[test]
    fn empty_histogram_reports_nothing() {
        let histogram = LatencyHistogram::new();
        assert_eq!(histogram.count(), 0);
        assert_eq!(histogram.min(), None);
        assert_eq!(histogram.max(), None);
        assert_eq!(histogram.mean(), None);
        assert_eq!(histogram.quantile_per_mille(500), None);
        assert_eq!(histogram.non_empty_buckets().count(), 0);
    }

    #[test]
    fn records_exact_min_max_mean_and_bucket_counts() {
        let mut histogram = LatencyHistogram::new();
        for value in [1000, 1500, 3000, 100_000] {
            histogram.record(value);
        }
        assert_eq!(histogram.count(), 4);
        assert_eq!(histogram.min(), Some(1000));
        assert_eq!(histogram.max(), Some(100_000));
        assert_eq!(histogram.mean(), Some(26_375));
        let buckets: Vec<_> = histogram.non_empty_buckets().collect();
        assert_eq!(buckets, vec![(1024, 1), (2048, 1), (4096, 1), (131_072, 1)]);
    }

    #[test]
    fn quantiles_come_from_buckets_clamped_to_extremes() {
        let mut histogram = LatencyHistogram::new();
        for _ in 0..99 {
            histogram.record(5_000); // bucket [4096, 8192)
        }
        histogram.record(70_000); // bucket [65536, 131072)
        assert_eq!(histogram.quantile_per_mille(500), Some(8191));
        assert_eq!(histogram.quantile_per_mille(990), Some(8191));
        assert_eq!(histogram.quantile_per_mille(1000), Some(70_000));
        let mut single = LatencyHistogram::new();
        single.record(3);
        assert_eq!(single.quantile_per_mille(500), Some(3));
    }

    #[test]
    fn merge_and_reset() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(10);
        b.record(20);
        b.record(5);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, Some(5), Some(20)));
        a.reset();
        assert_eq!(a, LatencyHistogram::new());
    }
}
