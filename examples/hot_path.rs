//! A fixed workload for counting the instructions of the hot path with
//! `valgrind --tool=callgrind`, whose counts repeat exactly from run to run
//! even on a busy machine (wall-clock comparisons live in `benches/`).
//!
//! One worker is held by a gate job while the lane fills with `n` empty
//! jobs, then released: every submit takes the fast path and the worker
//! drains the lane without ever sleeping or spinning, so the counts are
//! per-job costs, not scheduling noise.
//!
//! ```sh
//! cargo build --release --example hot_path
//! for mode in floor timed untimed fnjob fnjob-steady; do
//!     valgrind --tool=callgrind --callgrind-out-file=cg.$mode \
//!         target/release/examples/hot_path $mode 100000
//! done
//! callgrind_annotate --inclusive=yes cg.timed | grep -E 'Lanes<J>::push|worker::run'
//! ```
//!
//! Modes: `timed` (the default `Builder`), `untimed` (`timing(false)`),
//! `fnjob` (`Pool<FnJob>`: the same closure as the floor's, boxed, every
//! box from `malloc` since the lane holds more jobs than the recycling bin
//! keeps), `fnjob-steady` (the same in rounds of 1,000 jobs, so from the
//! second round on every box is a recycled one),
//! `floor` (a std thread draining boxed closures from one bounded crossbeam
//! channel, the reference the benches compare against).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use triage_pool::{Context, FnJob, Job, Pool, Priority};

/// Opens once; jobs given one wait for it.
type Gate = Arc<(Mutex<bool>, Condvar)>;

fn wait(gate: &Gate) {
    let mut open = gate.0.lock().expect("gate lock");
    while !*open {
        open = gate.1.wait(open).expect("gate lock");
    }
}

fn open(gate: &Gate) {
    *gate.0.lock().expect("gate lock") = true;
    gate.1.notify_all();
}

/// An empty job that counts itself, or (with a gate) holds its worker.
struct Empty {
    gate: Option<Gate>,
    count: Arc<AtomicUsize>,
}

impl Job for Empty {
    type Error = ();

    fn run(&mut self, _ctx: &Context) -> Result<(), ()> {
        if let Some(gate) = &self.gate {
            wait(gate);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Jobs per round in `fnjob-steady`: fewer than the recycling bin keeps.
const ROUND: usize = 1000;

/// A closure job that holds its worker until `gate` opens, then counts.
fn gated_fnjob(gate: &Gate, count: &Arc<AtomicUsize>) -> FnJob {
    let (gate, count) = (Arc::clone(gate), Arc::clone(count));
    FnJob::new(move |_: &Context| {
        wait(&gate);
        count.fetch_add(1, Ordering::Relaxed);
    })
}

/// An empty closure job that counts itself (one closure type for all).
fn counting_fnjob(count: &Arc<AtomicUsize>) -> FnJob {
    let count = Arc::clone(count);
    FnJob::new(move |_: &Context| {
        count.fetch_add(1, Ordering::Relaxed);
    })
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "timed".to_owned());
    let n: usize = args
        .next()
        .map_or(100_000, |s| s.parse().expect("job count"));
    let count = Arc::new(AtomicUsize::new(0));
    let gate: Gate = Arc::new((Mutex::new(false), Condvar::new()));
    // Each arm returns how many jobs held the worker behind a gate (they
    // count themselves too).
    let gate_jobs = match mode.as_str() {
        "timed" | "untimed" => {
            let pool: Pool<Empty> = Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, n + 1)
                .timing(mode == "timed")
                .build()
                .expect("pool");
            let holder = Empty {
                gate: Some(Arc::clone(&gate)),
                count: Arc::clone(&count),
            };
            assert!(pool.submit(holder).is_ok());
            for _ in 0..n {
                let job = Empty {
                    gate: None,
                    count: Arc::clone(&count),
                };
                assert!(pool.submit(job).is_ok());
            }
            open(&gate);
            assert!(pool.stop().expect("stop").is_clean());
            1
        }
        "fnjob" => {
            let pool: Pool<FnJob> = Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, n + 1)
                .build()
                .expect("pool");
            assert!(pool.submit(gated_fnjob(&gate, &count)).is_ok());
            for _ in 0..n {
                assert!(pool.submit(counting_fnjob(&count)).is_ok());
            }
            open(&gate);
            assert!(pool.stop().expect("stop").is_clean());
            1
        }
        "fnjob-steady" => {
            // Rounds of ROUND jobs, each started behind a gate job like the
            // other modes: from the second round on, every closure box comes
            // from the recycling bin instead of `malloc`.
            let pool: Pool<FnJob> = Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, ROUND + 1)
                .build()
                .expect("pool");
            let mut left = n;
            let mut gate = gate;
            let mut rounds = 0;
            while left > 0 {
                let size = left.min(ROUND);
                assert!(pool.submit(gated_fnjob(&gate, &count)).is_ok());
                for _ in 0..size {
                    assert!(pool.submit(counting_fnjob(&count)).is_ok());
                }
                open(&gate);
                pool.wait_idle().expect("wait_idle");
                left -= size;
                rounds += 1;
                gate = Arc::new((Mutex::new(false), Condvar::new()));
            }
            assert!(pool.stop().expect("stop").is_clean());
            rounds
        }
        "floor" => {
            let (tx, rx) = crossbeam_channel::bounded::<Box<dyn FnOnce() + Send>>(n + 1);
            let holder = Arc::clone(&gate);
            let counter = Arc::clone(&count);
            tx.send(Box::new(move || {
                wait(&holder);
                counter.fetch_add(1, Ordering::Relaxed);
            }))
            .expect("send");
            let worker = std::thread::spawn(move || rx.into_iter().for_each(|job| job()));
            for _ in 0..n {
                let counter = Arc::clone(&count);
                tx.send(Box::new(move || {
                    counter.fetch_add(1, Ordering::Relaxed);
                }))
                .expect("send");
            }
            open(&gate);
            drop(tx);
            worker.join().expect("worker");
            1
        }
        other => panic!("unknown mode {other:?}: timed, untimed, fnjob, fnjob-steady or floor"),
    };
    assert_eq!(count.load(Ordering::Relaxed), n + gate_jobs);
    println!("{mode}: {n} jobs");
}
