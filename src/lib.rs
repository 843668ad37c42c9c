//! A bounded worker pool with priority lanes, built so that nothing
//! submitted to it is ever silently lost.
//!
//! `triage-pool` runs jobs of one type `J: Job` on a fixed set of OS
//! threads. Jobs wait in three bounded lanes — `Urgent`, `Normal`, `Bulk` —
//! and workers take from the highest lane that has work (a configurable
//! starvation bound lets a long-waiting lower lane through). Every job
//! that is accepted ends in exactly one terminal state, and every job that
//! did not succeed comes back to the caller with its reason: in the
//! [`StopReport`] of a stop, or earlier through
//! [`take_failed`](Submitter::take_failed) and
//! [`take_panicked`](Submitter::take_panicked). Two cases are reported
//! rather than handed back: a job still running when a
//! [`stop_timeout`](Pool::stop_timeout) gives up on it (an [`Abandoned`]
//! entry says which worker and since when; its late outcome is logged),
//! and the jobs of a pool that is dropped instead of stopped (counted in a
//! `warn` event, then dropped).
//!
//! # Quick start
//!
//! ```
//! use triage_pool::{Context, Job, Pool, Priority};
//!
//! struct Visit { subject: u32, adverse_event: bool }
//!
//! impl Job for Visit {
//!     type Error = String;
//!     fn run(&mut self, _ctx: &Context) -> Result<(), String> {
//!         if self.subject == 0 { return Err("missing subject id".into()); }
//!         Ok(()) // validate, score, write to the database...
//!     }
//!     fn priority(&self) -> Priority {
//!         if self.adverse_event { Priority::Urgent } else { Priority::Normal }
//!     }
//! }
//!
//! let pool: Pool<Visit> = Pool::builder().workers(4).build()?;
//! for subject in 0..1_000 {
//!     pool.submit(Visit { subject, adverse_event: subject % 100 == 7 })?; // blocks when full
//! }
//! let report = pool.stop()?; // drain, join, report
//! assert_eq!(report.succeeded, 999);
//! assert_eq!(report.failed[0].error, "missing subject id");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For quick scripts, [`FnJob`] wraps a closure: `Pool<FnJob>`.
//!
//! # Backpressure
//!
//! Each lane holds at most its [capacity](Builder::capacity) of jobs, and the
//! slots are allocated when the pool is built, so queued work never uses more
//! memory than configured. When a lane is full:
//! - [`submit`](Submitter::submit) blocks until the workers have drained the
//!   lane to its low-water mark, by default half its capacity
//!   ([`Builder::low_water`]; or the pool stops, which wakes it and hands
//!   the job back). Waking the producer once per half lane rather than once
//!   per freed slot keeps producer and workers from ping-ponging through the
//!   scheduler on every job;
//! - [`try_submit`](Submitter::try_submit) returns
//!   [`TrySubmitError::Full`] with the job inside, at once;
//! - [`submit_timeout`](Submitter::submit_timeout) waits up to its timeout,
//!   then returns [`SubmitTimeoutError::Timeout`] with the job inside.
//!
//! A job that submits follow-up work to its own pool is never blocked by
//! `submit` or `try_submit`: on a full lane its `submit` returns
//! [`SubmitError::Full`] instead, since workers waiting for room only
//! workers can make would deadlock. `submit_timeout` with a nonzero,
//! finite timeout waits on a worker thread too, up to that timeout. The
//! check is by thread: a thread that a job spawns is not one of the pool's
//! workers, so if the job waits for it (joins it, or waits on a channel),
//! that thread's blocking `submit` or `wait_idle` can wait for room or
//! for an idle pool that the waiting job itself holds up. Use
//! `try_submit` (or a timeout) from such threads.
//!
//! Producer threads use [`Submitter`] clones from [`Pool::submitter`].
//!
//! # Priorities
//!
//! A job's lane is its [`Job::priority`], or the lane given to a `*_to`
//! submit ([`submit_to`](Submitter::submit_to)). Workers take `Urgent` before
//! `Normal` before `Bulk`, so an urgent job never waits behind lower-lane
//! backlog: its start latency depends on how long the running jobs take, not
//! on how many are queued. (With the starvation bound below, a worker may
//! first serve at most two lower-lane jobs that came due: a bounded wait,
//! never a backlog-sized one.)
//!
//! **Admission is per lane.** Each lane has its own capacity, so a full
//! `Normal` or `Bulk` lane never blocks or refuses an `Urgent` submit.
//!
//! **Memory bound.** Every lane's slots are allocated when the pool is
//! built, so queued work never takes more than
//! `(cap_urgent + cap_normal + cap_bulk) × (size_of::<J>() + 16)` bytes
//! (plus alignment), however fast producers are. A running job holds one
//! more `J` per worker, and jobs that fail or panic are kept (by value) until
//! a stop hands them back. Jobs also move by value through the stacks of
//! the threads that submit, run and stop them; for job types of tens of
//! KiB and more, [`Builder::stack_size`] says how much stack that takes
//! (the workers' default grows with the job type), or box the job:
//! `Box<J>` is a job too, as is `Box<dyn Job<Error = E>>` for a pool of
//! mixed job types.
//!
//! **Reserved urgent workers.** [`Builder::reserved_urgent_workers`] adds
//! threads that only take urgent jobs and sleep otherwise, so an urgent job
//! starts even while every general worker is stuck in a long routine job.
//! General workers still take urgent jobs first. When the general workers'
//! jobs keep every core busy, the woken reserved thread still needs the OS
//! to give it one: [`Builder::general_worker_nice`] (Linux) lowers the
//! general workers' priority so it preempts them at once (measured on 2
//! cores with 10 ms routine jobs: urgent start p99 2.4–3.3 ms without,
//! tens of microseconds with an increment of 19 in most runs; the
//! numbers are in [`Builder::general_worker_nice`]). On Linux 6.12 or
//! later a reserved worker that asks the kernel for a short time slice from
//! [`Builder::on_worker_start`] does as well without touching the general
//! workers (see [`Builder::reserved_urgent_workers`]).
//!
//! **Starvation bound.** Under a sustained stream of higher-lane work, lower
//! lanes still progress: a general worker that has taken
//! [`starvation_bound`](Builder::starvation_bound) `k` jobs (default 32) from
//! higher lanes while a lower lane waited serves that lane next. With every
//! lane saturated, each general worker gives `Normal` and `Bulk` at least
//! one of every `k + 2` consecutive dequeues each, and `Urgent` at least `k`
//! of every `k + 3` — `k / (k + 2)` of all dequeues in the long run (94% at
//! the default). [`Builder::strict_priority`] removes the bound (lower lanes
//! wait until higher ones are empty).
//!
//! A worked example: routine visit forms go to `Normal`, re-scoring to
//! `Bulk`, adverse events to `Urgent`, with one reserved urgent worker.
//!
//! ```
//! use std::time::Duration;
//! use triage_pool::{Context, Job, Pool, Priority};
//!
//! enum Record { Visit(u32), Rescore(u32), AdverseEvent(u32) }
//!
//! impl Job for Record {
//!     type Error = String;
//!     fn run(&mut self, ctx: &Context) -> Result<(), String> {
//!         match self {
//!             // Alerting code would go here; the wait is what triage bounds.
//!             Record::AdverseEvent(subject) => {
//!                 assert!(ctx.queue_wait() < Duration::from_secs(60), "subject {subject}");
//!             }
//!             Record::Visit(subject) | Record::Rescore(subject) => {
//!                 if *subject == u32::MAX { return Err("no such subject".into()); }
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn priority(&self) -> Priority {
//!         match self {
//!             Record::AdverseEvent(_) => Priority::Urgent,
//!             Record::Visit(_) => Priority::Normal,
//!             Record::Rescore(_) => Priority::Bulk,
//!         }
//!     }
//! }
//!
//! let pool: Pool<Record> = Pool::builder()
//!     .workers(2)
//!     .reserved_urgent_workers(1)
//!     .capacity(Priority::Normal, 10_000)
//!     .build()?;
//! for subject in 0..10_000 {
//!     pool.submit(Record::Visit(subject))?;
//!     if subject % 1_000 == 0 {
//!         pool.submit(Record::Rescore(subject))?;
//!         // Taken before every queued visit and rescore (tests/lanes.rs
//!         // shows the order with the workers held).
//!         pool.submit(Record::AdverseEvent(subject))?;
//!     }
//! }
//! let report = pool.stop()?;
//! assert_eq!(report.succeeded, 10_020);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `examples/priorities.rs` runs a larger version (24,000 visits through a
//! `Normal` lane of 12,288 kept near full, some of them 5 ms jobs) twice — with
//! two general workers, then with a reserved urgent worker and
//! [`Builder::general_worker_nice`] — and prints each adverse event's queue
//! wait next to how long a FIFO pool would have made it wait.
//!
//! # Panics
//!
//! A job that panics is caught on its worker (which keeps running), and
//! comes back in [`StopReport::panicked`] with its message. A panic payload
//! whose own `Drop` panics, a job whose `Drop` panics, and a panicking worker
//! hook ([`Builder::on_worker_start`], [`Builder::on_worker_idle`],
//! [`Builder::on_worker_stop`]) are contained too.
//! Catching needs the default `panic = "unwind"`; under `panic = "abort"` a
//! panicking job aborts the process like any panic.
//!
//! # Shutdown
//!
//! | method | queued jobs | running jobs | returns |
//! |---|---|---|---|
//! | [`Pool::stop`] | run | waited for | when all ran |
//! | [`Pool::stop_now`] | handed back unrun | waited for (cancel flag up) | when running ones return |
//! | [`Pool::stop_timeout`] | run until the deadline, then handed back | abandoned at the deadline | when all ran, at the latest after the deadline plus the workers' idle and stop hooks |
//! | `drop(pool)` | run | waited for (not those a `stop_timeout` abandoned) | like `stop`; counts logged, jobs dropped |
//! | `drop(pool)` on its own worker | run by the workers, detached | not waited for | at once |
//!
//! All of them close intake first: every later submit is refused with its
//! job handed back, and submits blocked on a full lane wake up and get theirs
//! back. The [`StopReport`] returns every job that did not succeed by value:
//! failed with its error, panicked with its message, unrun (lane order, then
//! queue order, ready for a resume file). The ledger balances:
//! `accepted = succeeded + failed + panicked + unrun + abandoned + taken`,
//! where `taken` counts the failed and panicked jobs already removed with
//! [`take_failed`](Submitter::take_failed) and
//! [`take_panicked`](Submitter::take_panicked) while the pool ran.
//!
//! Stops are idempotent and may race each other and `Drop` (a `stop_now`, or
//! a `stop_timeout` whose deadline passes, escalates a `stop` already
//! draining: that call then hands the rest of the queue back unrun); a stop
//! called from one of the pool's own worker threads — inside a job or a
//! worker hook — returns [`StopError::OnWorkerThread`] instead of waiting
//! for itself.
//!
//! # Per-worker resources
//!
//! Three hooks run on each worker thread with its index: [`on_worker_start`]
//! before its first job (open a database connection into a thread-local),
//! [`on_worker_idle`] whenever it runs out of work after running jobs, and
//! before it exits if it ran a job since (flush what its jobs buffered: a batch
//! of rows written in one transaction instead of one per job), and
//! [`on_worker_stop`] as it exits (close the connection). Every stop returns
//! only after the hooks of the workers it joined have run, so a stop — even
//! `stop_now` — leaves no batch behind. A job that only buffers its work
//! reports success before the batch is written: keep your own ledger of what
//! was flushed, as `examples/batch_import` does.
//!
//! [`on_worker_start`]: Builder::on_worker_start
//! [`on_worker_idle`]: Builder::on_worker_idle
//! [`on_worker_stop`]: Builder::on_worker_stop
//!
//! # Observability
//!
//! [`Submitter::stats`] returns a cheap [`Stats`] snapshot (lane depths, busy
//! workers, ledger counters) for a progress bar; its `Display` is one line
//! for a log, and [`Submitter::wait_idle_timeout`] lets a loop print it
//! while a batch runs. A [`StopReport`] displays its counts the same way.
//! [`Submitter::queue_wait_histogram`] gives each lane's queue waits since
//! the pool was built as a [`LatencyHistogram`] (count, p50/p99 within
//! 12.5 %, mean, max): the urgent lane's p99 is the triage guarantee,
//! measured in production.
//! Each running job sees its
//! worker, lane and queue wait in its [`Context`].
//!
//! Lifecycle edges and everything that goes wrong are
//! [`tracing`](https://docs.rs/tracing) events, each with the pool's `pool`
//! id field (and `worker`, `lane` where there is one):
//!
//! | level | event |
//! |---|---|
//! | `debug` | pool started; worker started, stopped; worker priority lowered ([`Builder::general_worker_nice`]); shutdown begin, end (with the report's counts) |
//! | `warn` | a drop with jobs that did not succeed (their counts); a pool dropped on its own worker thread, and the counts of what its detached drain did not run successfully; a job still running at a `stop_timeout` deadline (abandoned), and its late outcome; a worker that could not lower its priority |
//! | `error` | a job panicked (with its message); a job's `Drop` panicked after it ran; a worker hook panicked; an abandoned job panicked after the deadline; a worker thread panicked outside a job |
//!
//! A job that succeeds or fails logs nothing: failures come back to you
//! with their errors. A subscriber that panics while recording one of
//! these events has its panic caught and dropped at the call site: it costs
//! the event, never a job, a worker or a stop's report.
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

mod builder;
mod error;
mod job;
mod lanes;
mod latency;
#[cfg(all(test, loom))]
mod loom_models;
mod os;
mod pool;
mod report;
mod stats;
mod sync;
mod unwind;
mod worker;

pub use crate::builder::Builder;
pub use crate::error::{BuildError, StopError, SubmitError, SubmitTimeoutError, TrySubmitError};
pub use crate::job::{BoxError, Context, FnJob, Job, Priority};
pub use crate::latency::LatencyHistogram;
pub use crate::pool::{Pool, Submitter};
pub use crate::report::{Abandoned, Failed, Panicked, StopReport, Unrun};
pub use crate::stats::Stats;

/// The README's code, compiled and run as a doc test so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
