//! Start latency of one urgent job submitted behind a backlog of routine
//! jobs: triage-pool (without and with a reserved urgent worker) against
//! FIFO pools, in the same run. Prints a markdown table.
//!
//! Rerun (about 1–2 minutes on 2 cores; `-- --quick` for a fifth of the
//! trials), then regenerate `docs/benchmarks.md`:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench triage -- --out /work/target-bench/triage.md
//! CARGO_TARGET_DIR=/work/target-bench cargo run --release --example bench_report -- \
//!     /work/target-bench/criterion --triage /work/target-bench/triage.md
//! ```
//!
//! Run without `--bench` (as `cargo test --benches` does) it only smoke-tests
//! each scenario with a couple of small trials.
//!
//! # What is measured
//!
//! One trial: 2 general workers; submit a backlog of `Normal` jobs of ~10 µs
//! of CPU work each (the lane holds the whole backlog), then take the time,
//! submit one `Urgent` job and record when its `run` starts. Start latency =
//! (start of `run`) − (time just before the submit). triage-pool gets a fresh
//! pool per trial and throws the rest of the backlog away with `stop_now`;
//! the FIFO peers (std threads on one crossbeam channel, and `threadpool`)
//! run the whole backlog first by design, so they get few trials at large
//! backlogs. Scenarios are interleaved trial by trial.
//!
//! The last scenario makes every general job run 10 ms (both general workers
//! always busy) and submits the urgent job at a random moment within a job:
//! without a reserved worker it waits for a running job to end; with
//! `reserved_urgent_workers(1)` it should start at once (target: p99 under
//! 100 µs). With 2 general workers spinning on 2 cores the woken reserved
//! thread still waits for the OS to give it a core, so two more rows add
//! `general_worker_nice(5)` and `(19)` (Linux: the general workers lower
//! their own priority, no privileges needed), which lets it preempt a busy
//! worker at once. A last row leaves the general workers alone and has the
//! reserved worker ask the kernel for a 100 µs time slice instead
//! (`sched_setattr` from `Builder::on_worker_start`; Linux 6.12 or later,
//! whose EEVDF scheduler lets a waking thread with a shorter slice preempt
//! the running one; no privileges needed). The table says whether the
//! kernel kept the request.
//!
//! Last, how long `stop()` takes on an idle pool, against dropping the
//! floor's channel and joining its threads (the issue's "stop on an idle
//! pool returns promptly": no polling interval in `stop()`).

mod common;

use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use triage_pool::{Context, Job, Pool, Priority};

use common::{spin, BoxedJob, Floor, Latch};

/// Counted down by every job the FIFO peers run, so a trial can wait for
/// their backlog to finish.
static LATCH: Latch = Latch::new();

/// Where the urgent job records the moment its `run` began.
static PROBE: Probe = Probe::new();

#[derive(Debug)]
struct Probe {
    started: Mutex<Option<Instant>>,
    cv: Condvar,
}

impl Probe {
    const fn new() -> Probe {
        Probe {
            started: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    fn reset(&self) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Called first thing in the urgent job.
    fn hit(&self) {
        let now = Instant::now();
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
        self.cv.notify_all();
    }

    /// Blocks until the urgent job has started; returns when it did.
    fn wait(&self) -> Instant {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(at) = *started {
                return at;
            }
            started = self.cv.wait(started).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// triage-pool's job: routine work in the Normal lane, or the urgent probe.
#[derive(Debug)]
enum Task {
    Work(u64),
    Urgent,
}

impl Job for Task {
    type Error = std::convert::Infallible;

    fn run(&mut self, _ctx: &Context) -> Result<(), Self::Error> {
        match *self {
            Task::Work(iters) => spin(iters),
            Task::Urgent => PROBE.hit(),
        }
        Ok(())
    }

    fn priority(&self) -> Priority {
        match self {
            Task::Work(_) => Priority::Normal,
            Task::Urgent => Priority::Urgent,
        }
    }
}

/// General workers in every scenario.
const WORKERS: usize = 2;

/// The `general_worker_nice` increments of the last 10 ms rows: a mild
/// one, and the maximum.
const NICES: [u8; 2] = [5, 19];

/// The time slice the reserved worker asks for in the last 10 ms row.
const RESERVED_SLICE: Duration = Duration::from_micros(100);

/// Which pool a trial runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Subject {
    /// `nice`: the `general_worker_nice` increment; `short_slice`: the
    /// reserved workers ask for [`RESERVED_SLICE`].
    Triage {
        reserved: usize,
        nice: u8,
        short_slice: bool,
    },
    FifoChannel,
    FifoThreadpool,
}

impl Subject {
    fn label(self) -> String {
        match self {
            Subject::Triage { reserved: 0, .. } => "triage-pool".to_owned(),
            Subject::Triage {
                short_slice: true, ..
            } => format!(
                "triage-pool, `reserved_urgent_workers(1)`, reserved worker asks for a {} µs slice",
                RESERVED_SLICE.as_micros()
            ),
            Subject::Triage { nice: 0, .. } => {
                "triage-pool, `reserved_urgent_workers(1)`".to_owned()
            }
            Subject::Triage { nice, .. } => {
                format!("triage-pool, `reserved_urgent_workers(1)`, `general_worker_nice({nice})`")
            }
            Subject::FifoChannel => "FIFO: std threads + crossbeam channel".to_owned(),
            Subject::FifoThreadpool => "FIFO: `threadpool`".to_owned(),
        }
    }
}

/// A FIFO peer kept across trials (its backlog drains before the next).
enum Fifo {
    Channel(Floor),
    Threadpool(threadpool::ThreadPool),
}

impl Fifo {
    fn execute(&self, job: BoxedJob) {
        match self {
            Fifo::Channel(floor) => floor.submit(job),
            Fifo::Threadpool(pool) => pool.execute(job),
        }
    }
}

/// One triage-pool trial on a fresh pool; returns the start latency.
fn trial_triage(
    reserved: usize,
    nice: u8,
    short_slice: bool,
    backlog: usize,
    work: u64,
    settle: Duration,
) -> Duration {
    let mut builder = Pool::builder();
    if short_slice {
        // Reserved workers come after the general ones.
        builder = builder.on_worker_start(|index| {
            if index >= WORKERS {
                slice::request(RESERVED_SLICE);
            }
        });
    }
    let pool: Pool<Task> = builder
        .workers(WORKERS)
        .reserved_urgent_workers(reserved)
        .general_worker_nice(nice)
        .capacity(Priority::Normal, backlog.max(1))
        .capacity(Priority::Urgent, 16)
        .build()
        .expect("build the pool");
    for _ in 0..backlog {
        pool.submit(Task::Work(work))
            .expect("the lane holds the backlog");
    }
    if !settle.is_zero() {
        thread::sleep(settle);
    }
    PROBE.reset();
    let before = Instant::now();
    pool.submit(Task::Urgent).expect("urgent lane has room");
    let started = PROBE.wait();
    // Throw the rest of the backlog away; waits only for running jobs.
    let report = pool.stop_now().expect("not on a worker");
    assert_eq!(report.failed.len() + report.panicked.len(), 0);
    started.saturating_duration_since(before)
}

/// One FIFO trial: the backlog, then the urgent job at the back of the queue.
fn trial_fifo(pool: &Fifo, backlog: usize, work: u64) -> Duration {
    LATCH.arm(backlog + 1);
    for _ in 0..backlog {
        pool.execute(Box::new(move || {
            spin(work);
            LATCH.count_down();
        }));
    }
    PROBE.reset();
    let before = Instant::now();
    pool.execute(Box::new(|| {
        PROBE.hit();
        LATCH.count_down();
    }));
    let started = PROBE.wait();
    LATCH.wait(); // the queue is empty again
    started.saturating_duration_since(before)
}

/// One row of the table: a scenario, a pool, and the trials to run.
struct Row {
    scenario: String,
    backlog: usize,
    subject: Subject,
    trials: usize,
    work: u64,
    /// Random delay before the urgent submit, up to this (0: none).
    jitter: Duration,
    latencies: Vec<Duration>,
}

/// A small xorshift generator for the random submit moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(self.0 % nanos)
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn format_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 10.0 {
        format!("{micros:.1} µs")
    } else if micros < 1_000.0 {
        format!("{micros:.0} µs")
    } else if micros < 10_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else if micros < 1_000_000.0 {
        format!("{:.1} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let smoke = !args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let scale = |trials: usize| -> usize {
        if smoke {
            2
        } else if quick {
            (trials / 5).max(3)
        } else {
            trials
        }
    };

    // Describe the host before the run adds its own load.
    let host = common::host::describe();
    let iters_per_us = common::calibrate();
    let ten_us = common::iters_for(iters_per_us, 10.0);
    let ten_ms = common::iters_for(iters_per_us, 10_000.0);
    eprintln!("calibrated: {iters_per_us:.1} spin iterations per µs");

    let backlogs: &[(usize, usize, usize)] = if smoke {
        // (backlog, triage trials, FIFO trials)
        &[(100, 2, 2)]
    } else {
        &[(1_000, 2_000, 200), (10_000, 500, 30), (100_000, 150, 6)]
    };
    let mut rows = Vec::new();
    for &(backlog, triage_trials, fifo_trials) in backlogs {
        let scenario = format!("{} × 10 µs", common::host::thousands(backlog as u64));
        for subject in [
            Subject::Triage {
                reserved: 0,
                nice: 0,
                short_slice: false,
            },
            Subject::Triage {
                reserved: 1,
                nice: 0,
                short_slice: false,
            },
            Subject::FifoChannel,
            Subject::FifoThreadpool,
        ] {
            let trials = match subject {
                Subject::Triage { .. } => triage_trials,
                _ => fifo_trials,
            };
            rows.push(Row {
                scenario: scenario.clone(),
                backlog,
                subject,
                trials: scale(trials),
                work: ten_us,
                jitter: Duration::ZERO,
                latencies: Vec::new(),
            });
        }
    }
    let long_backlog = 100;
    for (reserved, nice, short_slice, trials) in [
        (0, 0, false, 100),
        (1, 0, false, 300),
        (1, NICES[0], false, 300),
        (1, NICES[1], false, 300),
        (1, 0, true, 300),
    ] {
        rows.push(Row {
            scenario: format!("{} × 10 ms", common::host::thousands(long_backlog as u64)),
            backlog: long_backlog,
            subject: Subject::Triage {
                reserved,
                nice,
                short_slice,
            },
            trials: scale(trials),
            work: ten_ms,
            jitter: Duration::from_millis(10),
            latencies: Vec::new(),
        });
    }

    let started = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // The FIFO pools live for the whole run; their queues hold any backlog.
    let largest = backlogs.iter().map(|b| b.0).max().unwrap_or(0);
    let channel = Fifo::Channel(Floor::new(WORKERS, largest + 16));
    let threadpool = Fifo::Threadpool(threadpool::ThreadPool::new(WORKERS));
    // Interleave: trial t of every row that still needs one, scenario by
    // scenario, so background load hits every pool alike.
    let scenarios: Vec<String> = {
        let mut s: Vec<String> = rows.iter().map(|r| r.scenario.clone()).collect();
        s.dedup();
        s
    };
    for scenario in &scenarios {
        eprintln!("scenario {scenario} ...");
        let most = rows
            .iter()
            .filter(|r| &r.scenario == scenario)
            .map(|r| r.trials)
            .max()
            .unwrap_or(0);
        for t in 0..most {
            for row in rows.iter_mut().filter(|r| &r.scenario == scenario) {
                if t >= row.trials {
                    continue;
                }
                let settle = if row.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    // Let the general workers pick up their long jobs, then
                    // land somewhere inside them.
                    Duration::from_millis(1) + rng.below(row.jitter)
                };
                let latency = match row.subject {
                    Subject::Triage {
                        reserved,
                        nice,
                        short_slice,
                    } => trial_triage(reserved, nice, short_slice, row.backlog, row.work, settle),
                    Subject::FifoChannel => trial_fifo(&channel, row.backlog, row.work),
                    Subject::FifoThreadpool => trial_fifo(&threadpool, row.backlog, row.work),
                };
                row.latencies.push(latency);
            }
        }
    }
    drop(channel);
    if let Fifo::Threadpool(pool) = threadpool {
        pool.join();
    }

    let stops = measure_idle_stops(scale(200));
    let mut table = render(&host, &rows, iters_per_us, started.elapsed(), smoke, quick);
    table.push_str(&render_stops(&stops));
    print!("{table}");
    if let Some(path) = out {
        match std::fs::write(&path, &table) {
            Ok(()) => eprintln!("wrote {path}"),
            Err(e) => eprintln!("could not write {path}: {e}"),
        }
    }
}

/// How long stopping an idle 2-worker pool takes, for `trials` pools each:
/// triage-pool's `stop()`, and the floor (dropping the sender of a bounded
/// crossbeam channel and joining its 2 threads) as the reference for "as
/// fast as waking and joining threads can be". Interleaved trial by trial.
/// Both sides' workers are asleep when the clock starts (each pool first
/// runs one job per worker, then idles 2 ms: far longer than any spin).
fn measure_idle_stops(trials: usize) -> [(&'static str, Vec<Duration>); 2] {
    let mut pool_stops = Vec::with_capacity(trials);
    let mut floor_stops = Vec::with_capacity(trials);
    for _ in 0..trials {
        let pool: Pool<Task> = Pool::builder()
            .workers(WORKERS)
            .build()
            .expect("build the pool");
        for _ in 0..WORKERS {
            pool.submit(Task::Work(0)).expect("room");
        }
        pool.wait_idle().expect("not on a worker");
        thread::sleep(Duration::from_millis(2));
        let begin = Instant::now();
        let report = pool.stop().expect("not on a worker");
        pool_stops.push(begin.elapsed());
        assert!(report.is_clean());

        let floor = Floor::new(WORKERS, 1024);
        for _ in 0..WORKERS {
            floor.submit(Box::new(|| ()));
        }
        thread::sleep(Duration::from_millis(2));
        let begin = Instant::now();
        drop(floor);
        floor_stops.push(begin.elapsed());
    }
    [
        ("triage-pool `stop()`, 2 idle workers", pool_stops),
        (
            "floor: drop the channel's sender, join 2 idle threads",
            floor_stops,
        ),
    ]
}

/// The idle-stop table.
fn render_stops(stops: &[(&'static str, Vec<Duration>)]) -> String {
    let mut s = String::from(
        "\nStopping an idle pool (no polling interval in `stop()`, so this is \
         the cost of waking and joining the threads):\n\n\
         | what | trials | median | p99 | max |\n|---|---:|---:|---:|---:|\n",
    );
    for (what, times) in stops {
        let mut sorted = times.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "| {what} | {} | {} | {} | {} |\n",
            sorted.len(),
            format_duration(percentile(&sorted, 0.5)),
            format_duration(percentile(&sorted, 0.99)),
            format_duration(*sorted.last().expect("non-empty")),
        ));
    }
    s
}

/// The markdown the bench prints (and `bench_report` embeds).
fn render(
    host: &[(&str, String)],
    rows: &[Row],
    iters_per_us: f64,
    took: Duration,
    smoke: bool,
    quick: bool,
) -> String {
    let mut s = String::new();
    let mut info: Vec<String> = host
        .iter()
        .map(|(k, v)| match *k {
            "loadavg" => format!("load average at start: {v}"),
            "date" => format!("run started: {v}"),
            _ => format!("{k}: {v}"),
        })
        .collect();
    info.push(format!("source: {}", common::source_version()));
    s.push_str(&format!(
        "<!-- triage-latency: produced by benches/triage.rs in one run -->\n\
         Host: {}. Spin calibration: {iters_per_us:.1} iterations/µs. \
         Run took {:.0} s{}.\n\n",
        info.join(", "),
        took.as_secs_f64(),
        if smoke {
            " (smoke test, not a measurement)"
        } else if quick {
            " (`--quick`: a fifth of the trials)"
        } else {
            ""
        },
    ));
    s.push_str(
        "| Normal backlog | pool | trials | median | p99 | max |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let mut sorted = row.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.scenario,
            row.subject.label(),
            sorted.len(),
            format_duration(percentile(&sorted, 0.5)),
            format_duration(percentile(&sorted, 0.99)),
            format_duration(*sorted.last().expect("non-empty")),
        ));
    }
    // The issue's goals, computed from the rows above.
    let median_of = |scenario_backlog: usize, subject: Subject| {
        rows.iter()
            .find(|r| r.backlog == scenario_backlog && r.subject == subject && r.jitter.is_zero())
            .and_then(|r| {
                let mut v = r.latencies.clone();
                v.sort_unstable();
                (!v.is_empty()).then(|| percentile(&v, 0.5))
            })
    };
    if let (Some(triage), Some(fifo)) = (
        median_of(
            10_000,
            Subject::Triage {
                reserved: 0,
                nice: 0,
                short_slice: false,
            },
        ),
        median_of(10_000, Subject::FifoChannel),
    ) {
        s.push_str(&format!(
            "\nAt a 10,000-job backlog the FIFO channel pool's median is {:.0}× triage-pool's \
             (goal: at least 100×).\n",
            fifo.as_secs_f64() / triage.as_secs_f64().max(1e-9)
        ));
    }
    let variants = [0]
        .into_iter()
        .chain(NICES)
        .map(|nice| (nice, false))
        .chain([(0, true)]);
    for (nice, short_slice) in variants {
        let how = match (nice, short_slice) {
            (_, true) => format!(
                "reserved worker asks for a {} µs slice: {}",
                RESERVED_SLICE.as_micros(),
                slice::outcome()
            ),
            (0, false) => "default scheduling".to_owned(),
            (nice, false) => format!("`general_worker_nice({nice})`"),
        };
        let subject = Subject::Triage {
            reserved: 1,
            nice,
            short_slice,
        };
        let Some(row) = rows
            .iter()
            .find(|r| r.jitter > Duration::ZERO && r.subject == subject)
        else {
            continue;
        };
        let mut v = row.latencies.clone();
        v.sort_unstable();
        if v.is_empty() {
            continue;
        }
        let p99 = percentile(&v, 0.99);
        s.push_str(&format!(
            "With 10 ms general jobs and a reserved urgent worker ({how}), p99 = {} \
             (goal: under 100 µs): {}.\n",
            format_duration(p99),
            if p99 < Duration::from_micros(100) {
                "met"
            } else {
                "not met"
            }
        ));
    }
    s
}

/// Asking the kernel for a shorter time slice for the calling thread, and
/// what came of it. Linux 6.12 and later read `sched_runtime` in
/// `sched_setattr` as an ordinary thread's requested slice (EEVDF: a
/// waking thread with a shorter slice may preempt the running one); older
/// kernels ignore it, which the read-back below detects.
mod slice {
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::time::Duration;

    const UNTRIED: u8 = 0;
    const KEPT: u8 = 1;
    const IGNORED: u8 = 2;
    const REFUSED: u8 = 3;
    const UNSUPPORTED: u8 = 4;

    /// The outcome of the latest request.
    static OUTCOME: AtomicU8 = AtomicU8::new(UNTRIED);

    /// A sentence for the table: what the kernel did with the requests.
    pub(crate) fn outcome() -> &'static str {
        match OUTCOME.load(Ordering::Relaxed) {
            KEPT => "the kernel kept the request",
            IGNORED => "the kernel ignored the request (Linux before 6.12)",
            REFUSED => "the kernel refused the request",
            UNSUPPORTED => "not on Linux, so not requested",
            _ => "never requested",
        }
    }

    /// Linux's `struct sched_attr` (the version-1 layout, 56 bytes).
    #[cfg(target_os = "linux")]
    #[repr(C)]
    #[derive(Debug, Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }

    /// Reads the calling thread's scheduling attributes.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn get() -> Option<SchedAttr> {
        let mut attr = SchedAttr::default();
        let size = std::mem::size_of::<SchedAttr>() as libc::c_uint;
        // SAFETY: `attr` is a writable `sched_attr` of `size` bytes that
        // outlives the call; pid 0 is the calling thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size,
                0,
            )
        };
        (rc == 0).then_some(attr)
    }

    /// Asks for `slice` as the calling thread's time slice, keeping its
    /// policy and nice value.
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    pub(crate) fn request(slice: Duration) {
        let wanted = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        let outcome = match get() {
            None => REFUSED,
            Some(mut attr) => {
                attr.size = std::mem::size_of::<SchedAttr>() as u32;
                attr.runtime = wanted;
                // SAFETY: `attr` is an initialised `sched_attr` whose `size`
                // field names its length, and it outlives the call; pid 0 is
                // the calling thread.
                let rc = unsafe {
                    libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0)
                };
                match (rc, get()) {
                    (0, Some(now)) if now.runtime == wanted => KEPT,
                    (0, _) => IGNORED,
                    _ => REFUSED,
                }
            }
        };
        OUTCOME.store(outcome, Ordering::Relaxed);
    }

    /// Not on Linux: nothing to ask.
    #[cfg(not(target_os = "linux"))]
    pub(crate) fn request(_slice: Duration) {
        OUTCOME.store(UNSUPPORTED, Ordering::Relaxed);
    }
}
