//! `Builder::general_worker_nice`: on Linux each general worker raises its
//! own nice value by the increment (capped at 19) before its start hook;
//! reserved urgent workers and the caller's threads keep theirs.

#![cfg(target_os = "linux")]

mod common;

use std::sync::{Arc, Mutex};

use common::guarded;
use triage_pool::{FnJob, Pool};

/// The calling thread's nice value, field 19 of /proc/thread-self/stat.
fn own_nice() -> i32 {
    let stat =
        std::fs::read_to_string("/proc/thread-self/stat").expect("read /proc/thread-self/stat");
    // "tid (name) S ppid ...": fields after the name start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    fields[19 - 3].parse().expect("nice field")
}

/// Builds a pool of 2 general workers and 1 reserved one with `increment`,
/// stops it, and returns each worker's nice value as its start hook saw it,
/// by worker index.
fn worker_nice_values(increment: u8) -> Vec<i32> {
    let seen = Arc::new(Mutex::new(vec![None; 3]));
    let log = Arc::clone(&seen);
    let pool: Pool<FnJob> = Pool::builder()
        .workers(2)
        .reserved_urgent_workers(1)
        .general_worker_nice(increment)
        .on_worker_start(move |worker| log.lock().expect("log")[worker] = Some(own_nice()))
        .build()
        .expect("build");
    assert!(pool.stop().expect("stop").is_clean()); // joins the workers: every start hook ran
    let seen = seen.lock().expect("log").clone();
    seen.into_iter()
        .map(|nice| nice.expect("start hook ran"))
        .collect()
}

#[test]
fn general_workers_are_lowered_by_the_increment_and_reserved_ones_are_not() {
    guarded(|| {
        let base = own_nice();
        let seen = worker_nice_values(5);
        let lowered = (base + 5).min(19);
        assert_eq!(seen, [lowered, lowered, base], "base nice {base}");
        assert_eq!(
            own_nice(),
            base,
            "the caller's thread must keep its nice value"
        );
    });
}

#[test]
fn zero_leaves_every_worker_at_the_inherited_value() {
    guarded(|| {
        let base = own_nice();
        assert_eq!(worker_nice_values(0), [base, base, base]);
    });
}

#[test]
fn a_large_increment_is_capped_at_nineteen() {
    guarded(|| {
        let base = own_nice();
        assert_eq!(worker_nice_values(u8::MAX), [19, 19, base]);
    });
}
