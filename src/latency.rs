//! Queue-wait histograms: what each worker records as it starts a job, and
//! the [`LatencyHistogram`] a caller reads with
//! [`Submitter::queue_wait_histogram`](crate::Submitter::queue_wait_histogram).
//!
//! Each worker owns one recorder per lane and is its only writer, so
//! recording a wait is a plain load and store on the worker's own memory
//! (no read-modify-write, nothing shared with other workers or producers),
//! and nothing is allocated after the pool is built. A reader sums the
//! workers' recorders.
//!
//! Buckets are log-linear: exact below 8 ns, then 8 buckets per power of
//! two, so a bucket is at most one eighth as wide as the values in it, up
//! to `15 × 2^37` ns (about 34 minutes). Longer waits share the last
//! bucket.

use std::fmt;
use std::time::Duration;

#[cfg(not(loom))]
use crate::sync::{fence, AtomicU64, Ordering};

/// log2 of the buckets per power of two.
const SUB_BITS: u32 = 3;
/// Buckets per power of two; also the values below it each have their own.
const SUB: usize = 1 << SUB_BITS;
/// The largest power of two (in nanoseconds) with buckets of its own.
const MAX_EXP: u32 = 40;
/// Buckets per histogram: `SUB` exact ones, then `SUB` per power of two
/// from 2^`SUB_BITS` to 2^`MAX_EXP`.
const BUCKETS: usize = SUB + (MAX_EXP - SUB_BITS + 1) as usize * SUB;

/// The bucket of a wait of `nanos`.
#[cfg_attr(loom, allow(dead_code))]
fn bucket(nanos: u64) -> usize {
    if nanos < SUB as u64 {
        return nanos as usize;
    }
    let exp = 63 - nanos.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let mantissa = (nanos >> (exp - SUB_BITS)) as usize & (SUB - 1);
    SUB + (exp - SUB_BITS) as usize * SUB + mantissa
}

/// The smallest wait in bucket `index`.
fn lower_bound(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let exp = (index - SUB) / SUB;
    let mantissa = ((index - SUB) % SUB) as u64;
    (SUB as u64 + mantissa) << exp
}

/// The largest wait in bucket `index` (`u64::MAX` for the last one).
fn upper_bound(index: usize) -> u64 {
    if index + 1 >= BUCKETS {
        u64::MAX
    } else {
        lower_bound(index + 1) - 1
    }
}

/// One worker's queue waits in one lane. Only that worker writes it.
///
/// The sum of the waits is a 128-bit number in two words: `sum_low` wraps
/// and `sum_high` counts its wraps. A 64-bit sum would saturate after 584
/// years of waiting in total, which a lane kept full at its largest
/// capacity (2^26 jobs) reaches in under five minutes (Little's law: waits
/// add up as fast as the queue is long). A wrap happens at most once per
/// 584 years of waits, so only a wrap takes the seqlock `sum_seq` (odd
/// while the two words change); a reader retries when it saw a wrap begin
/// or end. Adding to `sum_low` without a wrap leaves the pair consistent
/// whichever `sum_high` a reader pairs it with, as long as no wrap
/// happened in between, which the sequence number tells.
#[cfg(not(loom))]
struct LaneWaits {
    /// Jobs per bucket.
    buckets: [AtomicU64; BUCKETS],
    /// Low 64 bits of the sum of the waits, in nanoseconds.
    sum_low: AtomicU64,
    /// High 64 bits of the sum.
    sum_high: AtomicU64,
    /// Even, and bumped twice around each wrap of `sum_low`.
    sum_seq: AtomicU64,
    /// The longest wait, in nanoseconds.
    max: AtomicU64,
}

#[cfg(not(loom))]
impl LaneWaits {
    /// Adds `nanos` to the sum. Only the owning worker may call it.
    #[inline]
    fn add_to_sum(&self, nanos: u64) {
        let (low, wrapped) = self.sum_low.load(Ordering::Relaxed).overflowing_add(nanos);
        if !wrapped {
            self.sum_low.store(low, Ordering::Relaxed);
            return;
        }
        let seq = self.sum_seq.load(Ordering::Relaxed);
        self.sum_seq.store(seq + 1, Ordering::Relaxed);
        // The writer's half of the seqlock: a reader that sees either word
        // change sees the odd sequence number, or a later one.
        fence(Ordering::Release);
        let high = self.sum_high.load(Ordering::Relaxed);
        self.sum_high.store(high + 1, Ordering::Relaxed);
        self.sum_low.store(low, Ordering::Relaxed);
        self.sum_seq.store(seq + 2, Ordering::Release);
    }

    /// The sum, read consistently (see the type's docs).
    fn sum(&self) -> u128 {
        loop {
            let seq = self.sum_seq.load(Ordering::Acquire);
            if seq % 2 == 0 {
                let high = self.sum_high.load(Ordering::Relaxed);
                let low = self.sum_low.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                if self.sum_seq.load(Ordering::Relaxed) == seq {
                    return (u128::from(high) << 64) | u128::from(low);
                }
            }
            // A wrap is under way: a few instructions, unless the worker
            // was preempted in the middle of them.
            std::thread::yield_now();
        }
    }
}

/// A worker's queue waits, per lane. Empty under loom, whose models would
/// only slow down tracking a thousand atomics nobody checks.
pub(crate) struct WaitRecorder {
    #[cfg(not(loom))]
    lanes: [LaneWaits; 3],
}

// Under loom the struct is empty, and clippy would have it derived.
#[cfg_attr(loom, allow(clippy::derivable_impls))]
impl Default for WaitRecorder {
    fn default() -> WaitRecorder {
        WaitRecorder {
            #[cfg(not(loom))]
            lanes: std::array::from_fn(|_| LaneWaits {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum_low: AtomicU64::new(0),
                sum_high: AtomicU64::new(0),
                sum_seq: AtomicU64::new(0),
                max: AtomicU64::new(0),
            }),
        }
    }
}

impl fmt::Debug for WaitRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitRecorder").finish_non_exhaustive()
    }
}

impl WaitRecorder {
    /// Records a job that waited `nanos` in lane `lane` (`Priority::index`).
    /// Only the owning worker may call it.
    #[cfg_attr(loom, allow(unused_variables))]
    #[inline]
    pub(crate) fn record(&self, lane: usize, nanos: u64) {
        #[cfg(not(loom))]
        {
            let waits = &self.lanes[lane];
            if nanos > waits.max.load(Ordering::Relaxed) {
                waits.max.store(nanos, Ordering::Relaxed);
            }
            waits.add_to_sum(nanos);
            // Release, after `max` and `sum`: a reader that counts this job
            // also sees its wait in both, so no quantile exceeds the max.
            let count = &waits.buckets[bucket(nanos)];
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Release);
        }
    }

    /// Adds this recorder's waits in `lane` to `into`.
    #[cfg_attr(loom, allow(unused_variables))]
    pub(crate) fn add_to(&self, lane: usize, into: &mut LatencyHistogram) {
        #[cfg(not(loom))]
        {
            let waits = &self.lanes[lane];
            for (total, count) in into.buckets.iter_mut().zip(&waits.buckets) {
                // Acquire, before `sum` and `max` (see `record`).
                let count = count.load(Ordering::Acquire);
                *total += count;
                into.count += count;
            }
            into.sum = into.sum.saturating_add(waits.sum());
            into.max = into.max.max(waits.max.load(Ordering::Relaxed));
        }
    }
}

/// The distribution of queue waits (from acceptance to start) of the jobs
/// a pool started from one lane, since it was built: a snapshot, read with
/// [`Submitter::queue_wait_histogram`](crate::Submitter::queue_wait_histogram).
///
/// Quantiles come from log-linear buckets: waits below 8 ns are exact, and
/// above that each bucket spans at most an eighth of its values, up to
/// `15 × 2^37` ns (about 34 minutes). A quantile is reported as the upper
/// end of its bucket (capped at the longest wait recorded), so it is never
/// below the true value and at most 12.5 % above it; waits longer than
/// 34 minutes share one last bucket, and a quantile that falls there is
/// reported as the longest wait (still never low, but not within 12.5 %).
/// [`max`](Self::max) and [`mean`](Self::mean) are exact (the sum behind
/// the mean does not overflow).
///
/// A snapshot is exact once the jobs it should count have started: after
/// [`wait_idle`](crate::Submitter::wait_idle) or a stop, say. One taken
/// while jobs start may miss some of them, and its `max` and `mean` may
/// already include a job its quantiles and [`count`](Self::count) do not;
/// quantiles never exceed `max`, and the mean is capped at `max`.
///
/// Recording costs each job a few loads and stores on its worker's own
/// memory and allocates nothing; a pool built with
/// [`timing(false)`](crate::Builder::timing) has no timestamps and records
/// nothing, so its histograms stay empty.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(2).build()?;
/// for _ in 0..100 {
///     pool.submit_to(Priority::Urgent, FnJob::new(|_| ()))?;
/// }
/// pool.wait_idle()?;
/// let waits = pool.queue_wait_histogram(Priority::Urgent);
/// assert_eq!(waits.count(), 100);
/// let (p50, p99, max) = (waits.quantile(0.5).unwrap(), waits.quantile(0.99).unwrap(), waits.max().unwrap());
/// assert!(p50 <= p99 && p99 <= max);
/// println!("urgent queue wait: {waits}");
/// assert!(pool.queue_wait_histogram(Priority::Bulk).is_empty());
/// assert!(pool.stop()?.is_clean());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Jobs per bucket.
    buckets: Box<[u64; BUCKETS]>,
    /// Jobs in all buckets.
    count: u64,
    /// Sum of the waits, in nanoseconds (saturating, which takes ten
    /// quintillion years of waiting).
    sum: u128,
    /// The longest wait, in nanoseconds.
    max: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub(crate) fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            max: 0,
        }
    }

    /// Adds `other`'s jobs to this histogram, as if both had been
    /// recorded in one: for a report over several lanes or several pools.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit_to(Priority::Urgent, FnJob::new(|_| ()))?;
    /// pool.submit_to(Priority::Bulk, FnJob::new(|_| ()))?;
    /// assert!(pool.stop()?.is_clean());
    /// let mut all = pool.queue_wait_histogram(Priority::Urgent);
    /// let (urgent_max, bulk) = (all.max(), pool.queue_wait_histogram(Priority::Bulk));
    /// all.merge(&bulk);
    /// assert_eq!(all.count(), 2);
    /// assert_eq!(all.max(), urgent_max.max(bulk.max()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (total, count) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *total += count;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.max = self.max.max(other.max);
    }

    /// How many jobs were recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// pool.wait_idle()?;
    /// assert_eq!(pool.queue_wait_histogram(Priority::Normal).count(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether no job was recorded (then every other reading is `None`).
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// let waits = pool.queue_wait_histogram(Priority::Normal);
    /// assert!(waits.is_empty());
    /// assert_eq!((waits.quantile(0.5), waits.max(), waits.mean()), (None, None, None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The wait at quantile `q` (0.5 for the median, 0.99 for p99): the
    /// smallest bucket bound at or above the waits of a fraction `q` of the
    /// jobs, capped at [`max`](Self::max); see the type's docs for the
    /// precision. `q` is clamped to `0.0..=1.0` (NaN counts as 0): 0 gives
    /// about the shortest wait, 1 the longest. `None` if nothing was
    /// recorded.
    ///
    /// The number of jobs a fraction `q` covers, `q × count`, is rounded up
    /// after forgiving floating-point error of one part in 10^12: 0.07 of
    /// 100 jobs is the 7th wait, not the 8th that `0.07 * 100.0 = 7.000…01`
    /// would give. A `q` meant to cover a hair more than a whole number
    /// of jobs `k` (less than `k × 10^-12` more) is read as covering `k`.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// pool.wait_idle()?;
    /// let waits = pool.queue_wait_histogram(Priority::Normal);
    /// assert_eq!(waits.quantile(1.0), waits.max());
    /// assert!(waits.quantile(0.0) <= waits.quantile(0.5));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        // The rank (1-based) of the job whose wait is the quantile. The
        // product can land a rounding error above a whole number (0.07 ×
        // 100 is 7.000000000000001), which `ceil` would turn into the next
        // rank: take a relative hair off first (far below one rank for any
        // count a histogram can hold).
        let exact = q * self.count as f64;
        let rank = ((exact - exact * 1e-12).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(upper_bound(index).min(self.max)));
            }
        }
        Some(Duration::from_nanos(self.max))
    }

    /// The longest wait recorded, exactly. `None` if nothing was recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// pool.wait_idle()?;
    /// assert!(pool.queue_wait_histogram(Priority::Normal).max() < Some(Duration::from_secs(60)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.max))
    }

    /// The mean wait, rounded down to a nanosecond, from the exact sum
    /// (capped at [`max`](Self::max): see the type's docs on snapshots
    /// taken while jobs start). `None` if nothing was recorded.
    ///
    /// # Examples
    ///
    /// ```
    /// use triage_pool::{FnJob, Pool, Priority};
    ///
    /// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
    /// pool.submit(FnJob::new(|_| ()))?;
    /// pool.wait_idle()?;
    /// let waits = pool.queue_wait_histogram(Priority::Normal);
    /// assert!(waits.mean() <= waits.max());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| {
            let mean = (self.sum / u128::from(self.count)).min(u128::from(self.max));
            // At most `max`, which is a u64.
            Duration::from_nanos(u64::try_from(mean).unwrap_or(self.max))
        })
    }
}

/// A duration rounded for people, to the nearest: nanoseconds below a
/// microsecond, whole microseconds below a millisecond, milliseconds with
/// one decimal below a second, else seconds with two. A value that rounds
/// up to the next unit is shown in it (999.96 ms is `1.00 s`).
pub(crate) struct HumanDuration(pub(crate) Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        // Each unit's rounding step, in nanoseconds: whatever rounds to
        // below 1,000 of the unit stays in it.
        if nanos < 1_000 {
            write!(f, "{nanos} ns")
        } else if nanos < 999_500 {
            write!(f, "{} µs", (nanos + 500) / 1_000)
        } else if nanos < 999_950_000 {
            write!(f, "{:.1} ms", self.0.as_secs_f64() * 1e3)
        } else {
            write!(f, "{:.2} s", self.0.as_secs_f64())
        }
    }
}

/// One line: the count, then p50, p90, p99 and the maximum, rounded to the
/// nearest for people (`850 ns`, `12 µs`, `3.8 ms`, `1.25 s`), or
/// `no jobs`. The wording may
/// change between versions; read the methods to compute with the numbers.
///
/// # Examples
///
/// ```
/// use triage_pool::{FnJob, Pool, Priority};
///
/// let pool: Pool<FnJob> = Pool::builder().workers(1).build()?;
/// assert_eq!(pool.queue_wait_histogram(Priority::Urgent).to_string(), "no jobs");
/// pool.submit(FnJob::new(|_| ()))?;
/// pool.wait_idle()?;
/// let line = pool.queue_wait_histogram(Priority::Normal).to_string();
/// assert!(line.starts_with("1 jobs: p50 "), "{line}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
impl fmt::Display for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("no jobs");
        }
        let at = |q| HumanDuration(self.quantile(q).unwrap_or_default());
        write!(
            f,
            "{} jobs: p50 {}, p90 {}, p99 {}, max {}",
            self.count,
            at(0.5),
            at(0.9),
            at(0.99),
            HumanDuration(Duration::from_nanos(self.max))
        )
    }
}

impl fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count)
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .field("max", &self.max())
            .field("mean", &self.mean())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_and_stay_within_an_eighth() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        for index in 0..BUCKETS - 1 {
            let (low, high) = (lower_bound(index), upper_bound(index));
            assert_eq!(bucket(low), index, "lower bound of {index}");
            assert_eq!(bucket(high), index, "upper bound of {index}");
            assert_eq!(bucket(high + 1), index + 1, "past {index}");
            // A bucket is at most an eighth as wide as its smallest value.
            assert!(
                (high - low + 1) * 8 <= low.max(8),
                "bucket {index}: {low}..={high}"
            );
        }
        assert_eq!(
            bucket(1 << MAX_EXP),
            (MAX_EXP - SUB_BITS) as usize * SUB + SUB
        );
        assert_eq!(bucket((1 << (MAX_EXP + 1)) - 1), BUCKETS - 1);
        assert_eq!(bucket(1 << (MAX_EXP + 1)), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_upper_bounds_within_an_eighth() {
        let recorder = WaitRecorder::default();
        // Waits 1 µs, 2 µs, ..., 1000 µs in lane 1.
        for micros in 1..=1_000_u64 {
            recorder.record(1, micros * 1_000);
        }
        let mut waits = LatencyHistogram::new();
        recorder.add_to(1, &mut waits);
        assert_eq!(waits.count(), 1_000);
        assert_eq!(waits.max(), Some(Duration::from_millis(1)));
        assert_eq!(waits.mean(), Some(Duration::from_nanos(500_500)));
        for (q, exact_micros) in [(0.0, 1), (0.5, 500), (0.9, 900), (0.99, 990), (1.0, 1_000)] {
            let reported = waits.quantile(q).expect("not empty");
            let exact = Duration::from_micros(exact_micros);
            assert!(reported >= exact, "q {q}: {reported:?} below {exact:?}");
            assert!(
                reported * 8 <= exact * 9,
                "q {q}: {reported:?} too far above {exact:?}"
            );
        }
        assert_eq!(waits.quantile(f64::NAN), waits.quantile(0.0));
        assert_eq!(waits.quantile(7.0), waits.max());
        let mut other_lane = LatencyHistogram::new();
        recorder.add_to(0, &mut other_lane);
        assert!(other_lane.is_empty());
        assert_eq!(other_lane.to_string(), "no jobs");
    }

    #[test]
    fn merging_equals_recording_in_one() {
        let (a, b, both) = (
            WaitRecorder::default(),
            WaitRecorder::default(),
            WaitRecorder::default(),
        );
        for nanos in [5, 900, 70_000, 3_000_000] {
            a.record(0, nanos);
            both.record(0, nanos);
        }
        for nanos in [12, 64_000, 9_000_000_000] {
            b.record(0, nanos);
            both.record(0, nanos);
        }
        let (mut merged, mut other, mut expected) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        a.add_to(0, &mut merged);
        b.add_to(0, &mut other);
        both.add_to(0, &mut expected);
        merged.merge(&other);
        assert_eq!(merged, expected);
        assert_eq!(merged.count(), 7);
        assert_eq!(merged.max(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn display_rounds_for_people() {
        let recorder = WaitRecorder::default();
        recorder.record(2, 12_345);
        recorder.record(2, 3_800_000);
        recorder.record(2, 1_250_000_000);
        let mut waits = LatencyHistogram::new();
        recorder.add_to(2, &mut waits);
        // 3.8 ms lies in the bucket 3,670,016..=3,932,159 ns.
        assert_eq!(
            waits.to_string(),
            "3 jobs: p50 3.9 ms, p90 1.25 s, p99 1.25 s, max 1.25 s"
        );
        for (nanos, shown) in [
            (0, "0 ns"),
            (999, "999 ns"),
            (1_000, "1 µs"),
            (1_900, "2 µs"),
            (12_345, "12 µs"),
            (999_499, "999 µs"),
            (999_500, "1.0 ms"),
            (3_849_999, "3.8 ms"),
            (999_949_999, "999.9 ms"),
            (999_950_000, "1.00 s"),
            (1_250_000_000, "1.25 s"),
        ] {
            assert_eq!(
                HumanDuration(Duration::from_nanos(nanos)).to_string(),
                shown,
                "{nanos} ns"
            );
        }
    }

    #[test]
    fn quantile_ranks_survive_float_rounding() {
        // 0.07 × 100 is 7.000000000000001 in floating point: the 7th of
        // 100 waits (7 ns, exact bucket) is p7, not the 8th.
        let recorder = WaitRecorder::default();
        for nanos in 1..=100 {
            recorder.record(0, nanos);
        }
        let mut waits = LatencyHistogram::new();
        recorder.add_to(0, &mut waits);
        assert_eq!(waits.quantile(0.07), Some(Duration::from_nanos(7)));
        assert_eq!(waits.quantile(0.05), Some(Duration::from_nanos(5)));
        assert_eq!(waits.quantile(0.051), Some(Duration::from_nanos(6)));
    }

    #[test]
    fn the_sum_carries_past_64_bits() {
        let recorder = WaitRecorder::default();
        // Three waits of 2^63 ns sum to 1.5 × 2^64: a 64-bit sum would
        // wrap or saturate and the mean come out wrong.
        let huge = 1_u64 << 63;
        for _ in 0..3 {
            recorder.record(1, huge);
        }
        recorder.record(1, 0);
        let mut waits = LatencyHistogram::new();
        recorder.add_to(1, &mut waits);
        assert_eq!(waits.count(), 4);
        assert_eq!(waits.mean(), Some(Duration::from_nanos(3 * (huge / 4))));
        assert_eq!(waits.max(), Some(Duration::from_nanos(huge)));
        // Merging keeps the carry too.
        let mut twice = waits.clone();
        twice.merge(&waits);
        assert_eq!(twice.mean(), waits.mean());
        assert_eq!(twice.count(), 8);
    }

    #[test]
    fn the_mean_of_a_torn_snapshot_is_capped_at_the_max() {
        let mut waits = LatencyHistogram::new();
        // A snapshot that saw a second job's wait in the sum but not yet in
        // the buckets: one job counted, sum 1,001 ns, max 1,000 ns.
        waits.buckets[bucket(1)] = 1;
        waits.count = 1;
        waits.sum = 1_001;
        waits.max = 1_000;
        assert_eq!(waits.mean(), waits.max());
    }

    #[test]
    fn a_quantile_in_the_last_bucket_is_the_longest_wait() {
        // Waits past 15 × 2^37 ns share the last bucket, which has no upper
        // end of its own: a quantile there is the longest wait, not the
        // end of some bucket below it.
        assert_eq!(upper_bound(BUCKETS - 1), u64::MAX);
        let long = 1_u64 << 42;
        assert_eq!(bucket(long), BUCKETS - 1);
        let recorder = WaitRecorder::default();
        recorder.record(0, long);
        recorder.record(0, long + 1);
        let mut waits = LatencyHistogram::new();
        recorder.add_to(0, &mut waits);
        let max = Some(Duration::from_nanos(long + 1));
        assert_eq!(waits.max(), max);
        for q in [0.0, 0.5, 1.0] {
            assert_eq!(waits.quantile(q), max, "q {q}");
        }
    }

    #[test]
    fn the_sum_is_never_read_torn_while_it_wraps() {
        use std::sync::atomic::AtomicBool;
        // After the first, every wait of `u64::MAX` ns wraps `sum_low`, so
        // the writer below takes the seqlock on every record. The sum is
        // always a whole multiple of `u64::MAX`, and only grows: a read that
        // paired one wrap's high word with another's low word is neither.
        const RECORDS: u64 = 1_000_000;
        let recorder = WaitRecorder::default();
        let (reading, done) = (AtomicBool::new(false), AtomicBool::new(false));
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // Start once the reader reads, so the two overlap.
                while !reading.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                for _ in 0..RECORDS {
                    recorder.record(0, u64::MAX);
                }
                done.store(true, Ordering::Release);
            });
            reading.store(true, Ordering::Release);
            let (mut last, mut reads) = (0, 0_u64);
            while !done.load(Ordering::Acquire) {
                let sum = recorder.lanes[0].sum();
                reads += 1;
                assert_eq!(
                    sum % u128::from(u64::MAX),
                    0,
                    "torn sum {sum:#x} at read {reads}"
                );
                assert!(sum >= last, "sum went back: {last:#x} then {sum:#x}");
                last = sum;
            }
        });
        assert_eq!(
            recorder.lanes[0].sum(),
            u128::from(RECORDS) * u128::from(u64::MAX)
        );
    }
}
