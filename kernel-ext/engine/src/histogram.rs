//! A log-linear latency histogram (HDR-histogram style) with exact
//! min/max/mean: fixed size, allocation-free and O(1) to record into, so
//! real-time code and interrupt handlers may record into it.
//!
//! # Layout
//! Values below `2 * SUB_BUCKETS` (64) have a bucket each. Above, every
//! power of two `[2^e, 2^(e+1))` up to `2^RANGE_BITS` (2^36 ns, 68.7 s) is
//! split into `SUB_BUCKETS` (32) equal buckets of width `2^(e-5)`; so a
//! bucket is never wider than 1/32 of its lower bound. Values from
//! 2^36 on share one overflow bucket (where only the exact maximum is known).
//!
//! # Quantiles
//! The `q`-quantile of `n` samples is the `r`-th smallest sample with
//! `r = max(1, ceil(q * n))` (the rank definition: p50 of 1..=10 is 5, p100
//! is the maximum, p0 the minimum). The histogram finds the bucket holding
//! that sample exactly and reports the bucket's midpoint, clamped to the
//! exact `[min, max]`: within 1/64 (1.6 %) of the exact quantile, above or
//! below, for samples under 2^36. In the overflow bucket it reports the
//! exact maximum.
//!
//! # Invariant
//! `count` is the sum of the bucket counts, `sum` the sum of the samples,
//! `!inverted_min` and `max` the extremes (0 and 0 when empty); `merge`
//! keeps it, so merging two histograms equals recording both sample sets
//! into one. The minimum is kept bit-inverted so that an empty histogram is
//! all zeros: a `static` one lands in `.bss`, not in the loaded image.

/// Buckets per power of two, as a power of two.
pub const SUB_BUCKET_BITS: u32 = 5;
/// Buckets per power of two (32): the relative bucket width is at most 1/32.
pub const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS;
/// Samples below `2^RANGE_BITS` ns (68.7 s) are resolved; larger ones share
/// the overflow bucket.
pub const RANGE_BITS: u32 = 36;
/// The first value of the overflow bucket.
pub const RANGE_END: u64 = 1 << RANGE_BITS;
/// Number of buckets: one per value below `2 * SUB_BUCKETS`, `SUB_BUCKETS`
/// per power of two above up to `RANGE_END`, then the overflow bucket.
pub const BUCKETS: usize = (RANGE_BITS + 1 - SUB_BUCKET_BITS) as usize * SUB_BUCKETS + 1;
/// The overflow bucket's index (the last).
pub const OVERFLOW: usize = BUCKETS - 1;

/// A log-linear histogram of non-negative values (nanoseconds, by
/// convention). About 8 KiB; `Copy` so that readers take a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: [u64; BUCKETS],
    count: u64,
    sum: u128,
    /// `!min`: the largest inverted sample is the smallest sample.
    inverted_min: u64,
    max: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket index of `value`: O(1), a leading-zero count and shifts.
pub const fn bucket_of(value: u64) -> usize {
    if value < 2 * SUB_BUCKETS as u64 {
        return value as usize;
    }
    if value >= RANGE_END {
        return OVERFLOW;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BUCKET_BITS;
    ((shift as usize) << SUB_BUCKET_BITS) + (value >> shift) as usize
}

/// The smallest value of bucket `index`.
pub const fn bucket_lower_bound(index: usize) -> u64 {
    if index < 2 * SUB_BUCKETS {
        return index as u64;
    }
    if index >= OVERFLOW {
        return RANGE_END;
    }
    let shift = (index >> SUB_BUCKET_BITS) - 1;
    ((index - (shift << SUB_BUCKET_BITS)) as u64) << shift
}

/// The width of bucket `index` (1 in the exact range; `u64::MAX -
/// RANGE_END` for the overflow bucket).
pub const fn bucket_width(index: usize) -> u64 {
    if index < 2 * SUB_BUCKETS {
        1
    } else if index >= OVERFLOW {
        u64::MAX - RANGE_END
    } else {
        1 << ((index >> SUB_BUCKET_BITS) - 1)
    }
}

/// The exclusive upper bound of bucket `index` (`u64::MAX` for the
/// overflow bucket).
pub const fn bucket_upper_bound(index: usize) -> u64 {
    bucket_lower_bound(index).saturating_add(bucket_width(index))
}

impl LatencyHistogram {
    pub const fn new() -> Self {
        Self { buckets: [0; BUCKETS], count: 0, sum: 0, inverted_min: 0, max: 0 }
    }

    /// Adds one sample. O(1), no allocation, no loop.
    pub fn record(&mut self, value: u64) {
        self.buckets[bucket_of(value)] += 1;
        self.count += 1;
        self.sum += u128::from(value);
        self.inverted_min = self.inverted_min.max(!value);
        self.max = self.max.max(value);
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        *self = Self::new();
    }

    /// Adds another histogram's samples: the result equals one histogram
    /// that recorded both sample sets.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.inverted_min = self.inverted_min.max(other.inverted_min);
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample, if any.
    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(!self.inverted_min)
    }

    /// Largest sample, if any.
    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    /// Mean, rounded down, if any (exact: the sum is kept).
    pub fn mean(&self) -> Option<u64> {
        (self.count > 0).then(|| (self.sum / u128::from(self.count)) as u64)
    }

    /// The `per_mille`-th quantile (500 = median, 990 = p99), as
    /// [`Self::quantile_per_100k`].
    pub fn quantile_per_mille(&self, per_mille: u32) -> Option<u64> {
        self.quantile_per_100k(per_mille.min(1000) * 100)
    }

    /// The `per_100k`-th quantile in hundred-thousandths (99_900 = p99.9,
    /// 99_990 = p99.99, 100_000 = max): the midpoint of the bucket holding
    /// the sample of rank `max(1, ceil(count * per_100k / 100_000))`,
    /// clamped to the exact min and max (see the module's doc for the
    /// error bound). `None` when empty.
    pub fn quantile_per_100k(&self, per_100k: u32) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = (u128::from(self.count) * u128::from(per_100k.min(100_000))).div_ceil(100_000).max(1) as u64;
        let mut seen = 0;
        for (index, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                if index == OVERFLOW {
                    return Some(self.max);
                }
                let midpoint = bucket_lower_bound(index) + bucket_width(index) / 2;
                return Some(midpoint.clamp(!self.inverted_min, self.max));
            }
        }
        Some(self.max)
    }

    /// Non-empty buckets as `(exclusive upper bound, count)`, ascending.
    pub fn non_empty_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().enumerate().filter(|&(_, &count)| count > 0).map(|(index, &count)| (bucket_upper_bound(index), count))
    }

    /// The raw bucket counts, indexed as [`bucket_of`] says.
    pub fn buckets(&self) -> &[u64; BUCKETS] {
        &self.buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_exact_below_64_then_32_buckets_per_power_of_two() {
        assert_eq!(BUCKETS, 1025);
        for value in 0..64 {
            assert_eq!(bucket_of(value), value as usize);
            assert_eq!(bucket_width(value as usize), 1);
        }
        assert_eq!(bucket_of(64), 64);
        assert_eq!(bucket_of(65), 64);
        assert_eq!(bucket_of(66), 65);
        assert_eq!(bucket_of(127), 95);
        assert_eq!(bucket_of(128), 96);
        assert_eq!(bucket_lower_bound(96), 128);
        assert_eq!(bucket_width(96), 4);
        assert_eq!(bucket_of(RANGE_END - 1), OVERFLOW - 1);
        assert_eq!(bucket_of(RANGE_END), OVERFLOW);
        assert_eq!(bucket_of(u64::MAX), OVERFLOW);
        assert_eq!(bucket_upper_bound(OVERFLOW - 1), RANGE_END);
        assert_eq!(bucket_upper_bound(OVERFLOW), u64::MAX);
    }

    #[test]
    fn buckets_tile_the_range_and_stay_within_a_32nd_of_their_value() {
        let mut expected_lower = 0;
        for index in 0..OVERFLOW {
            let lower = bucket_lower_bound(index);
            assert_eq!(lower, expected_lower, "bucket {index}");
            let upper = bucket_upper_bound(index);
            assert_eq!(bucket_of(lower), index);
            assert_eq!(bucket_of(upper - 1), index);
            assert!(index < 64 || bucket_width(index) * SUB_BUCKETS as u64 <= lower, "bucket {index}");
            expected_lower = upper;
        }
        assert_eq!(expected_lower, RANGE_END);
    }

    #[test]
    fn empty_histogram_reports_nothing() {
        let histogram = LatencyHistogram::new();
        assert_eq!(histogram.count(), 0);
        assert_eq!(histogram.min(), None);
        assert_eq!(histogram.max(), None);
        assert_eq!(histogram.mean(), None);
        assert_eq!(histogram.quantile_per_mille(500), None);
        assert_eq!(histogram.quantile_per_100k(99_900), None);
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
        // Widths are 1/32 of the power of two: 1000 is in [992, 1008)
        // (width 16), 1500 in [1472, 1504), 3000 in [2944, 3008), 100 000
        // in [98 304, 100 352).
        let buckets: Vec<_> = histogram.non_empty_buckets().collect();
        assert_eq!(buckets, vec![(1008, 1), (1504, 1), (3008, 1), (100_352, 1)]);
    }

    #[test]
    fn quantiles_are_bucket_midpoints_clamped_to_extremes() {
        let mut histogram = LatencyHistogram::new();
        for _ in 0..99 {
            histogram.record(5_000); // bucket [4992, 5120), midpoint 5056
        }
        histogram.record(70_000);
        assert_eq!(histogram.quantile_per_mille(500), Some(5056));
        assert_eq!(histogram.quantile_per_mille(990), Some(5056));
        assert_eq!(histogram.quantile_per_100k(99_001), Some(70_000));
        assert_eq!(histogram.quantile_per_mille(1000), Some(70_000));
        // p0 is the first sample's bucket midpoint (1.1 % above 5000).
        assert_eq!(histogram.quantile_per_mille(0), Some(5056));
        let mut single = LatencyHistogram::new();
        single.record(3);
        assert_eq!(single.quantile_per_mille(500), Some(3));
    }

    #[test]
    fn samples_beyond_the_range_report_the_exact_maximum() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(10);
        histogram.record(RANGE_END * 3);
        assert_eq!(histogram.quantile_per_mille(1000), Some(RANGE_END * 3));
        assert_eq!(histogram.non_empty_buckets().last(), Some((u64::MAX, 1)));
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

    #[test]
    fn zero_is_a_sample_and_an_empty_histogram_is_all_zeros() {
        let mut histogram = LatencyHistogram::new();
        histogram.record(0);
        assert_eq!((histogram.min(), histogram.max()), (Some(0), Some(0)));
        histogram.record(u64::MAX);
        assert_eq!((histogram.min(), histogram.max()), (Some(0), Some(u64::MAX)));
        assert_eq!(LatencyHistogram::new(), LatencyHistogram { buckets: [0; BUCKETS], count: 0, sum: 0, inverted_min: 0, max: 0 });
    }

    #[test]
    fn the_size_is_about_8_kib() {
        assert_eq!(core::mem::size_of::<LatencyHistogram>(), 8240);
    }
}
