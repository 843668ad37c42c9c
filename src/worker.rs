//! The worker loop: take the next job (highest lane first), run it with
//! panics caught, record its outcome; exit once the lanes are sealed and
//! empty, or as soon as a stop asks to discard queued work.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::job::{Context, Job, Priority};
use crate::lanes::{Picker, Role};
use crate::pool::Shared;
use crate::report::{Failed, Panicked};
use crate::stats::{WorkerSlot, IDLE, STARTING};
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{thread_local_cell, Ordering};
use crate::unwind;
use crate::unwind::log_event;

thread_local_cell! {
    /// Id of the pool whose worker runs on this thread; 0 on other threads.
    static CURRENT_POOL: Cell<u64> = 0;
}

/// A user callback run on a worker thread with the worker's index.
pub(crate) type Hook = Arc<dyn Fn(usize) + Send + Sync + 'static>;

/// The user's worker lifecycle callbacks (`Builder::on_worker_start` /
/// `on_worker_stop`).
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    /// Runs on each worker thread before it takes its first job.
    pub(crate) start: Option<Hook>,
    /// Runs on each worker thread after its last job, as it exits.
    pub(crate) stop: Option<Hook>,
    /// Runs on a worker thread that ran out of work, before it sleeps.
    pub(crate) idle: Option<Hook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("start", &self.start.is_some())
            .field("stop", &self.stop.is_some())
            .field("idle", &self.idle.is_some())
            .finish()
    }
}

/// Runs a hook with its panic contained (and logged at `error`).
fn call_hook(pool: u64, worker: usize, which: &'static str, hook: Option<&Hook>) {
    if let Some(hook) = hook {
        if let Err(message) = unwind::catch(|| hook(worker)) {
            log_event!(error, pool, worker, hook = which, %message, "worker hook panicked");
        }
    }
}

/// Whether the calling thread is one of the workers of pool `id`.
pub(crate) fn on_worker_of(id: u64) -> bool {
    CURRENT_POOL.with(|current| current.get() == id)
}

/// What to call a worker thread and how to start it.
#[derive(Debug)]
pub(crate) struct Spawn {
    /// Worker index (general workers first, then reserved ones).
    pub(crate) index: usize,
    /// Which lanes it serves.
    pub(crate) role: Role,
    /// Thread name.
    pub(crate) name: String,
    /// Stack size, if not the platform default.
    pub(crate) stack_size: Option<usize>,
    /// Starvation bound for its lane choice.
    pub(crate) starvation_bound: Option<u32>,
    /// How much to raise the thread's nice value before the start hook.
    pub(crate) nice: u8,
    /// Only for tests: pretend the OS refused this spawn.
    pub(crate) fail: bool,
}

/// Starts one worker thread. The caller counted it in `shared.live` first.
pub(crate) fn spawn<J: Job>(shared: &Arc<Shared<J>>, spec: Spawn) -> io::Result<JoinHandle<()>> {
    if spec.fail {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "injected spawn failure",
        ));
    }
    let mut builder = thread::Builder::new().name(spec.name);
    if let Some(size) = spec.stack_size {
        builder = builder.stack_size(size);
    }
    let shared = Arc::clone(shared);
    let (index, role, bound, nice) = (spec.index, spec.role, spec.starvation_bound, spec.nice);
    builder.spawn(move || {
        if nice > 0 {
            lower_priority(shared.id, index, nice);
        }
        run(&shared, index, Picker::new(role, bound), role);
    })
}

/// Applies `Builder::general_worker_nice` to the calling worker thread; a
/// refusal is logged and the worker runs at its inherited priority.
fn lower_priority(pool: u64, worker: usize, increment: u8) {
    match crate::os::lower_current_thread_priority(increment) {
        Ok(Some(nice)) => log_event!(debug, pool, worker, nice, "worker priority lowered"),
        Ok(None) => {}
        Err(error) => log_event!(warn,
            pool,
            worker,
            increment,
            %error,
            "could not lower the worker's priority; it keeps the inherited nice value"
        ),
    }
}

/// Counts the worker out of `shared.live` however it exits.
struct LiveGuard<'a, J: Job>(&'a Shared<J>, usize);

impl<J: Job> Drop for LiveGuard<'_, J> {
    fn drop(&mut self) {
        log_event!(debug, pool = self.0.id, worker = self.1, "worker stopped");
        self.0.worker_exited();
    }
}

/// The worker loop.
/// A worker thread: hooks around the loop; counted out of `live` at exit.
fn run<J: Job>(shared: &Shared<J>, index: usize, mut picker: Picker, role: Role) {
    CURRENT_POOL.with(|current| current.set(shared.id));
    let _live = LiveGuard(shared, index);
    log_event!(
        debug,
        pool = shared.id,
        worker = index,
        ?role,
        "worker started"
    );
    call_hook(
        shared.id,
        index,
        "on_worker_start",
        shared.hooks.start.as_ref(),
    );
    let ran = work(shared, index, &mut picker, role);
    // Wakes a `wait_idle` caller (fenced) before any hook: a worker that
    // left through a stop's `discard` never reached the idle path's
    // fenced wake-up in `Lanes::take`, and only did the relaxed check after
    // its last job, which can miss a waiter that registered meanwhile. The
    // hooks below may wait for that caller (loom model
    // `wait_idle_races_a_discarding_stop_and_a_hook_that_waits_for_it`).
    shared.lanes.wake_idle_waiters_fenced();
    if ran {
        // Left without running out of work (a stop discarded the queue or
        // abandoned this worker's job): flush like an idle worker would.
        call_hook(
            shared.id,
            index,
            "on_worker_idle",
            shared.hooks.idle.as_ref(),
        );
    }
    call_hook(
        shared.id,
        index,
        "on_worker_stop",
        shared.hooks.stop.as_ref(),
    );
}

/// Takes and runs jobs until the lanes are sealed and empty, a stop
/// discards the queue, or a stop abandons this worker's job. Returns
/// whether a job ran since the idle hook last ran.
fn work<J: Job>(shared: &Shared<J>, index: usize, picker: &mut Picker, role: Role) -> bool {
    let slot = &shared.slots[index];
    let mut ctx = Context::new(index, role == Role::UrgentOnly, Arc::clone(&shared.cancel));
    // Whether a job ran since the idle hook last ran (the hook only runs
    // once per stretch of work).
    let mut ran = false;
    let idle_hook = shared.hooks.idle.as_ref();
    let timing = shared.lanes.timing();
    loop {
        if shared.discard.load(Ordering::Acquire) {
            break;
        }
        let taken = match idle_hook {
            Some(hook) if ran => {
                let mut on_idle = || {
                    ran = false;
                    call_hook(shared.id, index, "on_worker_idle", Some(hook));
                };
                shared.lanes.take(picker, Some(&mut on_idle))
            }
            _ => shared.lanes.take(picker, None),
        };
        let Some((lane, envelope)) = taken else {
            break;
        };
        let start = shared.lanes.stamp();
        let running = start.saturating_add(1).min(STARTING - 1);
        slot.lane.store(lane.index() as u8, Ordering::Relaxed);
        slot.taken_accepted_at[lane.index()].store(envelope.accepted_at, Ordering::Relaxed);
        // Abandoning a job. The store of `running | STARTING` and the
        // `discard` load pair with the stopper's `discard` store and its
        // load of `state` (all SeqCst): either this worker sees `discard`
        // and hands the job back unrun, or the stopper sees the job (or
        // both). The stopper never touches a `STARTING` state: it waits the
        // few instructions until this worker has either handed the job back
        // (`IDLE`) or committed to run it (`running`), and only then may
        // swap `running` to `ABANDONED`. So a job this worker found
        // `discard` up for is always handed back, never reported abandoned
        // and run after the stop returned; and since only this thread
        // writes a `STARTING` state, the two stores after it need no
        // read-modify-write.
        slot.state.store(running | STARTING, Ordering::SeqCst);
        if shared.discard.load(Ordering::SeqCst) {
            slot.state.store(IDLE, Ordering::Release);
            shared.rescue(lane, envelope);
            break;
        }
        let waited = start.saturating_sub(envelope.accepted_at);
        // Before the `running` store: a stopper that abandons this job
        // synchronises with that store, so its report comes after the wait
        // is in the histogram.
        if timing {
            slot.waits.record(lane.index(), waited);
        }
        slot.state.store(running, Ordering::Release);
        ran = true;
        ctx.set_job(lane, Duration::from_nanos(waited));
        let mut job = envelope.job;
        let outcome = unwind::catch(|| job.run(&ctx));
        // Still marked running: a succeeded job's `Drop` runs here, so a
        // `stop_timeout` deadline that passes during a slow `Drop` abandons
        // the job like a slow `run` instead of waiting for it.
        let finished = if std::mem::size_of::<J>() > OUTLINE_FINISH_ABOVE {
            finish_out_of_line(shared.id, index, lane, job, outcome)
        } else {
            finish(shared.id, index, lane, job, outcome)
        };
        let abandoned = slot
            .state
            .compare_exchange(running, IDLE, Ordering::AcqRel, Ordering::Acquire)
            .is_err();
        if abandoned {
            late_outcome(shared.id, index, lane, finished);
            // No longer running anything: `Stats::busy` stops counting it.
            slot.state.store(IDLE, Ordering::Release);
            break;
        }
        record(shared, slot, index, lane, finished);
    }
    ran
}

/// A job whose `run` returned or panicked. A succeeded job is already
/// dropped; the others are kept to be handed back.
enum Finished<J: Job> {
    Succeeded,
    Failed(J, J::Error),
    Panicked(J, String),
}

/// Job types above this size are sorted by `finish_out_of_line`.
///
/// Inlined into the worker loop, `finish` and its by-value moves of the job
/// make LLVM's scalar replacement of aggregates (SROA) take time superlinear
/// in the job's size when optimising: measured with rustc 1.95 in a release
/// build of one test binary, a 64 KiB job type added 10 s, a 256 KiB one
/// 4 minutes, and a 1 GiB one (in `tests/bad_input.rs`) never finished.
/// Out of line, each of those builds in 3 s. Small jobs keep the inlined
/// path: the call would cost them about 26 instructions a job (callgrind,
/// `examples/hot_path.rs`).
const OUTLINE_FINISH_ABOVE: usize = 1024;

/// `finish` kept out of the worker loop, for large job types (see
/// `OUTLINE_FINISH_ABOVE`).
#[inline(never)]
fn finish_out_of_line<J: Job>(
    pool: u64,
    worker: usize,
    lane: Priority,
    job: J,
    outcome: Result<Result<(), J::Error>, String>,
) -> Finished<J> {
    finish(pool, worker, lane, job, outcome)
}

/// Sorts a job by its outcome, dropping it (panics contained and logged)
/// if it succeeded.
fn finish<J: Job>(
    pool: u64,
    worker: usize,
    lane: Priority,
    job: J,
    outcome: Result<Result<(), J::Error>, String>,
) -> Finished<J> {
    match outcome {
        Ok(Ok(())) => {
            if let Some(message) = unwind::drop_contained(job) {
                log_event!(error, pool, worker, %lane, %message, "dropping a finished job panicked");
            }
            Finished::Succeeded
        }
        Ok(Err(error)) => Finished::Failed(job, error),
        Err(message) => Finished::Panicked(job, message),
    }
}

/// Files a finished job under its terminal state.
fn record<J: Job>(
    shared: &Shared<J>,
    slot: &WorkerSlot,
    worker: usize,
    lane: Priority,
    finished: Finished<J>,
) {
    match finished {
        Finished::Succeeded => WorkerSlot::bump(&slot.succeeded),
        Finished::Failed(job, error) => {
            shared.failed.lock().push(Failed {
                job,
                error,
                worker,
                lane,
            });
            WorkerSlot::bump(&slot.failed);
        }
        Finished::Panicked(job, message) => {
            log_event!(error, pool = shared.id, worker, %lane, %message, "job panicked");
            shared.panicked.lock().push(Panicked {
                job,
                message,
                worker,
                lane,
            });
            WorkerSlot::bump(&slot.panicked);
        }
    }
    shared.lanes.wake_idle_waiters();
}

/// Logs the outcome of a job a `stop_timeout` deadline gave up on; the stop
/// already reported it as abandoned, so nobody is left to hand it to.
/// Rare, and out of line for the reason `OUTLINE_FINISH_ABOVE` gives.
#[cold]
#[inline(never)]
fn late_outcome<J: Job>(pool: u64, worker: usize, lane: Priority, finished: Finished<J>) {
    let outcome = match finished {
        Finished::Succeeded => "succeeded",
        Finished::Failed(job, error) => {
            let _ = unwind::drop_contained(error);
            let _ = unwind::drop_contained(job);
            "failed"
        }
        // A job panic is logged at `error` wherever it happens.
        Finished::Panicked(job, message) => {
            let _ = unwind::drop_contained(job);
            log_event!(error,
                pool,
                worker,
                %lane,
                %message,
                "abandoned job panicked after its stop deadline"
            );
            return;
        }
    };
    log_event!(warn, pool, worker, %lane, outcome, "abandoned job finished after its stop deadline");
}
