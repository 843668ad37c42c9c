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
//! two up to 2^40 ns (about 18 minutes), so a bucket is at most one eighth
//! as wide as the values in it. Longer waits share the last bucket.

use std::fmt;
use std::time::Duration;

#[cfg(not(loom))]
use crate::sync::{AtomicU64, Ordering};

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
#[cfg(not(loom))]
struct LaneWaits {
    /// Jobs per bucket.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the waits, in nanoseconds (saturating).
    sum: AtomicU64,
    /// The longest wait, in nanoseconds.
    max: AtomicU64,
}

/// A worker's queue waits, per lane. Empty under loom, whose models would
/// only slow down tracking a thousand atomics nobody checks.
pub(crate) struct WaitRecorder {
    #[cfg(not(loom))]
    lanes: [LaneWaits; 3],
}

impl Default for WaitRecorder {
    fn default() -> WaitRecorder {
        WaitRecorder {
            #[cfg(not(loom))]
            lanes: std::array::from_fn(|_| LaneWaits {
                buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                sum: AtomicU64::new(0),
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
            let sum = waits.sum.load(Ordering::Relaxed).saturating_add(nanos);
            waits.sum.store(sum, Ordering::Relaxed);
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
            into.sum = into.sum.saturating_add(waits.sum.load(Ordering::Relaxed));
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
/// about 18 minutes (2^40 ns; longer waits share the last bucket). A
/// quantile is reported as the upper end of its bucket (capped at the
/// longest wait recorded), so it is never below the true value and at most
/// 12.5 % above it. [`max`](Self::max) and [`mean`](Self::mean) are exact.
/// A snapshot taken while jobs start is consistent only approximately: it
/// may miss jobs that started as it was read.
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
/// pool.stop()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Jobs per bucket.
    buckets: Box<[u64; BUCKETS]>,
    /// Jobs in all buckets.
    count: u64,
    /// Sum of the waits, in nanoseconds (saturating).
    sum: u64,
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
    /// pool.stop()?;
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
        // The rank (1-based) of the job whose wait is the quantile.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
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

    /// The mean wait (from the exact sum). `None` if nothing was recorded.
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
        (self.count > 0).then(|| Duration::from_nanos(self.sum / self.count))
    }
}

/// A duration rounded for people: whole microseconds below a millisecond,
/// milliseconds with one decimal below a second, else seconds with two.
pub(crate) struct HumanDuration(pub(crate) Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < Duration::from_millis(1) {
            write!(f, "{} µs", d.as_micros())
        } else if d < Duration::from_secs(1) {
            write!(f, "{:.1} ms", d.as_secs_f64() * 1e3)
        } else {
            write!(f, "{:.2} s", d.as_secs_f64())
        }
    }
}

/// One line: the count, then p50, p90, p99 and the maximum, rounded for
/// people (`12 µs`, `3.8 ms`, `1.25 s`), or `no jobs`. The wording may
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
        assert_eq!(
            HumanDuration(Duration::from_nanos(12_345)).to_string(),
            "12 µs"
        );
    }
}
