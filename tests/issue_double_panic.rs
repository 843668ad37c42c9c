//! Guards against a double panic inside a job (a panic while that job is
//! already unwinding, the rust-lang/rust #86027 family) leaving the process
//! hung instead of dead: Rust aborts on a panic that escapes a destructor
//! during unwinding, and the pool must not turn that into a hang or catch it.
//! Each case runs in a child process (rayon's pattern): this test binary
//! re-executes itself for one test, which must be killed by a signal.

mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use triage_pool::{FnJob, Pool, Priority};

/// Set (to a scenario name) in the child's environment.
const CHILD_ENV: &str = "TRIAGE_POOL_DOUBLE_PANIC_CHILD";

/// How long a child may take to die; a child that lives longer hangs.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// `SIGABRT` on Linux (what `std::process::abort` raises).
const SIGABRT: i32 = 6;

/// A value whose `Drop` panics — always, even during unwinding.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("second panic: a destructor panicked during unwinding");
    }
}

/// A job that, after `first`, panics while a `PanicsOnDrop` is in scope:
/// unwinding drops it, its `Drop` panics, and the process aborts.
fn double_panic(first: impl FnOnce() + Send + 'static) -> FnJob {
    FnJob::new(move |_| {
        first();
        let _bomb = PanicsOnDrop;
        panic!("first panic");
    })
}

/// What the child does; if the abort does not happen it returns normally
/// and the child exits 0, which the parent reports as a failure.
fn child(scenario: &str) {
    let pool: Pool<FnJob> = Pool::builder()
        .workers(1)
        .capacity(Priority::Normal, 1)
        .build()
        .expect("build pool");
    match scenario {
        // The owner waits in stop() for the job that double-panics.
        "stop" => {
            pool.submit(double_panic(|| ())).expect("submit");
            let _ = pool.stop();
        }
        // The owner is blocked submitting to a full lane behind it: the
        // running job double-panics only once the owner sleeps in its third
        // submit (the lane full with the second job; three accepted).
        "blocked-submit" => {
            let (tx, owner) = (pool.submitter(), common::current_tid());
            pool.submit(double_panic(move || {
                common::wait_blocked_in_submit(&tx, 3, &[owner]);
            }))
            .expect("submit");
            pool.submit(FnJob::new(|_| ())).expect("submit");
            let _ = pool.submit(FnJob::new(|_| ()));
            let _ = pool.stop();
        }
        other => panic!("unknown scenario {other:?}"),
    }
}

/// Runs `test` (this binary's test of that name) in a child process with
/// `CHILD_ENV=scenario`; returns its exit status and stderr. Fails the test
/// if the child is still alive after `CHILD_LIMIT` (killing it first).
fn run_child(test: &str, scenario: &str) -> (ExitStatus, String) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child test process");
    // The child's stderr reaches EOF when the child dies; reading it on a
    // thread also keeps a full pipe from blocking the child.
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(());
        text
    });
    let deadline = Instant::now() + CHILD_LIMIT;
    let died = rx.recv_timeout(CHILD_LIMIT).is_ok();
    let status = loop {
        match child.try_wait().expect("poll child") {
            Some(status) => break Some(status),
            None if !died || Instant::now() >= deadline => break None,
            None => thread::yield_now(),
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("child {scenario:?} still alive after {CHILD_LIMIT:?}: the double panic hung");
    };
    (status, reader.join().expect("stderr reader"))
}

/// Parent side of a scenario: the child must be killed by `SIGABRT`.
fn assert_child_aborts(test: &str, scenario: &str) {
    let (status, stderr) = run_child(test, scenario);
    assert!(
        !status.success(),
        "child {scenario:?} survived a double panic: {status}\n{stderr}"
    );
    assert_eq!(
        status.signal(),
        Some(SIGABRT),
        "child {scenario:?} was not aborted: {status}\n{stderr}"
    );
    assert!(stderr.contains("first panic"), "{stderr}");
    assert!(
        stderr.contains("panic in a destructor during cleanup"),
        "not Rust's double-panic abort:\n{stderr}"
    );
}

#[test]
fn double_panic_in_a_job_aborts_while_the_owner_stops() {
    match std::env::var(CHILD_ENV) {
        Ok(scenario) => child(&scenario),
        Err(_) => assert_child_aborts("double_panic_in_a_job_aborts_while_the_owner_stops", "stop"),
    }
}

#[test]
fn double_panic_in_a_job_aborts_while_the_owner_is_blocked_submitting() {
    match std::env::var(CHILD_ENV) {
        Ok(scenario) => child(&scenario),
        Err(_) => assert_child_aborts(
            "double_panic_in_a_job_aborts_while_the_owner_is_blocked_submitting",
            "blocked-submit",
        ),
    }
}
