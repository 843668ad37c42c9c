//! Stress ledger (tokio #1978: jobs lost at shutdown; pond #108: blocked
//! submitters never woken by stop): `JOBS` jobs per run across 4 producers
//! using every submit flavour, 5% panicking and 5% failing, and a random stop
//! variant (stop / stop_now / stop_timeout) at a random moment; every job id
//! is accounted for exactly once — run once or handed back once, in the
//! report or (refused) in the submit's error — and dropped exactly once.
//!
//! `JOBS` is 1,000,000 in every build: one run takes under a second in a
//! debug build on 2 cores (0.3–0.7 s measured on an idle machine), so the
//! test does `RUNS` of them. Each run's seed is
//! printed (shown with a failure); set `STRESS_SEED=<n>` to replay that run.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use common::{watchdog, Action, Latch, Ledger, Probe};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use triage_pool::{
    Pool, Priority, StopReport, SubmitError, SubmitTimeoutError, Submitter, TrySubmitError,
};

/// Jobs per run: the stress size.
const JOBS: usize = 1_000_000;

/// Runs per test, each with its own seed (and so its own stop variant and
/// moment).
const RUNS: u64 = 3;

/// Producer threads; producer `p` submits ids `p, p + PRODUCERS, ...`.
const PRODUCERS: usize = 4;

/// Bound for one run: about 70 times its measured time, so only a hang trips
/// it, and `RUNS` of them (150 s) still fail with this watchdog's message
/// before nextest kills the test at 3 × 60 s (`.config/nextest.toml`).
const RUN_LIMIT: Duration = Duration::from_secs(50);

/// Prefix of the worker threads' names, so their panics can be silenced.
const THREAD_NAME: &str = "stress";

/// Per id: what its submit returned.
const NONE: u8 = 0;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 2;

/// Where an accepted job ended, from the report.
const IN_FAILED: u8 = 1;
const IN_PANICKED: u8 = 2;
const IN_UNRUN: u8 = 3;

/// splitmix64: a job's properties as a pure function of (seed, id), so a
/// replayed seed gives the same jobs whatever the thread timing.
fn mix(seed: u64, id: usize) -> u64 {
    let mut z = seed.wrapping_add((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Job `id`'s action: 5% panic, 5% fail, the rest succeed.
fn action_of(seed: u64, id: usize) -> Action {
    match mix(seed, id) % 100 {
        0..=4 => Action::PanicString,
        5..=9 => Action::Fail,
        _ => Action::Succeed,
    }
}

/// Job `id`'s lane: 10% Urgent, 60% Normal, 30% Bulk.
fn lane_of(seed: u64, id: usize) -> Priority {
    match (mix(seed, id) >> 8) % 10 {
        0 => Priority::Urgent,
        1..=6 => Priority::Normal,
        _ => Priority::Bulk,
    }
}

/// How the run ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Stop,
    StopNow,
    StopTimeout(Duration),
}

/// What the producers share.
struct Shared {
    seed: u64,
    ledger: Arc<Ledger>,
    /// Per id: `ACCEPTED` or `REFUSED`, set once by its producer.
    fate: Vec<AtomicU8>,
    /// Ids whose submit returned so far, over all producers.
    attempted: AtomicUsize,
    /// Submit calls that returned an error (a retried job counts each
    /// time), to compare with `Stats::refused`.
    refusals: AtomicUsize,
    /// Opened when `attempted` reaches the stop moment.
    stop_moment: usize,
    trigger: Latch,
}

impl Shared {
    fn settle(&self, id: usize, fate: u8) {
        let before = self.fate[id].swap(fate, Ordering::Relaxed);
        assert_eq!(before, NONE, "job {id}'s submit returned twice");
        if self.attempted.fetch_add(1, Ordering::Relaxed) + 1 == self.stop_moment {
            self.trigger.open();
        }
    }
}

/// Producer `p`: submits its ids with its own submit flavour. A job refused
/// for lack of room is retried (same job) a few times, then kept as
/// refused; a job refused because the pool stopped is kept as refused.
fn produce(p: usize, tx: &Submitter<Probe>, shared: &Shared) {
    let mut rng = StdRng::seed_from_u64(shared.seed ^ (p as u64 + 1));
    for id in (p..JOBS).step_by(PRODUCERS) {
        let lane = lane_of(shared.seed, id);
        let probe = Probe::new(id, &shared.ledger)
            .lane(lane)
            .action(action_of(shared.seed, id));
        let refused = match p {
            // Blocking submit into the job's own lane.
            0 => tx.submit(probe).err().map(SubmitError::into_inner),
            // Blocking submit into a lane chosen here.
            1 => tx
                .submit_to(lane, probe.lane(Priority::Normal))
                .err()
                .map(SubmitError::into_inner),
            // Short bounded waits, three tries.
            2 => {
                let mut probe = probe;
                let mut tries = 0;
                loop {
                    let timeout = Duration::from_micros(rng.gen_range(0..500));
                    match tx.submit_timeout(probe, timeout) {
                        Ok(()) => break None,
                        Err(SubmitTimeoutError::Timeout(back)) if tries < 3 => {
                            shared.refusals.fetch_add(1, Ordering::Relaxed);
                            tries += 1;
                            probe = back;
                        }
                        Err(e) => break Some(e.into_inner()),
                    }
                }
            }
            // Non-blocking; sometimes gives up on a full lane, else blocks.
            _ => match tx.try_submit(probe) {
                Ok(()) => None,
                Err(TrySubmitError::Full(back)) if rng.gen_bool(0.5) => Some(back),
                Err(TrySubmitError::Full(back)) => {
                    shared.refusals.fetch_add(1, Ordering::Relaxed);
                    tx.submit(back).err().map(SubmitError::into_inner)
                }
                Err(TrySubmitError::Stopped(back)) => Some(back),
            },
        };
        match refused {
            None => shared.settle(id, ACCEPTED),
            Some(job) => {
                assert_eq!(job.id, id, "a refusal handed back another job");
                shared.refusals.fetch_add(1, Ordering::Relaxed);
                drop(job);
                shared.settle(id, REFUSED);
            }
        }
    }
}

/// A fresh seed from the clock.
fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    // The stop comes after a random number of submits returned; one run
    // in ten lets the producers finish first.
    let after_producers = rng.gen_bool(0.1);
    let stop_moment = if after_producers {
        JOBS
    } else {
        rng.gen_range(1..=JOBS)
    };
    let end = match rng.gen_range(0..3) {
        0 => End::Stop,
        1 => End::StopNow,
        _ => End::StopTimeout(Duration::from_millis(rng.gen_range(0..20))),
    };
    println!(
        "stress_million: seed {seed} (STRESS_SEED to replay), {JOBS} jobs, \
         stop {end:?} after {stop_moment} submits"
    );

    let ledger = Ledger::new(JOBS);
    let shared = Arc::new(Shared {
        seed,
        ledger: Arc::clone(&ledger),
        fate: (0..JOBS).map(|_| AtomicU8::new(NONE)).collect(),
        attempted: AtomicUsize::new(0),
        refusals: AtomicUsize::new(0),
        stop_moment,
        trigger: Latch::default(),
    });
    let pool: Pool<Probe> = Pool::builder()
        .workers(2)
        .reserved_urgent_workers(1)
        .capacity(Priority::Urgent, 64)
        .capacity(Priority::Normal, 256)
        .capacity(Priority::Bulk, 256)
        .thread_name(THREAD_NAME)
        .build()
        .expect("build pool");
    let started = Instant::now();
    let start = Arc::new(Barrier::new(PRODUCERS));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = pool.submitter();
            let shared = Arc::clone(&shared);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                produce(p, &tx, &shared);
            })
        })
        .collect();

    assert!(
        shared.trigger.wait_timeout(RUN_LIMIT),
        "the stop moment never came"
    );
    let report: StopReport<Probe> = match end {
        End::Stop => pool.stop(),
        End::StopNow => pool.stop_now(),
        End::StopTimeout(timeout) => pool.stop_timeout(timeout),
    }
    .expect("stop");
    for producer in producers {
        producer.join().expect("producer panicked");
    }
    // Joins workers a stop_timeout abandoned, so every job is done.
    assert_eq!(pool.stop().expect("second stop").total(), 0);
    println!("stress_million: {:?} in {:?}", report, started.elapsed());

    check(&shared, &pool, &report);
    drop(report);
    drop(pool);
    for id in 0..JOBS {
        assert_eq!(
            ledger.drops(id),
            1,
            "job {id} dropped {} times",
            ledger.drops(id)
        );
    }
}

/// Every id: exactly one terminal state, consistent with the ledger, the
/// report and the stats.
fn check(shared: &Shared, pool: &Pool<Probe>, report: &StopReport<Probe>) {
    let seed = shared.seed;
    let ledger = &shared.ledger;
    let mut place = vec![0_u8; JOBS];
    let mut put = |id: usize, where_: u8| {
        assert_eq!(place[id], 0, "job {id} is in two lists of the report");
        place[id] = where_;
    };
    for f in &report.failed {
        assert_eq!(f.error, f.job.id);
        assert!(
            matches!(action_of(seed, f.job.id), Action::Fail),
            "job {}",
            f.job.id
        );
        put(f.job.id, IN_FAILED);
    }
    for p in &report.panicked {
        assert_eq!(p.message, format!("probe {}", p.job.id));
        put(p.job.id, IN_PANICKED);
    }
    // Unrun: lane order, and FIFO within a lane — a producer submits its
    // ids in increasing order, so per (lane, producer) they must increase.
    let mut last_lane = 0;
    let mut last_id: [[Option<usize>; PRODUCERS]; 3] = [[None; PRODUCERS]; 3];
    for u in &report.unrun {
        let (lane, id) = (u.lane.index(), u.job.id);
        put(id, IN_UNRUN);
        assert!(
            last_lane <= lane,
            "unrun jobs out of lane order at job {id}"
        );
        last_lane = lane;
        let last = &mut last_id[lane][id % PRODUCERS];
        assert!(
            last.map_or(true, |last| last < id),
            "unrun job {id} out of FIFO order"
        );
        *last = Some(id);
    }

    let (mut accepted, mut refused, mut ran_clean) = (0_u64, 0_u64, 0_u64);
    for (id, (&placed, fate)) in place.iter().zip(&shared.fate).enumerate() {
        let runs = ledger.runs(id);
        match fate.load(Ordering::Relaxed) {
            ACCEPTED => {
                accepted += 1;
                match placed {
                    IN_FAILED | IN_PANICKED => assert_eq!(runs, 1, "job {id}"),
                    IN_UNRUN => assert_eq!(runs, 0, "unrun job {id} ran"),
                    _ => {
                        assert_eq!(runs, 1, "accepted job {id} was lost (ran {runs} times)");
                        ran_clean += 1;
                    }
                }
            }
            REFUSED => {
                refused += 1;
                assert_eq!(runs, 0, "refused job {id} ran");
                assert_eq!(placed, 0, "refused job {id} is in the report");
            }
            _ => panic!("job {id} has no fate: its submit never returned"),
        }
    }
    // Ran and not handed back: succeeded, or abandoned at a deadline.
    assert_eq!(ran_clean, report.succeeded + report.abandoned.len() as u64);
    assert_eq!(report.total(), accepted);

    let stats = pool.stats();
    assert_eq!(stats.accepted(), accepted);
    assert_eq!(
        stats.refused(),
        shared.refusals.load(Ordering::Relaxed) as u64,
        "refused submit calls"
    );
    assert_eq!(stats.succeeded(), report.succeeded);
    assert_eq!(stats.failed(), report.failed.len() as u64);
    assert_eq!(stats.panicked(), report.panicked.len() as u64);
    assert_eq!(stats.unrun(), report.unrun.len() as u64);
    assert_eq!(stats.abandoned(), report.abandoned.len() as u64);
    assert_eq!(stats.finished(), stats.accepted());
    assert_eq!(accepted + refused, JOBS as u64);
}

#[test]
fn every_one_of_a_million_jobs_is_accounted_for_exactly_once() {
    common::quiet_panics_on(THREAD_NAME);
    match std::env::var("STRESS_SEED") {
        Ok(seed) => {
            let seed = seed.parse().expect("STRESS_SEED is a u64");
            watchdog(RUN_LIMIT, move || run(seed));
        }
        Err(_) => {
            let first = time_seed();
            for n in 0..RUNS {
                let seed = mix(first, n as usize);
                watchdog(RUN_LIMIT, move || run(seed));
            }
        }
    }
}
