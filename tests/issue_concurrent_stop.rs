//! Guards against stops that race each other, `Drop` and blocked submitters
//! losing or doubling jobs, or hanging (tokio #1978: queued tasks lost at
//! shutdown; pond #108: blocked submitters never woken by stop): 4 threads
//! call stop / stop_now / stop_timeout at once, then Drop; exactly one report
//! carries the jobs and every accepted job is accounted for exactly once.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::{guarded, Action, Arrivals, Latch, Ledger, Probe};
use triage_pool::{Pool, Priority, StopReport, Submitter};

/// General workers.
const WORKERS: usize = 2;
/// Reserved urgent workers.
const RESERVED: usize = 1;
/// Jobs queued in each lane before the stops start.
const QUEUED_PER_LANE: usize = 20;
/// Capacity of every lane.
const CAPACITY: usize = 64;
/// Free slots in the lanes once the queued jobs are in.
const ROOM: usize = 3 * (CAPACITY - QUEUED_PER_LANE);
/// Most ids a racing producer may use (it blocks on a full lane long before).
const PRODUCER_IDS: usize = 4 * CAPACITY;

/// One way to stop a pool.
#[derive(Debug, Clone, Copy)]
enum Variant {
    Stop,
    Now,
    Timeout(Duration),
}

/// Every variant; rounds rotate through them.
const VARIANTS: [Variant; 5] = [
    Variant::Stop,
    Variant::Now,
    Variant::Timeout(Duration::ZERO),
    Variant::Timeout(Duration::from_millis(1)),
    Variant::Timeout(Duration::from_secs(60)),
];

fn call(pool: &Pool<Probe>, variant: Variant) -> StopReport<Probe> {
    match variant {
        Variant::Stop => pool.stop(),
        Variant::Now => pool.stop_now(),
        Variant::Timeout(timeout) => pool.stop_timeout(timeout),
    }
    .expect("stop from a non-worker thread")
}

fn build() -> Pool<Probe> {
    Pool::builder()
        .workers(WORKERS)
        .reserved_urgent_workers(RESERVED)
        .capacity(Priority::Urgent, CAPACITY)
        .capacity(Priority::Normal, CAPACITY)
        .capacity(Priority::Bulk, CAPACITY)
        .build()
        .expect("build pool")
}

/// The action of queued job number `n`.
fn action_of(n: usize) -> Action {
    match n % 3 {
        0 => Action::Succeed,
        1 => Action::Fail,
        _ => Action::PanicString,
    }
}

/// A pool whose every worker is held at `latch` (holders are ids
/// `0..WORKERS + RESERVED`), with `QUEUED_PER_LANE` jobs of mixed outcomes
/// queued in every lane behind them. Returns the next free id.
fn held_pool(ledger: &Arc<Ledger>, latch: &Arc<Latch>) -> (Pool<Probe>, usize) {
    let pool = build();
    let held = Arrivals::new();
    let mut id = 0;
    for lane in [Priority::Normal, Priority::Normal, Priority::Urgent] {
        pool.submit(
            Probe::new(id, ledger)
                .lane(lane)
                .action(Action::Wait(Arc::clone(latch)))
                .started(&held),
        )
        .expect("submit holder");
        id += 1;
        held.wait_for(id);
    }
    for n in 0..3 * QUEUED_PER_LANE {
        let probe = Probe::new(id, ledger)
            .lane(Priority::ALL[n % 3])
            .action(action_of(n));
        pool.try_submit(probe).expect("room for queued jobs");
        id += 1;
    }
    (pool, id)
}

/// Submits ids from `first` with blocking submits (into full lanes, since
/// the workers are held) until the pool refuses one. Returns the accepted
/// ids and the refused ones.
fn race_producer(
    tx: &Submitter<Probe>,
    ledger: &Arc<Ledger>,
    first: usize,
) -> (Vec<usize>, Vec<usize>) {
    let mut accepted = Vec::new();
    for id in first..first + PRODUCER_IDS {
        let probe = Probe::new(id, ledger).lane(Priority::ALL[id % 3]);
        match tx.submit(probe) {
            Ok(()) => accepted.push(id),
            Err(refused) => {
                assert!(refused.is_stopped(), "a non-worker submit got {refused:?}");
                assert_eq!(refused.into_inner().id, id);
                return (accepted, vec![id]);
            }
        }
    }
    panic!("the producer was never refused: the lanes never filled up");
}

/// Waits until every producer in `producers` (thread ids from
/// `spawn_with_tid`) is asleep in a submit to a full lane of a `held_pool`,
/// where only they submit. With the workers held, every accepted job is a
/// running holder, queued, or a blocked producer's: so once accepted jobs
/// outnumber running and queued ones by one per producer and each producer
/// sleeps, each is parked waiting for room (see
/// `common::wait_blocked_in_submit`, which needs the exact count; producers
/// sharing lanes may block on any of them, so the count is not known here).
#[track_caller]
fn wait_producers_blocked(pool: &Submitter<Probe>, producers: &[Option<u32>]) {
    let in_submit = || {
        let stats = pool.stats();
        stats.accepted() as i64 - (WORKERS + RESERVED + stats.queued_total()) as i64
    };
    let blocked = common::wait_until(
        || {
            // States read after the count, as in `wait_blocked_in_submit`.
            in_submit() == producers.len() as i64
                && producers
                    .iter()
                    .flatten()
                    .all(|&tid| common::thread_state(tid) == Some('S'))
        },
        common::LIMIT,
    );
    assert!(
        blocked,
        "producers not blocked in submit: {} jobs inside a submit, thread states {:?}",
        in_submit(),
        producers
            .iter()
            .map(|tid| tid.map(common::thread_state))
            .collect::<Vec<_>>()
    );
}

/// Checks a finished pool's books: the performing report, the producers'
/// refused ids, the ledger and the stats agree, and each accepted job has
/// exactly one terminal state.
fn check_books(
    pool: &Pool<Probe>,
    ledger: &Ledger,
    report: &StopReport<Probe>,
    accepted: &HashSet<usize>,
    refused: &[usize],
) {
    let ids = |jobs: &mut dyn Iterator<Item = usize>| -> HashSet<usize> { jobs.collect() };
    let failed = ids(&mut report.failed.iter().map(|f| f.job.id));
    let panicked = ids(&mut report.panicked.iter().map(|p| p.job.id));
    let unrun = ids(&mut report.unrun.iter().map(|u| u.job.id));
    assert_eq!(failed.len(), report.failed.len(), "an id failed twice");
    assert_eq!(
        panicked.len(),
        report.panicked.len(),
        "an id panicked twice"
    );
    assert_eq!(
        unrun.len(),
        report.unrun.len(),
        "an id came back unrun twice"
    );
    for f in &report.failed {
        assert_eq!(f.error, f.job.id, "failed job carries another job's error");
    }
    let mut handed_back = 0;
    for set in [&failed, &panicked, &unrun] {
        assert!(set.is_subset(accepted), "report holds a job never accepted");
        handed_back += set.len();
    }
    let distinct: HashSet<usize> = failed.union(&panicked).chain(&unrun).copied().collect();
    assert_eq!(
        distinct.len(),
        handed_back,
        "a job is in two terminal states"
    );

    let mut ran_ok = 0;
    for &id in accepted {
        let runs = ledger.runs(id);
        if unrun.contains(&id) {
            assert_eq!(runs, 0, "unrun job {id} ran");
        } else {
            assert_eq!(runs, 1, "accepted job {id} ran {runs} times");
            if !distinct.contains(&id) {
                ran_ok += 1;
            }
        }
    }
    // Ran and not handed back: succeeded, or still running at a deadline.
    assert_eq!(ran_ok, report.succeeded + report.abandoned.len() as u64);
    assert_eq!(report.total(), accepted.len() as u64);
    for &id in refused {
        assert_eq!(ledger.runs(id), 0, "refused job {id} ran");
        assert!(!accepted.contains(&id));
    }

    let stats = pool.stats();
    assert_eq!(stats.accepted(), accepted.len() as u64);
    assert_eq!(stats.succeeded(), report.succeeded);
    assert_eq!(stats.failed(), report.failed.len() as u64);
    assert_eq!(stats.panicked(), report.panicked.len() as u64);
    assert_eq!(stats.unrun(), report.unrun.len() as u64);
    assert_eq!(stats.abandoned(), report.abandoned.len() as u64);
    assert_eq!(stats.refused(), refused.len() as u64);
}

/// One round: workers held, queues filled, a producer blocked on a full
/// lane, then four stops at once (variants `variants`), then Drop.
fn four_stops_at_once(variants: [Variant; 4]) {
    let latch = Latch::new();
    let ledger = Ledger::new(3 + 3 * QUEUED_PER_LANE + PRODUCER_IDS);
    let (pool, first_producer_id) = held_pool(&ledger, &latch);
    let pool = Arc::new(pool);

    let (producer, tid) = {
        let tx = pool.submitter();
        let ledger = Arc::clone(&ledger);
        common::spawn_with_tid(move || race_producer(&tx, &ledger, first_producer_id))
    };
    // It fills the room (round-robin over the lanes, so every lane fills)
    // and sleeps in its next submit before any stop starts.
    common::wait_blocked_in_submit(&pool, (first_producer_id + ROOM + 1) as u64, &[tid]);
    let start = Arc::new(Barrier::new(variants.len() + 1));
    let stoppers: Vec<_> = variants
        .iter()
        .map(|&variant| {
            let pool = Arc::clone(&pool);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                call(&pool, variant)
            })
        })
        .collect();
    start.wait();
    // Release the workers only once a stop has closed intake, so the stops
    // race each other while jobs are still running and queued.
    assert!(
        common::wait_until(|| pool.is_stopped(), common::LIMIT),
        "{variants:?}: no stop closed intake"
    );
    latch.open();

    let reports: Vec<StopReport<Probe>> = stoppers
        .into_iter()
        .map(|s| s.join().expect("a stop call panicked"))
        .collect();
    let (producer_accepted, producer_refused) = producer.join().expect("producer panicked");
    // The workers were held until intake closed, so only the lanes' free
    // room took producer jobs: the submit blocked on a full lane is woken by
    // the stop and refused, never let in once workers make room.
    assert_eq!(
        producer_accepted.len(),
        ROOM,
        "{variants:?}: producer jobs accepted, room for {ROOM}"
    );
    // Joins any worker a winning stop_timeout abandoned, so every job has
    // finished before the books are checked; a further stop is empty.
    let again = pool.stop().expect("stop after the race");
    assert!(again.is_clean() && again.total() == 0, "{again:?}");

    let carrying: Vec<&StopReport<Probe>> = reports.iter().filter(|r| r.total() > 0).collect();
    assert_eq!(
        carrying.len(),
        1,
        "{variants:?}: exactly one report must carry the jobs: {reports:?}"
    );
    for report in reports.iter().filter(|r| r.total() == 0) {
        assert!(report.is_clean(), "{variants:?}: {report:?}");
    }
    let report = carrying[0];
    let accepted: HashSet<usize> = (0..first_producer_id).chain(producer_accepted).collect();
    check_books(&pool, &ledger, report, &accepted, &producer_refused);

    drop(reports);
    let pool = Arc::try_unwrap(pool).expect("every other holder is gone");
    drop(pool);
    for id in 0..first_producer_id + PRODUCER_IDS {
        let created =
            id < first_producer_id || accepted.contains(&id) || producer_refused.contains(&id);
        assert_eq!(ledger.drops(id), usize::from(created), "job {id}");
    }
}

#[test]
fn four_threads_stopping_at_once_then_drop() {
    guarded(|| {
        for round in 0..VARIANTS.len() * 20 {
            let pick = |i: usize| VARIANTS[(round + i * (1 + round / VARIANTS.len())) % 5];
            four_stops_at_once([pick(0), pick(1), pick(2), pick(3)]);
        }
    });
}

/// Producers holding `Submitter` clones are blocked on full lanes (some
/// drop their clone early) while the owner drops the pool without a stop:
/// Drop drains, wakes every blocked producer with its job, and the books
/// balance afterwards through a surviving clone.
#[test]
fn dropping_the_pool_while_submitter_clones_block_and_drop() {
    guarded(|| {
        const PRODUCERS: usize = 4;
        for _round in 0..50 {
            let latch = Latch::new();
            let late_id = 3 + 3 * QUEUED_PER_LANE + PRODUCERS * PRODUCER_IDS;
            let ledger = Ledger::new(late_id + 1);
            let (pool, first) = held_pool(&ledger, &latch);
            let survivor = pool.submitter();
            let (producers, tids): (Vec<_>, Vec<_>) = (0..PRODUCERS)
                .map(|p| {
                    let tx = pool.submitter();
                    let ledger = Arc::clone(&ledger);
                    common::spawn_with_tid(move || {
                        let first = first + p * PRODUCER_IDS;
                        if p % 2 == 1 {
                            // Gives up early: drops its clone while the
                            // others block.
                            let probe = Probe::new(first, &ledger);
                            // Taken if its lane still has room.
                            let accepted = tx.try_submit(probe).map_or_else(
                                |e| {
                                    assert_eq!(e.into_inner().id, first);
                                    (Vec::new(), vec![first])
                                },
                                |()| (vec![first], Vec::new()),
                            );
                            drop(tx);
                            return accepted;
                        }
                        race_producer(&tx, &ledger, first)
                    })
                })
                .unzip();
            // The early ones are done and every other producer sleeps in a
            // submit to a full lane before the pool is dropped.
            assert!(
                common::wait_until(
                    || producers.iter().skip(1).step_by(2).all(|p| p.is_finished()),
                    common::LIMIT
                ),
                "the producers that give up early never finished"
            );
            let blocking: Vec<Option<u32>> = tids.into_iter().step_by(2).collect();
            wait_producers_blocked(&survivor, &blocking);
            let dropper = thread::spawn(move || drop(pool));
            assert!(
                common::wait_until(|| survivor.is_stopped(), common::LIMIT),
                "dropping the pool never closed intake"
            );
            // The workers stay held until every producer is back: a blocked
            // producer must be woken by Drop's close, not by a freed slot.
            let mut accepted: HashSet<usize> = (0..first).collect();
            let mut refused = Vec::new();
            let mut producer_accepted = 0;
            for producer in producers {
                let (a, r) = producer.join().expect("producer panicked");
                producer_accepted += a.len();
                accepted.extend(a);
                refused.extend(r);
            }
            latch.open();
            dropper.join().expect("Drop panicked");

            // Held workers: only the lanes' free room took producer jobs.
            assert!(producer_accepted <= ROOM, "{producer_accepted} > {ROOM}");
            // The pool is gone; its surviving handle is refused at once.
            let late = survivor.submit(Probe::new(late_id, &ledger));
            assert!(late.expect_err("pool is dropped").is_stopped());

            let stats = survivor.stats();
            assert_eq!(stats.accepted(), accepted.len() as u64);
            assert_eq!(stats.finished(), stats.accepted(), "{stats:?}");
            assert_eq!(stats.unrun() + stats.abandoned(), 0, "Drop drains");
            for &id in &accepted {
                assert_eq!(ledger.runs(id), 1, "accepted job {id}");
            }
            for &id in &refused {
                assert_eq!(ledger.runs(id), 0, "refused job {id}");
            }
            drop(survivor);
            assert_eq!(ledger.runs(late_id), 0);
            for &id in accepted.iter().chain(&refused).chain([&late_id]) {
                assert_eq!(ledger.drops(id), 1, "job {id}");
            }
        }
    });
}

/// Several threads share the pool through `Arc` clones: some stop it (each
/// variant), some only drop their clone; whichever drops the last clone runs
/// `Drop`. No hang, one performing report, balanced books.
#[test]
fn stops_racing_the_last_arc_clone_drop() {
    guarded(|| {
        for round in 0..100 {
            let latch = Latch::new();
            let ledger = Ledger::new(3 + 3 * QUEUED_PER_LANE);
            let (pool, submitted) = held_pool(&ledger, &latch);
            let survivor = pool.submitter();
            let pool = Arc::new(pool);
            let start = Arc::new(Barrier::new(5));
            let holders: Vec<_> = (0..4)
                .map(|i| {
                    let pool = Arc::clone(&pool);
                    let start = Arc::clone(&start);
                    let stops = i < 2;
                    let variant = VARIANTS[(round + i) % VARIANTS.len()];
                    thread::spawn(move || {
                        start.wait();
                        let report = stops.then(|| call(&pool, variant));
                        drop(pool);
                        report
                    })
                })
                .collect();
            drop(pool);
            start.wait();
            assert!(
                common::wait_until(|| survivor.is_stopped(), common::LIMIT),
                "round {round}: no stop closed intake"
            );
            latch.open();
            let reports: Vec<StopReport<Probe>> = holders
                .into_iter()
                .filter_map(|h| h.join().expect("holder panicked"))
                .collect();
            let carrying = reports.iter().filter(|r| r.total() > 0).count();
            assert_eq!(carrying, 1, "{reports:?}");
            let total: u64 = reports.iter().map(StopReport::total).sum();
            assert_eq!(total, submitted as u64);
            drop(reports);
            let stats = survivor.stats();
            assert_eq!(stats.accepted(), submitted as u64);
            assert_eq!(stats.finished(), stats.accepted(), "{stats:?}");
            drop(survivor);
            // Every job is dropped exactly once. A job a stop_timeout
            // abandoned — a holder, or any job still running at a 1 ms
            // deadline (a panicking one printing its backtrace, say) — is
            // dropped by its detached worker when it ends (Drop does not
            // wait for those), so give those a bounded wait.
            let deadline = Instant::now() + common::LIMIT;
            for id in 0..submitted {
                while stats.abandoned() > 0 && ledger.drops(id) == 0 && Instant::now() < deadline {
                    thread::yield_now();
                }
                assert_eq!(ledger.drops(id), 1, "job {id}");
                assert!(ledger.runs(id) <= 1, "job {id} ran twice");
            }
        }
    });
}
