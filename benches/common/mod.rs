//! Shared by the bench binaries: calibrated CPU work, a completion latch,
//! the raw bounded-channel floor, and the run marker that `bench_report`
//! reads.
// Each bench binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod host;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use crossbeam_channel::Sender;

/// Burns `iters` iterations of a loop the optimiser cannot remove.
#[inline(never)]
pub(crate) fn spin(iters: u64) {
    let mut acc = 0_u64;
    for i in 0..iters {
        acc = black_box(acc ^ i);
    }
    black_box(acc);
}

/// Spin iterations per microsecond on this machine: the fastest of several
/// ~10 ms runs (interference only ever makes a run slower).
pub(crate) fn calibrate() -> f64 {
    const ITERS: u64 = 4_000_000;
    spin(ITERS); // warm up the frequency and the caches
    let best = (0..7)
        .map(|_| {
            let start = Instant::now();
            spin(ITERS);
            start.elapsed()
        })
        .min()
        .expect("at least one run");
    ITERS as f64 / (best.as_nanos() as f64 / 1_000.0)
}

/// Spin iterations for `micros` µs of work.
pub(crate) fn iters_for(iters_per_us: f64, micros: f64) -> u64 {
    (iters_per_us * micros).round() as u64
}

/// Counts finished jobs down to zero and wakes the thread waiting for that.
///
/// Every peer's jobs end with `count_down`, so every peer pays the same
/// shared decrement per job.
#[derive(Debug)]
pub(crate) struct Latch {
    left: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Latch {
    pub(crate) const fn new() -> Latch {
        Latch {
            left: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Expects `n` more `count_down`s. Only call while no job is pending.
    pub(crate) fn arm(&self, n: usize) {
        self.left.store(n, Ordering::Release);
    }

    pub(crate) fn count_down(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Taking the lock orders this notify after the waiter's check.
            drop(self.lock.lock().unwrap_or_else(|e| e.into_inner()));
            self.cv.notify_all();
        }
    }

    /// Blocks (no spinning: on 2 cores a spinning waiter steals a worker's
    /// CPU) until the count reaches zero.
    pub(crate) fn wait(&self) {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        while self.left.load(Ordering::Acquire) != 0 {
            guard = self.cv.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A boxed closure, the job type of the floor and of most peers.
pub(crate) type BoxedJob = Box<dyn FnOnce() + Send + 'static>;

/// The floor: `workers` std threads pulling boxed closures from one bounded
/// crossbeam channel. No lanes, no bookkeeping, no panic handling.
#[derive(Debug)]
pub(crate) struct Floor {
    tx: Option<Sender<BoxedJob>>,
    workers: Vec<JoinHandle<()>>,
}

impl Floor {
    pub(crate) fn new(workers: usize, capacity: usize) -> Floor {
        let (tx, rx) = crossbeam_channel::bounded::<BoxedJob>(capacity);
        let workers = (0..workers)
            .map(|_| {
                let rx = rx.clone();
                thread::spawn(move || {
                    for job in rx {
                        job();
                    }
                })
            })
            .collect();
        Floor {
            tx: Some(tx),
            workers,
        }
    }

    /// A sender for another producer thread.
    pub(crate) fn sender(&self) -> Sender<BoxedJob> {
        self.tx.clone().expect("the floor is running")
    }

    pub(crate) fn submit(&self, job: BoxedJob) {
        if let Some(tx) = &self.tx {
            tx.send(job).expect("floor workers are alive");
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        drop(self.tx.take());
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Where criterion writes its results, found the way criterion finds it:
/// `CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the target
/// directory `cargo metadata` reports, else `target/criterion`.
pub(crate) fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let from_metadata = std::env::var_os("CARGO").and_then(|cargo| {
        let out = std::process::Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let key = "\"target_directory\":\"";
        let start = text.find(key)? + key.len();
        let end = start + text[start..].find('"')?;
        Some(PathBuf::from(text[start..end].replace("\\\\", "\\")))
    });
    from_metadata
        .unwrap_or_else(|| PathBuf::from("target"))
        .join("criterion")
}

/// Writes `triage-pool-run.txt` into criterion's directory: when this run
/// started (so `bench_report` ignores older results) and what it ran on.
pub(crate) fn write_run_marker(fields: &[(&str, String)]) {
    let dir = criterion_dir();
    let mut text = format!("started_unix={}\n", host::unix_seconds());
    for (key, value) in host::describe() {
        text.push_str(&format!("{key}={value}\n"));
    }
    text.push_str(&format!("source={}\n", source_version()));
    for (key, value) in fields {
        text.push_str(&format!("{key}={value}\n"));
    }
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("triage-pool-run.txt"), text));
    match written {
        Ok(()) => eprintln!("run marker: {}", dir.join("triage-pool-run.txt").display()),
        Err(e) => eprintln!("could not write the run marker in {}: {e}", dir.display()),
    }
}

/// Which source was measured: `TRIAGE_BENCH_SOURCE` if set, else
/// `git describe --always --dirty`, else "unknown".
pub(crate) fn source_version() -> String {
    if let Ok(source) = std::env::var("TRIAGE_BENCH_SOURCE") {
        return source;
    }
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}
