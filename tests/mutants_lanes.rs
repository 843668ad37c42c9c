//! Tests that kill mutants cargo-mutants found surviving in `src/lanes.rs`
//! (run of 2026-11-27, without the `Picker`, which had its own run):
//! behaviour the other tests did not pin down. Each test says which mutant
//! it kills:
//!
//! - submits racing a stop, refused because they entered the intake gate
//!   just after it closed: each must leave the gate with both the in-flight
//!   mark and the acceptance it took on entry (`IN_FLIGHT + ACCEPTED` →
//!   `IN_FLIGHT * ACCEPTED` in that refusal in `Lanes::push`, which leaves
//!   the stripe marked in flight forever and takes back two acceptances:
//!   the stop then hangs in `seal`, or the pool reports two jobs fewer
//!   accepted than ran). The loom model `submit_races_stop` catches it
//!   too, but only under `--cfg loom`; the test suite missed it.
//!
//! The other survivors are equivalent, performance-only or races no test
//! holds open; RELIABILITY.md's "Mutation testing" paragraph says why.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::guarded;
use triage_pool::{FnJob, Pool, Priority};

/// How long the test waits for a hammer's first submit or for a stop: far
/// shorter than the watchdog, so a stop that hangs fails with a precise
/// message.
const LIMIT: Duration = Duration::from_secs(20);

/// Stops raced by submits. With the mutant the race is lost within a few
/// rounds (a submit reads its stripe open, the stop's `fetch_or` takes the
/// cache line, and the submit's `fetch_add` then sees the close); 300
/// rounds take about 3 s on the 2-core host, under 10 s when it is loaded.
const STOP_ROUNDS: usize = 300;

/// Two threads submit empty jobs as fast as they can while the pool stops;
/// some of their submits read their stripe open and enter the gate just
/// after it closed, and are refused from inside. The stop must still
/// return, and every count must balance: from the moment the stop returns
/// (while a hammer may still be inside the gate, being refused) the pool
/// reports exactly the jobs it ran or handed back as accepted, and so does
/// each hammer's count of its successful submits.
#[test]
fn submits_racing_a_stop_leave_the_gate_balanced() {
    guarded(|| {
        for round in 0..STOP_ROUNDS {
            let pool: Pool<FnJob> = Pool::builder()
                .workers(1)
                .capacity(Priority::Normal, 64)
                .build()
                .expect("build");
            let (going_tx, going_rx) = mpsc::channel();
            let hammers: Vec<_> = (0..2)
                .map(|_| {
                    let (submitter, going_tx) = (pool.submitter(), going_tx.clone());
                    thread::spawn(move || {
                        let mut accepted = 0_u64;
                        let mut first = true;
                        loop {
                            match submitter.try_submit(FnJob::new(|_| {})) {
                                Ok(()) => accepted += 1,
                                Err(error) if error.is_stopped() => return accepted,
                                Err(_) => {} // full
                            }
                            if first {
                                first = false;
                                going_tx.send(()).expect("test is listening");
                            }
                        }
                    })
                })
                .collect();
            for _ in 0..2 {
                going_rx
                    .recv_timeout(LIMIT)
                    .expect("hammer never submitted");
            }
            let (stopped_tx, stopped_rx) = mpsc::channel();
            let stopper = thread::spawn(move || {
                let report = pool.stop().expect("stop");
                stopped_tx.send(()).expect("test is listening");
                (pool, report)
            });
            stopped_rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("round {round}: the stop never returned"));
            let (pool, report) = stopper.join().expect("stopper");
            // Sealed: the count of accepted jobs is final.
            let final_count = report.succeeded + report.unrun.len() as u64;
            while !hammers.iter().all(|hammer| hammer.is_finished()) {
                let stats = pool.stats();
                assert_eq!(stats.accepted(), final_count, "round {round}: {stats:?}");
            }
            let accepted: u64 = hammers
                .into_iter()
                .map(|hammer| hammer.join().expect("hammer"))
                .sum();
            assert_eq!(final_count, accepted, "round {round}");
            let stats = pool.stats();
            assert_eq!(stats.accepted(), accepted, "round {round}: {stats:?}");
            assert_eq!(stats.pending(), 0, "round {round}: {stats:?}");
        }
    });
}
