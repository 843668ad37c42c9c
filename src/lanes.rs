//! The bounded per-priority queues, the intake gate in front of them, the
//! biased receive behind them, and the wake-ups that connect the two.
//!
//! Each lane is one bounded queue (a crossbeam channel in production, see
//! `sync::Queue`) used only through its non-blocking operations. Producers
//! and workers wait for each other on condvars of their own:
//! - a full lane: the producer sleeps until the lane has drained to half its
//!   capacity, or until a stop closes intake (see "Backpressure" below);
//! - an empty pool: the worker sleeps on its group's condvar (see "Sleeping
//!   workers" below), so the common path of taking a job is a few `try_pop`s
//!   and never pays for a crossbeam `Select`.

use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::job::Priority;
use crate::stats::Counters;
use crate::sync::{
    fence, thread_local_cell, AtomicBool, AtomicU64, AtomicUsize, Condvar, LaneQueue, Mutex,
    MutexGuard, Ordering, Queue, Spin,
};

/// A queued job and the time it was accepted.
#[derive(Debug)]
pub(crate) struct Envelope<J> {
    /// The job.
    pub(crate) job: J,
    /// Acceptance time, nanoseconds since the pool's epoch.
    pub(crate) accepted_at: u64,
}

/// How long a submit may wait for room in a full lane.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all (`try_submit`).
    Never,
    /// Until the deadline; `None` means forever (`submit`).
    Until(Option<Instant>),
}

/// Why a push did not enqueue the job; the job travels back inside.
pub(crate) enum Refused<J> {
    /// The lane is full and the caller may not wait.
    Full(J),
    /// The deadline passed with the lane still full.
    Timeout(J),
    /// Intake is closed.
    Stopped(J),
}

/// Which lanes a worker takes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Every lane, highest first.
    General,
    /// Only the `Urgent` lane (a reserved urgent worker).
    UrgentOnly,
}

/// Number of stripes the intake gate is split into. Each producer thread
/// uses one (assigned round-robin on its first submit), so producers on
/// different cores do not contend on one cache line.
const STRIPES: usize = 8;

/// Hands out stripes to threads, round-robin. Not part of any protocol.
#[cfg(not(loom))]
static NEXT_STRIPE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(loom)]
loom::lazy_static! {
    /// Under loom, reset for every execution so that runs are deterministic.
    static ref NEXT_STRIPE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
}

thread_local_cell! {
    /// This thread's gate stripe; `usize::MAX` until its first submit.
    static STRIPE: Cell<usize> = usize::MAX;
}

/// `Gate::state` bit: intake is closed.
const CLOSED: u64 = 1;
/// `Gate::state` increment for one submit inside the gate (bits 1..=20).
const IN_FLIGHT: u64 = 1 << 1;
/// `Gate::state` bits counting submits inside the gate.
const IN_FLIGHT_MASK: u64 = ((1 << 20) - 1) << 1;
/// `Gate::state` increment for one accepted job (bits 21..=63: 2^43 jobs).
const ACCEPTED: u64 = 1 << 21;
/// A stripe whose value reaches this (2^42 jobs accepted through it) moves
/// `CARRY` of them to `Gate::carried` before its field can wrap.
const CARRY_AT: u64 = 1 << 63;
/// Jobs moved from a stripe to `Gate::carried` at a time.
const CARRY: u64 = 1 << 41;

// Intake gate (the shutdown protocol, producer side).
//
// The gate is `STRIPES` words; a submit uses its thread's stripe. Each word
// = CLOSED bit | IN_FLIGHT × (submits inside the gate on that stripe) |
// ACCEPTED × (jobs accepted through it). A submit enters with
// `fetch_add(IN_FLIGHT + ACCEPTED)` on its stripe and looks at the CLOSED
// bit in the value it replaced; a stop sets CLOSED with `fetch_or` on every
// stripe, then waits for every stripe's in-flight count to reach zero. The
// argument below holds stripe by stripe. (Counting the job as accepted on
// entry, and taking that back if it is refused, costs no extra
// read-modify-write on the hot path and keeps `accepted` ahead of any
// worker's count of the job.) All of these are read-modify-writes of one
// atomic, so they are totally ordered:
// - a submit that entered before CLOSED was set is counted in `state`, and
//   the stop waits (`seal`) until it leaves. Whatever it does in
//   between — enqueue, or give up and hand the job back — is finished before
//   the stop looks at the lanes for the last time;
// - a submit that enters after CLOSED was set sees the bit and hands its job
//   back without touching a lane.
// (A submit first reads its stripe and, if CLOSED is already visible, is
// refused without entering at all. That read is only a shortcut: CLOSED is
// never cleared, so seeing it is proof intake is closed; not seeing it
// proves nothing, and the read-modify-write decides. Its use is liveness:
// once CLOSED is visible on a stripe, no submit enters it again, so only
// the submits that read the stripe before the close can still keep `seal`
// waiting — at most one per producer thread — however fast producers
// retry against a stopped pool.)
// So once `seal` returns, no push can ever reach a lane again, and a
// job is either in a lane (and will be run or drained by the stop) or back
// in its caller's hands — never both, never neither.
//
// The accepted field of a stripe would wrap after 2^43 jobs through it
// (days of empty jobs from one producer thread). A submit that finds its
// stripe at 2^42 moves 2^41 of the count to `carried`, one mover at a time
// (`carry_lock`), inside a seqlock (`carry_seq` odd while moving): first
// `carried += 2^41`, then the stripe's field -= 2^41. `accepted()` retries
// while a move is under way, so it never sees a count twice or not at all.
// The move never touches the CLOSED bit or the in-flight count.
//
// A submit blocked on a full lane is inside the gate, so the stop must wake
// it: `close` sets CLOSED and then notifies every lane's `room` group; the
// blocked submit checks CLOSED under that group's lock before each sleep,
// and hands its job back.

/// The intake gate: closes intake and counts submits in progress.
#[derive(Debug)]
struct Gate {
    /// Per stripe: CLOSED | IN_FLIGHT × submits inside | ACCEPTED × jobs.
    stripes: [CachePadded<AtomicU64>; STRIPES],
    /// Guards the stopper's sleep in `seal`.
    lock: Mutex<()>,
    /// Wakes the stopper when the last submit leaves a closed gate.
    cv: Condvar,
    /// Accepted jobs moved out of the stripes (see the gate's comment).
    carried: AtomicU64,
    /// Odd while a carry is under way.
    carry_seq: AtomicU64,
    /// One carry at a time.
    carry_lock: Mutex<()>,
}

// Sleeping workers (the wake-up protocol).
//
// A worker that finds every lane it serves empty sleeps on its group's
// condvar. Producer and worker form a Dekker pair:
//   producer: enqueue (a SeqCst read-modify-write of the lane's tail);
//             read `sleepers` (SeqCst)                  -> notify if > 0
//   worker:   sleepers += 1 (SeqCst); fence(SeqCst);
//             look at the lanes (SeqCst loads of each tail) -> sleep if empty
// Every access in the pair is SeqCst, so all of them fall in one total
// order that agrees with each thread's program order. If the producer's
// read of `sleepers` misses the worker's increment, that read comes before
// the increment in the order, so the producer's enqueue does too, and the
// worker's later SeqCst load of the tail sees the job. Either the worker's
// re-check sees the job, or the producer sees the sleeper. The producer's
// side needs no fence of its own: the enqueue's compare-and-swap is one
// (`Queue` requires it of every lane queue; crossbeam-channel's array
// flavor does it), and a fence there — an `mfence` on x86 — cost the
// submit path about a sixth of an empty job's wall time. The worker holds
// the group lock from its increment until `wait` releases it, and the
// producer takes that lock before notifying, so the notify cannot fall into
// the gap between the check and the wait.
//
// Urgent jobs go to an idle reserved worker first, else to a general one.
// Reserved and general workers sleep in separate groups so that a notify for
// a Normal job is never spent on a worker that cannot take it.

// Backpressure (producers blocked on a full lane).
//
// A producer that finds its lane full registers in the lane's `room` group
// and re-tries the push before sleeping: the mirror image of a sleeping
// worker. Waking it for every freed slot would make producer and worker
// ping-pong through the scheduler once per job, so a worker that frees a
// slot wakes the group only once the lane is down to `low_water` (half its
// capacity): the producer then refills half a lane in one go. That check is
// a SeqCst load on the worker's hot path, ordered after the dequeue's SeqCst
// compare-and-swap (see `freed_slot`), and backed by the worker's idle
// path, which runs after a SeqCst fence and wakes every group with a
// registered producer before the worker sleeps. So a blocked producer is
// woken at the latest when its lane has drained to `low_water`, or when the
// workers run out of work.
// A deadline is honoured by one last `try_push` when it passes: a timed
// submit is refused only if its lane is full at its deadline.

// Idle waiters (`Pool::wait_idle`).
//
// A waiter registers in `idle`, then checks "every accepted job finished"
// under the group lock, then sleeps. Whatever can make that true wakes the
// group: a worker recording a job's outcome (a relaxed check on its hot
// path) and — the fenced backstop against a stale relaxed read — a worker
// about to sleep because the lanes are empty, which is where a running
// pool's worker always goes after the last job. Where no worker's idle path
// follows, the wake-up itself is fenced: a worker leaving its loop (before
// its hooks, which may wait for the waiter: a worker that a stop's
// `discard` sent out of the loop never reached the idle path), a worker
// exiting, a stop counting the jobs it hands back (after the last worker
// exited), and a refused submit taking its acceptance back (the workers may
// all be asleep by then). Both fenced wake-ups on a worker's way out
// (`take`'s idle path, the loop's exit) come before any user hook runs.

/// One group of sleepers: idle workers, or producers waiting for room.
#[derive(Debug)]
struct Sleepers {
    /// Threads that registered to sleep (some may be re-checking).
    count: CachePadded<AtomicUsize>,
    /// Held by a thread from registering until it waits; counts the
    /// threads waiting on `cv` and the wake-ups sent to them.
    lock: Mutex<Asleep>,
    /// Where the threads sleep.
    cv: Condvar,
}

/// The threads in `Sleepers::cv`, and how many of them were already sent a
/// wake-up they have not woken from yet. `notify_one` tells whether it woke
/// a thread nobody else had woken: two urgent submits in a row, with one
/// reserved worker asleep, must not both spend their wake-up on it while
/// the general workers sleep on (see `wake_for`).
#[derive(Debug, Default)]
struct Asleep {
    waiting: usize,
    signalled: usize,
}

impl Sleepers {
    fn new() -> Sleepers {
        Sleepers {
            count: CachePadded::new(AtomicUsize::new(0)),
            lock: Mutex::new(Asleep::default()),
            cv: Condvar::new(),
        }
    }

    /// Wakes one waiting thread that no earlier call has woken; returns
    /// false if there is none.
    fn notify_one(&self) -> bool {
        let mut asleep = self.lock.lock();
        if asleep.waiting > asleep.signalled {
            asleep.signalled += 1;
            self.cv.notify_one();
            true
        } else {
            false
        }
    }

    fn notify_all(&self) {
        let mut asleep = self.lock.lock();
        asleep.signalled = asleep.waiting;
        self.cv.notify_all();
    }

    /// Waits on `cv` (until `deadline`, if any) with the bookkeeping of
    /// `Asleep`; returns whether the deadline passed.
    fn wait(&self, guard: &mut MutexGuard<'_, Asleep>, deadline: Option<Instant>) -> bool {
        guard.waiting += 1;
        let timed_out = match deadline {
            Some(deadline) => self.cv.wait_until(guard, deadline).timed_out(),
            None => {
                self.cv.wait(guard);
                false
            }
        };
        guard.waiting -= 1;
        // A thread woken by a notify consumes its wake-up; one that timed
        // out (or woke spuriously) may take another's, which at worst
        // makes a later `notify_one` think a thread is still unwoken.
        guard.signalled = guard.signalled.saturating_sub(1);
        timed_out
    }
}

/// The lanes of one pool.
#[derive(Debug)]
pub(crate) struct Lanes<J> {
    /// The queues, indexed by `Priority::index`.
    queues: [LaneQueue<Envelope<J>>; 3],
    /// Capacity of each lane.
    capacity: [usize; 3],
    /// Per lane: the depth at or below which freeing a slot wakes blocked
    /// producers (`Builder::low_water`, by default half the capacity).
    low_water: [usize; 3],
    /// Per lane: producers waiting for room.
    room: [Sleepers; 3],
    /// Closes intake and tracks submits in progress.
    gate: Gate,
    /// Set once intake is closed and no submit is in progress: lanes only
    /// shrink from then on, and a worker that finds them empty exits.
    sealed: AtomicBool,
    /// Sleeping general workers.
    general: Sleepers,
    /// Sleeping reserved urgent workers.
    urgent: Sleepers,
    /// Threads in `Pool::wait_idle` (see "Idle waiters").
    idle: Sleepers,
    /// The clock of the nanosecond timestamps in envelopes and worker
    /// slots; `None` if jobs are not timestamped (`Builder::timing`).
    clock: Option<Clock>,
    /// Per lane: the latest time (on `clock`) the lane was seen empty, by a
    /// worker about to sleep or by a `Stats` snapshot (`Stats::oldest_wait`).
    seen_empty_at: [AtomicU64; 3],
}

#[cfg(not(miri))]
use quanta::Clock as ClockSource;

#[cfg(miri)]
use miri_clock::ClockSource;

/// Miri cannot execute `cpuid` or `rdtsc`, which `quanta` needs: under it
/// the std clock stands in, with the three methods `Clock` uses.
#[cfg(miri)]
mod miri_clock {
    use std::time::Instant;

    #[derive(Debug)]
    pub(super) struct ClockSource(Instant);

    impl ClockSource {
        pub(super) fn new() -> ClockSource {
            ClockSource(Instant::now())
        }

        pub(super) fn raw(&self) -> u64 {
            u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
        }

        pub(super) fn delta_as_nanos(&self, start: u64, end: u64) -> u64 {
            end.saturating_sub(start)
        }
    }
}

/// The pool's clock: nanoseconds since the pool was built, read from the
/// CPU's time-stamp counter where it is invariant (`quanta`; about 9 ns a
/// read on the 2-core host, against 24 ns for `Instant::now`, and two reads
/// per job are the largest cost of a small job), else from the OS's
/// monotonic clock. Readings from different threads are compared with
/// saturating arithmetic, so a counter slightly out of step between cores
/// gives a zero wait, never a wrapped one.
#[derive(Debug)]
struct Clock {
    source: ClockSource,
    /// The raw reading at the pool's epoch.
    epoch: u64,
    /// The std clock at the same moment.
    std_epoch: Instant,
}

impl Clock {
    fn new() -> Clock {
        let source = ClockSource::new();
        let std_epoch = Instant::now();
        let epoch = source.raw();
        Clock {
            source,
            epoch,
            std_epoch,
        }
    }

    /// Nanoseconds since the epoch.
    fn now(&self) -> u64 {
        self.source.delta_as_nanos(self.epoch, self.source.raw())
    }

    /// The std `Instant` of the reading `nanos`, interpolated between the
    /// epoch and now on both clocks. The counter's calibration is only
    /// good to a fraction of a per mille, which over an hour is seconds;
    /// interpolating cancels it, so the result is as exact as the two
    /// clocks are linear.
    fn instant_at(&self, nanos: u64) -> Instant {
        let pool_now = self.now();
        let std_now = Instant::now();
        if nanos >= pool_now {
            return std_now;
        }
        let real = std_now.saturating_duration_since(self.std_epoch).as_nanos();
        let scaled = real * u128::from(nanos) / u128::from(pool_now);
        self.std_epoch + Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
    }
}

impl<J> Lanes<J> {
    /// Creates the lanes; each preallocates its `capacity` slots. Producers
    /// blocked on a full lane are woken once it is down to `low_water`.
    pub(crate) fn new(capacity: [usize; 3], low_water: [usize; 3], timing: bool) -> Lanes<J> {
        Lanes {
            queues: capacity.map(LaneQueue::with_capacity),
            capacity,
            low_water,
            room: [Sleepers::new(), Sleepers::new(), Sleepers::new()],
            gate: Gate {
                stripes: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
                lock: Mutex::new(()),
                cv: Condvar::new(),
                carried: AtomicU64::new(0),
                carry_seq: AtomicU64::new(0),
                carry_lock: Mutex::new(()),
            },
            sealed: AtomicBool::new(false),
            general: Sleepers::new(),
            idle: Sleepers::new(),
            urgent: Sleepers::new(),
            // Only a timed pool builds the clock: the first one in a process
            // calibrates the counter (see `Builder::timing`).
            clock: timing.then(Clock::new),
            seen_empty_at: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Nanoseconds since the pool's epoch if jobs are timestamped, else 0
    /// (no clock read).
    pub(crate) fn stamp(&self) -> u64 {
        match &self.clock {
            Some(clock) => clock.now(),
            None => 0,
        }
    }

    /// Per lane: when it was last seen empty (see the field).
    pub(crate) fn seen_empty_at(&self) -> &[AtomicU64; 3] {
        &self.seen_empty_at
    }

    /// On a worker's idle path (about to sleep, or just woken): records
    /// `now` for the lanes it serves that are empty, so that
    /// `Stats::oldest_wait` of a lane that ran dry and later refilled
    /// counts from no earlier than this, not from the last job taken before
    /// the pool went idle. Once per sleep or wake-up, never per job.
    fn note_empty_lanes(&self, role: Role, now: u64) {
        if self.clock.is_none() {
            return;
        }
        let served = match role {
            Role::General => 3,
            Role::UrgentOnly => 1,
        };
        for lane in 0..served {
            if self.queues[lane].is_empty() {
                self.seen_empty_at[lane].fetch_max(now, Ordering::Relaxed);
            }
        }
    }

    /// Whether jobs are timestamped.
    pub(crate) fn timing(&self) -> bool {
        self.clock.is_some()
    }

    /// The std `Instant` of the pool-clock reading `nanos` (now, if jobs
    /// are not timestamped).
    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        match &self.clock {
            Some(clock) => clock.instant_at(nanos),
            None => Instant::now(),
        }
    }

    /// Jobs waiting in each lane.
    pub(crate) fn lens(&self) -> [usize; 3] {
        [
            self.queues[0].len(),
            self.queues[1].len(),
            self.queues[2].len(),
        ]
    }

    /// Capacity of each lane.
    pub(crate) fn capacity(&self) -> [usize; 3] {
        self.capacity
    }

    /// Enqueues `job` in `lane`, waiting for room as `wait` allows; counts
    /// it as accepted (in the gate) or refused (in `counters`).
    pub(crate) fn push(
        &self,
        lane: Priority,
        job: J,
        wait: Wait,
        counters: &Counters,
    ) -> Result<(), Refused<J>> {
        let stripe = self.stripe();
        // A submit that can already see the close is refused without
        // entering the gate, so producers retrying against a stopped pool
        // neither keep `seal` waiting nor contend on the stopper's lock.
        if stripe.load(Ordering::Relaxed) & CLOSED != 0 {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Stopped(job));
        }
        let prev = stripe.fetch_add(IN_FLIGHT + ACCEPTED, Ordering::AcqRel);
        if prev >= CARRY_AT {
            self.carry(stripe);
        }
        if prev & CLOSED != 0 {
            self.leave_gate(stripe, IN_FLIGHT + ACCEPTED);
            counters.refused.fetch_add(1, Ordering::Relaxed);
            // A `wait_idle` may have seen the brief acceptance and gone back
            // to sleep; nothing else would wake it on a stopped pool.
            self.wake_idle_waiters_fenced();
            return Err(Refused::Stopped(job));
        }
        let envelope = Envelope {
            job,
            accepted_at: self.stamp(),
        };
        let queue = &self.queues[lane.index()];
        let result = match queue.try_push(envelope) {
            Ok(()) => Ok(()),
            Err(envelope) => match wait {
                Wait::Never => Err(Refused::Full(envelope.job)),
                Wait::Until(deadline) => self.push_blocking(lane, envelope, deadline),
            },
        };
        match result {
            Ok(()) => {
                self.wake_for(lane);
                self.leave_gate(stripe, IN_FLIGHT);
            }
            Err(_) => {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                self.leave_gate(stripe, IN_FLIGHT + ACCEPTED);
                // Taking back an acceptance can make the pool idle, after
                // every worker's idle path has run: fenced, so the check
                // cannot miss a waiter that registered meanwhile.
                self.wake_idle_waiters_fenced();
            }
        }
        result
    }

    /// Waits for room in a full lane (see "Backpressure"), for the
    /// deadline, or for intake to close, whichever comes first.
    fn push_blocking(
        &self,
        lane: Priority,
        mut envelope: Envelope<J>,
        deadline: Option<Instant>,
    ) -> Result<(), Refused<J>> {
        let queue = &self.queues[lane.index()];
        let room = &self.room[lane.index()];
        loop {
            let mut guard = room.lock.lock();
            room.count.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // Under the lock: `close` sets CLOSED before it takes this lock
            // to notify, so a close is either seen here or wakes the wait.
            if self.is_closed() {
                room.count.fetch_sub(1, Ordering::SeqCst);
                return Err(Refused::Stopped(envelope.job));
            }
            envelope = match queue.try_push(envelope) {
                Ok(()) => {
                    room.count.fetch_sub(1, Ordering::SeqCst);
                    return Ok(());
                }
                Err(envelope) => envelope,
            };
            let timed_out = room.wait(&mut guard, deadline);
            room.count.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                drop(guard);
                // A close that raced the deadline wins: once intake is
                // closed, every submit is refused as stopped.
                if self.is_closed() {
                    return Err(Refused::Stopped(envelope.job));
                }
                return queue
                    .try_push(envelope)
                    .map_err(|envelope| Refused::Timeout(envelope.job));
            }
        }
    }

    /// After a worker took a job from lane `index`: wakes producers waiting
    /// for room once the lane is down to its low-water mark.
    fn freed_slot(&self, index: usize) {
        let room = &self.room[index];
        // SeqCst, not Relaxed: pairs with the producer's registration and
        // fence in `push_blocking`. The dequeue just before this was
        // crossbeam's SeqCst compare-and-swap of the lane's head, so either
        // this load sees the producer registered, or the producer's `try_push`
        // after its fence sees the freed slot. (A plain load on x86; without
        // it, on a weakly ordered CPU a worker kept busy by other lanes
        // could leave the producer asleep with room in its lane.)
        if room.count.load(Ordering::SeqCst) > 0
            && self.queues[index].len() <= self.low_water[index]
        {
            room.notify_all();
        }
    }

    /// After a job reached a terminal state (or an acceptance was taken
    /// back): wakes `wait_idle` callers, if any. A relaxed check, backed by
    /// the fenced one on a worker's idle path (see "Idle waiters").
    pub(crate) fn wake_idle_waiters(&self) {
        if self.idle.count.load(Ordering::Relaxed) > 0 {
            self.idle.notify_all();
        }
    }

    /// [`wake_idle_waiters`](Self::wake_idle_waiters) with a full fence:
    /// for the paths after which no worker's idle path may follow (a
    /// worker exiting, a stop counting jobs unrun, a refused submit taking
    /// its acceptance back), so a stale read of the waiter count must not
    /// be possible.
    pub(crate) fn wake_idle_waiters_fenced(&self) {
        // Pairs with the waiter's fence after it registers.
        fence(Ordering::SeqCst);
        self.wake_idle_waiters();
    }

    /// Waits until `is_idle` holds, re-checking whenever a job finishes or
    /// a worker goes idle or exits, or until `deadline` (if any) passes.
    /// Returns whether `is_idle` held; it is checked once more after the
    /// deadline, so an idle pool is reported idle however late the waiter
    /// woke.
    pub(crate) fn wait_idle(&self, is_idle: impl Fn() -> bool, deadline: Option<Instant>) -> bool {
        let mut guard = self.idle.lock.lock();
        loop {
            self.idle.count.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if is_idle() {
                self.idle.count.fetch_sub(1, Ordering::SeqCst);
                return true;
            }
            let timed_out = self.idle.wait(&mut guard, deadline);
            self.idle.count.fetch_sub(1, Ordering::SeqCst);
            if timed_out {
                return is_idle();
            }
        }
    }

    /// The calling thread's gate stripe.
    fn stripe(&self) -> &AtomicU64 {
        let index = STRIPE.with(|stripe| {
            let mut index = stripe.get();
            if index == usize::MAX {
                index = NEXT_STRIPE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % STRIPES;
                stripe.set(index);
            }
            index
        });
        &self.gate.stripes[index]
    }

    /// Leaves the gate, taking back `amount` (the acceptance too, for a
    /// refused job); the last submit to leave a closed gate wakes the
    /// stopper waiting in `seal`.
    fn leave_gate(&self, stripe: &AtomicU64, amount: u64) {
        let prev = stripe.fetch_sub(amount, Ordering::AcqRel);
        if prev & (CLOSED | IN_FLIGHT_MASK) == CLOSED | IN_FLIGHT {
            drop(self.gate.lock.lock());
            self.gate.cv.notify_all();
        }
    }

    /// Wakes a worker that can take a job just pushed to `lane`.
    ///
    /// An urgent job goes to a sleeping reserved worker if one is still
    /// unwoken, else to a general worker: general workers take urgent jobs
    /// too, so a second urgent job must not wait for the one reserved
    /// worker to finish the first while general workers sleep.
    fn wake_for(&self, lane: Priority) {
        // SeqCst loads, no fence: see "Sleeping workers".
        if lane == Priority::Urgent
            && self.urgent.count.load(Ordering::SeqCst) > 0
            && self.urgent.notify_one()
        {
            return;
        }
        if self.general.count.load(Ordering::SeqCst) > 0 {
            self.general.notify_one();
        }
    }

    /// Closes intake (idempotent) and wakes every submitter blocked on a
    /// full lane.
    pub(crate) fn close(&self) {
        for stripe in &self.gate.stripes {
            stripe.fetch_or(CLOSED, Ordering::SeqCst);
        }
        for room in &self.room {
            room.notify_all();
        }
    }

    /// Jobs accepted so far. Before the seal this includes, for a moment,
    /// submits that are being refused.
    pub(crate) fn accepted(&self) -> u64 {
        let gate = &self.gate;
        // Once sealed, every submit still inside the gate entered after the
        // close and is being refused: it added one `IN_FLIGHT` and one
        // `ACCEPTED` in the same read-modify-write and takes both back in
        // one, so subtracting the stripe's in-flight count leaves only the
        // jobs that really were accepted. (Before the seal an in-flight
        // submit may still be accepted, and is counted.)
        let sealed = self.sealed.load(Ordering::SeqCst);
        loop {
            let seq = gate.carry_seq.load(Ordering::SeqCst);
            if seq & 1 == 0 {
                let (mut in_stripes, mut refusing) = (0u64, 0u64);
                for stripe in &gate.stripes {
                    let word = stripe.load(Ordering::SeqCst);
                    in_stripes += word / ACCEPTED;
                    if sealed {
                        refusing += (word & IN_FLIGHT_MASK) / IN_FLIGHT;
                    }
                }
                // (A carry may have moved a refusing submit's count to
                // `carried`: subtract from the total, not per stripe.)
                let total =
                    (in_stripes + gate.carried.load(Ordering::SeqCst)).saturating_sub(refusing);
                if gate.carry_seq.load(Ordering::SeqCst) == seq {
                    return total;
                }
            }
            // A carry is moving 2^41 jobs between two counters: a few
            // instructions, once every 2^41 submits on a stripe.
            crate::sync::thread::yield_now();
        }
    }

    /// Moves `CARRY` accepted jobs from `stripe` to `carried` if the
    /// stripe's count is still at `CARRY_AT` (see the gate's comment).
    #[cold]
    fn carry(&self, stripe: &AtomicU64) {
        let gate = &self.gate;
        let _one_at_a_time = gate.carry_lock.lock();
        if stripe.load(Ordering::SeqCst) < CARRY_AT {
            return; // another submit on this stripe moved it already
        }
        gate.carry_seq.fetch_add(1, Ordering::SeqCst);
        gate.carried.fetch_add(CARRY, Ordering::SeqCst);
        stripe.fetch_sub(CARRY * ACCEPTED, Ordering::SeqCst);
        gate.carry_seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether intake is closed.
    pub(crate) fn is_closed(&self) -> bool {
        // `close` sets CLOSED on every stripe before it wakes anyone, so
        // any stripe tells; the last one is set last.
        self.gate.stripes[STRIPES - 1].load(Ordering::SeqCst) & CLOSED != 0
    }

    /// Whether intake is closed to the calling thread: its own stripe, or
    /// every stripe (the last one, set last). Agrees with the calling
    /// thread's own submits: once true, they are refused, and after one was
    /// refused as stopped it is true, even while `close` is still setting
    /// the other stripes.
    pub(crate) fn is_closed_to_caller(&self) -> bool {
        self.stripe().load(Ordering::SeqCst) & CLOSED != 0 || self.is_closed()
    }

    /// After `close`: waits until every submit that entered the gate before
    /// it closed has left, then seals the lanes and wakes every worker.
    pub(crate) fn seal(&self) {
        let mut guard = self.gate.lock.lock();
        // Stripe by stripe: a stripe seen once with nobody inside after its
        // CLOSED bit was set has been left by every submit that entered it
        // before the close (anyone inside later entered after the close
        // and is being refused), so no stripe has to be seen empty at the
        // same moment as another.
        for stripe in &self.gate.stripes {
            while stripe.load(Ordering::Acquire) & IN_FLIGHT_MASK != 0 {
                self.gate.cv.wait(&mut guard);
            }
        }
        drop(guard);
        self.sealed.store(true, Ordering::SeqCst);
        self.general.notify_all();
        self.urgent.notify_all();
    }

    /// Takes every job left in the lanes, highest lane first, each lane in
    /// acceptance order. Only meaningful once sealed.
    pub(crate) fn drain(&self, mut each: impl FnMut(Priority, Envelope<J>)) {
        for lane in Priority::ALL {
            while let Some(envelope) = self.queues[lane.index()].try_pop() {
                each(lane, envelope);
            }
        }
    }

    /// The next job for a worker: highest lane first (subject to `picker`'s
    /// aging). Sleeps while the lanes are empty; returns `None` once they
    /// are sealed and empty.
    ///
    /// `on_idle`, if given, runs once when the lanes have stayed empty
    /// through the spin, before the worker sleeps or exits.
    pub(crate) fn take(
        &self,
        picker: &mut Picker,
        on_idle: Option<&mut dyn FnMut()>,
    ) -> Option<(Priority, Envelope<J>)> {
        let spin = Spin::new();
        loop {
            if let Some(found) = picker.try_take(self) {
                return Some(found);
            }
            if !spin.again() {
                break;
            }
        }
        // Out of work: wake `wait_idle` callers now, with the fence the
        // relaxed check after the last job lacked, rather than only once
        // the idle hook below has returned (a hook may take long, or wait
        // for something the caller of `wait_idle` does next).
        self.wake_idle_waiters_fenced();
        if let Some(on_idle) = on_idle {
            on_idle();
        }
        let group = match picker.role {
            Role::General => &self.general,
            Role::UrgentOnly => &self.urgent,
        };
        loop {
            let mut guard = group.lock.lock();
            group.count.fetch_add(1, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            // Read `sealed` before the lanes: if it is set, nothing can be
            // pushed any more, so empty lanes stay empty.
            let sealed = self.sealed.load(Ordering::SeqCst);
            // Read before the lanes, so a lane seen empty below was empty at
            // or after `now`.
            let now = self.stamp();
            let found = picker.try_take(self);
            self.note_empty_lanes(picker.role, now);
            if let Some(found) = found {
                group.count.fetch_sub(1, Ordering::SeqCst);
                return Some(found);
            }
            if sealed {
                group.count.fetch_sub(1, Ordering::SeqCst);
                return None;
            }
            // About to sleep with the lanes empty: no idle waiter may stay
            // asleep (see "Idle waiters"), and no producer may stay
            // blocked waiting for this worker to free a slot (see
            // "Backpressure"; the fence above orders this load).
            let served = match picker.role {
                Role::General => &self.room[..],
                Role::UrgentOnly => &self.room[..1],
            };
            for room in served.iter().chain([&self.idle]) {
                if room.count.load(Ordering::SeqCst) > 0 {
                    room.notify_all();
                }
            }
            group.wait(&mut guard, None);
            group.count.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// A worker's lane choice: strict priority, optionally with aging so a
/// lower lane is not starved (see `Builder::starvation_bound`).
#[derive(Debug)]
pub(crate) struct Picker {
    /// Which lanes this worker serves.
    role: Role,
    /// After this many dequeues from other lanes while a lane waits, that
    /// lane is served next. `None`: strict priority.
    bound: Option<u32>,
    /// Per lane: dequeues from higher lanes since this worker, taking one,
    /// saw the lane with work waiting; back to 0 when the worker takes
    /// from the lane or finds it empty while looking for work.
    passed_over: [u32; 3],
}

impl Picker {
    pub(crate) fn new(role: Role, bound: Option<u32>) -> Picker {
        Picker {
            role,
            bound: if role == Role::General { bound } else { None },
            passed_over: [0; 3],
        }
    }

    /// One non-blocking look at the lanes this worker serves.
    fn try_take<J>(&mut self, lanes: &Lanes<J>) -> Option<(Priority, Envelope<J>)> {
        if self.role == Role::UrgentOnly {
            let envelope = lanes.queues[0].try_pop()?;
            lanes.freed_slot(0);
            return Some((Priority::Urgent, envelope));
        }
        if let Some(bound) = self.bound {
            // A lower lane that waited through `bound` dequeues goes first
            // (the higher of two due lanes first).
            for index in 1..3 {
                if self.passed_over[index] >= bound {
                    if let Some(envelope) = lanes.queues[index].try_pop() {
                        return Some(self.took(lanes, index, envelope));
                    }
                    self.passed_over[index] = 0;
                }
            }
        }
        for index in 0..3 {
            if let Some(envelope) = lanes.queues[index].try_pop() {
                return Some(self.took(lanes, index, envelope));
            }
            // Found empty: a lane's count covers one stretch of waiting.
            self.passed_over[index] = 0;
        }
        None
    }

    /// Records a dequeue from lane `index` for aging.
    fn took<J>(
        &mut self,
        lanes: &Lanes<J>,
        index: usize,
        envelope: Envelope<J>,
    ) -> (Priority, Envelope<J>) {
        lanes.freed_slot(index);
        if self.bound.is_some() {
            // Only a dequeue from a *higher* lane passes a lane over: were a
            // Bulk dequeue to age Normal, Urgent would lose its long-run
            // `bound / (bound + 2)` share under full saturation.
            //
            // A lane is looked at only to start its count, not after every
            // dequeue: `is_empty` reads the lane's head and tail, cache
            // lines that producers and the other workers write, and paying
            // that on every dequeue cost 1.2–1.4x the floor where the lanes
            // are all busy (1 producer, 4 workers, 1,000,000 empty jobs
            // spread over three lanes) against 0.9–1.15x this way. Once
            // counting, the worker assumes the lane still waits; if other
            // workers empty it meanwhile, the count carries on until this
            // worker finds it empty (in `try_take`), so a job arriving in
            // between may go ahead sooner than `bound` dequeues. With one
            // worker only this worker takes from the lane, so the two ways
            // agree exactly.
            for other in 1..3 {
                if other == index {
                    self.passed_over[other] = 0;
                } else if index < other
                    && (self.passed_over[other] > 0 || !lanes.queues[other].is_empty())
                {
                    self.passed_over[other] = self.passed_over[other].saturating_add(1);
                }
            }
        }
        (Priority::from_index(index), envelope)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Pushes 4 jobs to `Normal`, checking after each that `accepted()`
    /// counts on exactly from `start`.
    fn push_four_counting(lanes: &Lanes<u32>, counters: &Counters, start: u64) {
        for job in 0..4 {
            assert!(lanes
                .push(Priority::Normal, job, Wait::Never, counters)
                .is_ok());
            assert_eq!(lanes.accepted(), start + u64::from(job) + 1);
        }
    }

    /// A stripe about to pass 2^42 accepted jobs carries 2^41 of them to
    /// `carried`; the total stays exact and the gate's other bits are kept.
    #[test]
    fn the_accepted_count_carries_instead_of_wrapping() {
        let lanes: Lanes<u32> = Lanes::new([4, 8, 4], [2, 4, 2], false);
        let counters = Counters::default();
        // Assign this thread its stripe, then pretend 2^42 - 2 jobs went
        // through it (and none through any other).
        let stripe = lanes.stripe();
        let start = (1_u64 << 42) - 2;
        stripe.store(start * ACCEPTED, Ordering::SeqCst);
        assert_eq!(lanes.accepted(), start);
        push_four_counting(&lanes, &counters, start);
        // The submit that found 2^42 moved 2^41 out of the stripe, once.
        assert_eq!(lanes.gate.carried.load(Ordering::SeqCst), CARRY);
        assert_eq!(stripe.load(Ordering::SeqCst) / ACCEPTED, start + 4 - CARRY);
        assert_eq!(lanes.gate.carry_seq.load(Ordering::SeqCst), 2);
        // Nothing in flight, intake open: the low bits are untouched.
        assert_eq!(stripe.load(Ordering::SeqCst) & (CLOSED | IN_FLIGHT_MASK), 0);
        // Closing still works, and a refused submit takes its count back.
        lanes.close();
        assert!(lanes
            .push(Priority::Normal, 9, Wait::Never, &counters)
            .is_err());
        assert_eq!(lanes.accepted(), start + 4);
        assert_eq!(stripe.load(Ordering::SeqCst) & CLOSED, CLOSED);
    }

    /// Right at the edge of the 43-bit field, counting goes on past it
    /// (without the carry, the fourth submit would wrap it to zero).
    #[test]
    fn the_accepted_count_goes_past_two_to_the_forty_three() {
        let lanes: Lanes<u32> = Lanes::new([4, 8, 4], [2, 4, 2], false);
        let counters = Counters::default();
        let stripe = lanes.stripe();
        let start = (1_u64 << 43) - 2;
        stripe.store(start * ACCEPTED, Ordering::SeqCst);
        push_four_counting(&lanes, &counters, start);
        assert!(stripe.load(Ordering::SeqCst) < CARRY_AT);
    }
}
