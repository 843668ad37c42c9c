//! Property test of the ledger (the whole failure catalogue of issue 4 in
//! one model; tokio #1978 — jobs lost at shutdown — and pond #108 — blocked
//! submitters never woken by stop — are the anchors it would catch): random
//! sequences of submit / try_submit / submit_timeout (own lane or `*_to`),
//! job outcomes (succeed / fail / panic), drains, and a final stop variant,
//! run against a simple model. Every id must end in exactly the model's one
//! of {succeeded, failed, panicked, unrun, abandoned, refused}; counts equal
//! the `Stats` counters; failed and panicked jobs come back with their ids;
//! unrun jobs come back in lane order, then FIFO.
//!
//! Each case runs with strict priority or a starvation bound (1–3, or the
//! default 32): the ledger must not depend on the lane choice.
//!
//! Determinism: the workers are held at a gate (jobs waiting at a latch)
//! whenever the model is updated, so nothing leaves a lane behind the
//! model's back: a full lane stays full, a `submit` into it blocks (on a
//! helper thread) until a drain makes room or a stop wakes it.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::{watchdog, Action, Arrivals, Latch, Ledger, Probe};
use proptest::prelude::*;
use triage_pool::{Pool, Priority, StopReport, SubmitTimeoutError, TrySubmitError};

/// Bound for one case; a hang fails the case instead of the run.
const CASE_LIMIT: Duration = Duration::from_secs(30);

/// Prefix of the worker threads' names, so their panics can be silenced.
const THREAD_NAME: &str = "prop-ledger";

/// How a job's run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeed,
    Fail,
    Panic,
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Op {
    /// `submit` (or `submit_to` if `to`) — blocks on a full lane.
    Submit {
        lane: Priority,
        outcome: Outcome,
        to: bool,
    },
    /// `try_submit` (or `try_submit_to`).
    TrySubmit {
        lane: Priority,
        outcome: Outcome,
        to: bool,
    },
    /// `submit_timeout` (or `_to`) with a zero or a 2 ms timeout.
    SubmitTimeout {
        lane: Priority,
        outcome: Outcome,
        to: bool,
        zero: bool,
    },
    /// Let every queued job run (and blocked submits in), then hold the
    /// workers again.
    Drain,
}

/// How the case ends.
#[derive(Debug, Clone, Copy)]
enum Final {
    Stop,
    StopNow,
    /// `stop_timeout` whose deadline passes while the workers are held.
    TimeoutExpired(u64),
    /// `stop_timeout` whose deadline is far away.
    TimeoutGenerous,
}

/// Where a job ended, in the model and in the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeeded,
    Failed,
    Panicked,
    Unrun,
    Abandoned,
    Refused,
}

#[derive(Debug, Clone)]
struct Case {
    workers: usize,
    /// `None`: strict priority; else the starvation bound (the ledger must
    /// not depend on the lane choice).
    starvation_bound: Option<u32>,
    capacity: [usize; 3],
    ops: Vec<Op>,
    end: Final,
}

/// The terminal state of a job that runs with `outcome`.
fn ran(outcome: Outcome) -> Fate {
    match outcome {
        Outcome::Succeed => Fate::Succeeded,
        Outcome::Fail => Fate::Failed,
        Outcome::Panic => Fate::Panicked,
    }
}

fn action(outcome: Outcome) -> Action {
    match outcome {
        Outcome::Succeed => Action::Succeed,
        Outcome::Fail => Action::Fail,
        Outcome::Panic => Action::PanicString,
    }
}

/// A lane other than `lane`, for the job's own priority when a `*_to`
/// submit overrides it.
fn other(lane: Priority) -> Priority {
    Priority::ALL[(lane.index() + 1) % 3]
}

/// A job blocked in `submit` on a full lane, on its own thread. Returns
/// `Ok` or whether the refusal was `Stopped`, with the refused job's id.
type Helper = (usize, Priority, JoinHandle<Result<(), (bool, usize)>>);

/// The pool, its gate and the model of its lanes while a case runs.
struct Run {
    pool: Arc<Pool<Probe>>,
    ledger: Arc<Ledger>,
    workers: usize,
    capacity: [usize; 3],
    /// The latch the current gate jobs wait at.
    latch: Arc<Latch>,
    /// Ids of the current gate jobs.
    gates: Vec<usize>,
    /// Gate jobs that started so far.
    gate_starts: Arc<Arrivals>,
    /// Gate generations so far.
    generation: usize,
    /// Next id for a gate job.
    next_gate_id: usize,
    /// `Drain` ops still ahead.
    drains_left: usize,
    /// Whether the last gate waits for the cancel flag instead of the latch
    /// (for `stop_now`: the gate must not let a worker go before the stop
    /// has raised its discard flag, which comes with the cancel flag).
    last_gate_waits_for_cancel: bool,
    /// The model: jobs queued per lane, in order, with their outcomes.
    queued: [VecDeque<(usize, Outcome)>; 3],
    /// Blocked `submit`s, oldest first, with their outcomes.
    helpers: Vec<(Helper, Outcome)>,
    /// The model's verdict per id.
    expected: HashMap<usize, Fate>,
    /// Ids refused, as the pool reported them (errors' jobs).
    refused: Vec<usize>,
}

impl Run {
    fn probe(&self, id: usize, lane: Priority, outcome: Outcome, to: bool) -> Probe {
        let own = if to { other(lane) } else { lane };
        Probe::new(id, &self.ledger)
            .lane(own)
            .action(action(outcome))
    }

    fn has_room(&self, lane: Priority) -> bool {
        self.queued[lane.index()].len() < self.capacity[lane.index()]
    }

    fn accept(&mut self, id: usize, lane: Priority, outcome: Outcome) {
        self.queued[lane.index()].push_back((id, outcome));
    }

    fn refuse(&mut self, id: usize) {
        self.expected.insert(id, Fate::Refused);
        self.refused.push(id);
    }

    /// Holds every worker at a new latch: one gate job per worker in the
    /// Bulk lane, behind everything queued (strict priority, FIFO), so once
    /// all of them started, every earlier job has run and been recorded.
    fn close_gate(&mut self) {
        self.latch = Latch::new();
        self.generation += 1;
        self.gates.clear();
        let gate_action = if self.drains_left == 0 && self.last_gate_waits_for_cancel {
            Action::WaitCancelled
        } else {
            Action::Wait(Arc::clone(&self.latch))
        };
        for _ in 0..self.workers {
            let id = self.next_gate_id;
            self.next_gate_id += 1;
            let gate = Probe::new(id, &self.ledger)
                .lane(Priority::Bulk)
                .action(gate_action.clone())
                .started(&self.gate_starts);
            self.pool.submit(gate).expect("submit gate job");
            self.gates.push(id);
        }
        self.gate_starts.wait_for(self.workers * self.generation);
    }

    fn step(&mut self, id: usize, op: &Op) {
        match *op {
            Op::Submit { lane, outcome, to } => {
                let probe = self.probe(id, lane, outcome, to);
                if self.has_room(lane) {
                    let result = if to {
                        self.pool.submit_to(lane, probe)
                    } else {
                        self.pool.submit(probe)
                    };
                    assert!(result.is_ok(), "submit {id} into a lane with room");
                    self.accept(id, lane, outcome);
                } else {
                    // The workers are held and the lane is full: the submit
                    // must block, its job counted as accepted, until a
                    // drain or the stop wakes it.
                    let accepted = self.pool.stats().accepted() + 1;
                    let tx = self.pool.submitter();
                    let (handle, tid) = common::spawn_with_tid(move || {
                        let result = if to {
                            tx.submit_to(lane, probe)
                        } else {
                            tx.submit(probe)
                        };
                        result.map_err(|e| (e.is_stopped(), e.into_inner().id))
                    });
                    common::wait_blocked_in_submit(&self.pool, accepted, &[tid]);
                    self.helpers.push(((id, lane, handle), outcome));
                }
            }
            Op::TrySubmit { lane, outcome, to } => {
                let probe = self.probe(id, lane, outcome, to);
                let result = if to {
                    self.pool.try_submit_to(lane, probe)
                } else {
                    self.pool.try_submit(probe)
                };
                match result {
                    Ok(()) => {
                        assert!(self.has_room(lane), "try_submit {id} into a full lane");
                        self.accept(id, lane, outcome);
                    }
                    Err(TrySubmitError::Full(job)) => {
                        assert!(!self.has_room(lane), "try_submit {id} refused with room");
                        assert_eq!(job.id, id);
                        self.refuse(id);
                    }
                    Err(TrySubmitError::Stopped(_)) => panic!("running pool refused {id}"),
                }
            }
            Op::SubmitTimeout {
                lane,
                outcome,
                to,
                zero,
            } => {
                let probe = self.probe(id, lane, outcome, to);
                let timeout = if zero {
                    Duration::ZERO
                } else {
                    Duration::from_millis(2)
                };
                let result = if to {
                    self.pool.submit_timeout_to(lane, probe, timeout)
                } else {
                    self.pool.submit_timeout(probe, timeout)
                };
                match result {
                    Ok(()) => {
                        assert!(self.has_room(lane), "submit_timeout {id} into a full lane");
                        self.accept(id, lane, outcome);
                    }
                    Err(SubmitTimeoutError::Timeout(job)) => {
                        assert!(
                            !self.has_room(lane),
                            "submit_timeout {id} timed out with room"
                        );
                        assert_eq!(job.id, id);
                        self.refuse(id);
                    }
                    Err(SubmitTimeoutError::Stopped(_)) => panic!("running pool refused {id}"),
                }
            }
            Op::Drain => {
                self.latch.open();
                for &gate in &self.gates {
                    self.expected.insert(gate, Fate::Succeeded);
                }
                // Room appears as the workers drain: every blocked submit
                // gets in (in some order) before the next gate is queued.
                let mut drained = Vec::new();
                for ((id, lane, handle), outcome) in std::mem::take(&mut self.helpers) {
                    let result = handle.join().expect("helper thread");
                    assert_eq!(
                        result,
                        Ok(()),
                        "blocked submit {id} ({lane}) during a drain"
                    );
                    self.expected.insert(id, ran(outcome));
                    drained.push(id);
                }
                for lane in &mut self.queued {
                    for (id, outcome) in lane.drain(..) {
                        self.expected.insert(id, ran(outcome));
                        drained.push(id);
                    }
                }
                // Every drained job has started before the next gates are
                // queued: with a starvation bound a worker may take a (Bulk)
                // gate while higher lanes still hold jobs, so the lanes must
                // be empty first for the model's view to hold.
                for id in drained {
                    assert!(
                        common::wait_until(|| self.ledger.runs(id) > 0, common::LIMIT),
                        "drained job {id} never started"
                    );
                }
                self.drains_left -= 1;
                self.close_gate();
            }
        }
    }

    /// Joins the blocked submits after a stop closed intake: each was woken
    /// and handed its job back as `Stopped`.
    fn join_helpers_refused(&mut self) {
        for ((id, lane, handle), _) in std::mem::take(&mut self.helpers) {
            let result = handle.join().expect("helper thread");
            assert_eq!(
                result,
                Err((true, id)),
                "blocked submit {id} ({lane}) at stop"
            );
            self.refuse(id);
        }
    }

    /// The model's unrun list: lane order, then FIFO.
    fn queued_in_order(&self) -> Vec<(usize, Priority)> {
        Priority::ALL
            .iter()
            .flat_map(|&lane| {
                self.queued[lane.index()]
                    .iter()
                    .map(move |&(id, _)| (id, lane))
            })
            .collect()
    }

    /// Ends the case with `end`; returns the performing report.
    fn finish(&mut self, end: Final) -> StopReport<Probe> {
        let stopper = {
            let pool = Arc::clone(&self.pool);
            thread::spawn(move || match end {
                Final::Stop => pool.stop(),
                Final::StopNow => pool.stop_now(),
                Final::TimeoutExpired(ms) => pool.stop_timeout(Duration::from_millis(ms)),
                Final::TimeoutGenerous => pool.stop_timeout(Duration::from_secs(60)),
            })
        };
        // The workers are still held, so every blocked submit is refused.
        self.join_helpers_refused();
        let runs_queue = matches!(end, Final::Stop | Final::TimeoutGenerous);
        for lane in &self.queued {
            for &(id, outcome) in lane {
                let fate = if runs_queue {
                    ran(outcome)
                } else {
                    Fate::Unrun
                };
                self.expected.insert(id, fate);
            }
        }
        if let Final::TimeoutExpired(_) = end {
            // The deadline passes while the gate jobs still run: they are
            // abandoned, and released only after the stop returned.
            let report = stopper.join().expect("stopper").expect("stop");
            self.latch.open();
            for &gate in &self.gates {
                self.expected.insert(gate, Fate::Abandoned);
            }
            // Joins the abandoned workers; nothing left to report.
            let later = self.pool.stop().expect("later stop");
            assert_eq!(later.total(), 0, "{later:?}");
            return report;
        }
        self.latch.open();
        for &gate in &self.gates {
            self.expected.insert(gate, Fate::Succeeded);
        }
        stopper.join().expect("stopper").expect("stop")
    }
}

fn run_case(case: Case) {
    let drains = case.ops.iter().filter(|op| matches!(op, Op::Drain)).count();
    let gate_ids = case.workers * (1 + drains);
    let ids = case.ops.len() + gate_ids;
    let ledger = Ledger::new(ids);
    let builder = Pool::builder().workers(case.workers);
    let builder = match case.starvation_bound {
        None => builder.strict_priority(),
        Some(bound) => builder.starvation_bound(bound),
    };
    let pool: Pool<Probe> = builder
        .capacity(Priority::Urgent, case.capacity[0])
        .capacity(Priority::Normal, case.capacity[1])
        .capacity(Priority::Bulk, case.capacity[2])
        .thread_name(THREAD_NAME)
        .build()
        .expect("build pool");
    let mut run = Run {
        pool: Arc::new(pool),
        ledger: Arc::clone(&ledger),
        workers: case.workers,
        capacity: case.capacity,
        latch: Latch::new(),
        gates: Vec::new(),
        gate_starts: Arrivals::new(),
        generation: 0,
        next_gate_id: case.ops.len(),
        drains_left: drains,
        last_gate_waits_for_cancel: matches!(case.end, Final::StopNow),
        queued: Default::default(),
        helpers: Vec::new(),
        expected: HashMap::new(),
        refused: Vec::new(),
    };
    run.close_gate();
    for (id, op) in case.ops.iter().enumerate() {
        run.step(id, op);
    }
    let model_unrun = run.queued_in_order();
    let report = run.finish(case.end);

    // Unrun: exactly the model's queue, lane order then FIFO, right lanes.
    let unrun: Vec<(usize, Priority)> = report.unrun.iter().map(|u| (u.job.id, u.lane)).collect();
    if matches!(case.end, Final::StopNow | Final::TimeoutExpired(_)) {
        assert_eq!(unrun, model_unrun, "unrun jobs: lane order, then FIFO");
    } else {
        assert!(unrun.is_empty(), "a draining stop left {unrun:?}");
    }

    // The pool's verdict per id, each id in at most one list.
    let mut actual: HashMap<usize, Fate> = HashMap::new();
    let file = |actual: &mut HashMap<usize, Fate>, id: usize, fate: Fate| {
        if let Some(before) = actual.insert(id, fate) {
            panic!("job {id} is both {before:?} and {fate:?}");
        }
    };
    for f in &report.failed {
        assert_eq!(f.error, f.job.id, "failed job carries its own error");
        file(&mut actual, f.job.id, Fate::Failed);
    }
    for p in &report.panicked {
        assert_eq!(p.message, format!("probe {}", p.job.id));
        file(&mut actual, p.job.id, Fate::Panicked);
    }
    for &(id, _) in &unrun {
        file(&mut actual, id, Fate::Unrun);
    }
    for &id in &run.refused {
        file(&mut actual, id, Fate::Refused);
    }
    let created: HashSet<usize> = run.expected.keys().copied().collect();
    for &id in &created {
        let runs = ledger.runs(id);
        match actual.get(&id) {
            Some(Fate::Failed | Fate::Panicked) => assert_eq!(runs, 1, "job {id}"),
            Some(_) => assert_eq!(runs, 0, "job {id} ran"),
            None => {
                assert_eq!(runs, 1, "job {id} was lost: not run, not handed back");
                // Ran and was not handed back: succeeded or abandoned.
                let fate = run.expected[&id];
                assert!(
                    matches!(fate, Fate::Succeeded | Fate::Abandoned),
                    "job {id}: model says {fate:?}, it ran fine"
                );
                file(&mut actual, id, fate);
            }
        }
    }
    assert_eq!(actual, run.expected, "pool vs model");

    let count = |fate: Fate| run.expected.values().filter(|&&f| f == fate).count() as u64;
    assert_eq!(report.succeeded, count(Fate::Succeeded));
    assert_eq!(report.abandoned.len() as u64, count(Fate::Abandoned));
    let stats = run.pool.stats();
    assert_eq!(
        stats.accepted(),
        created.len() as u64 - count(Fate::Refused)
    );
    assert_eq!(stats.refused(), count(Fate::Refused));
    assert_eq!(stats.succeeded(), count(Fate::Succeeded));
    assert_eq!(stats.failed(), count(Fate::Failed));
    assert_eq!(stats.panicked(), count(Fate::Panicked));
    assert_eq!(stats.unrun(), count(Fate::Unrun));
    assert_eq!(stats.abandoned(), count(Fate::Abandoned));
    assert_eq!(stats.finished(), stats.accepted());

    drop(report);
    let pool = Arc::try_unwrap(run.pool).expect("no other pool holder");
    drop(pool);
    for id in 0..ids {
        let expected = usize::from(created.contains(&id));
        assert_eq!(ledger.drops(id), expected, "job {id} drops");
    }
}

fn lane() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Urgent),
        Just(Priority::Normal),
        Just(Priority::Bulk)
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Succeed),
        1 => Just(Outcome::Fail),
        1 => Just(Outcome::Panic),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (lane(), outcome(), any::<bool>())
            .prop_map(|(lane, outcome, to)| Op::Submit { lane, outcome, to }),
        4 => (lane(), outcome(), any::<bool>())
            .prop_map(|(lane, outcome, to)| Op::TrySubmit { lane, outcome, to }),
        3 => (lane(), outcome(), any::<bool>(), any::<bool>()).prop_map(
            |(lane, outcome, to, zero)| Op::SubmitTimeout { lane, outcome, to, zero }
        ),
        1 => Just(Op::Drain),
    ]
}

fn end() -> impl Strategy<Value = Final> {
    prop_oneof![
        Just(Final::Stop),
        Just(Final::StopNow),
        (0..5_u64).prop_map(Final::TimeoutExpired),
        Just(Final::TimeoutGenerous),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        1..=2_usize,
        prop_oneof![Just(None), (1..=3_u32).prop_map(Some), Just(Some(32))],
        (1..=3_usize, 1..=3_usize, 1..=3_usize),
        prop::collection::vec(op(), 0..32),
        end(),
    )
        .prop_map(|(workers, starvation_bound, (u, n, b), ops, end)| Case {
            workers,
            starvation_bound,
            capacity: [u, n, b],
            ops,
            end,
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        // A hung case costs CASE_LIMIT; keep shrinking a hang bounded.
        max_shrink_time: 120_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_job_ends_where_the_model_says(case in case()) {
        common::quiet_panics_on(THREAD_NAME);
        watchdog(CASE_LIMIT, move || run_case(case));
    }
}
