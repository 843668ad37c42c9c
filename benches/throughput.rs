//! Throughput of triage-pool against its peers, every peer on the same
//! workload in the same run.
//!
//! Rerun (about 10 minutes on 2 cores with two rounds), then turn the results into
//! `docs/benchmarks.md` and `docs/throughput.svg`:
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench throughput
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench triage -- --out /work/target-bench/triage.md
//! CARGO_TARGET_DIR=/work/target-bench cargo run --release --example bench_report -- \
//!     /work/target-bench/criterion --triage /work/target-bench/triage.md
//! ```
//!
//! Without `CARGO_TARGET_DIR` the results land in `target/criterion`, which
//! is also `bench_report`'s default. A shorter run: `TRIAGE_BENCH_ROUNDS=1`
//! (one round instead of two); one workload: add its name as a criterion
//! filter, e.g. `cargo bench --bench throughput -- cpu1us`.
//!
//! With a Go toolchain (Debian's `golang-go` is Go 1.19, the version the
//! performance issue quotes), the same run also measures a plain goroutine
//! pool, `benches/go/pool.go`:
//!
//! ```text
//! go build -o /work/target-bench/gopool benches/go/pool.go
//! TRIAGE_BENCH_GO=/work/target-bench/gopool CARGO_TARGET_DIR=/work/target-bench \
//!     cargo bench --bench throughput
//! ```
//!
//! # What is measured
//!
//! One measurement = submit every job of the workload and wait until all of
//! them have run. Each pool is built (and warmed up by criterion's warm-up)
//! outside the timed region and reused; every job ends by counting down one
//! shared latch, which the submitting thread blocks on. The same for every
//! peer: the floor (std threads on one bounded crossbeam channel of 1024
//! boxed closures), `threadpool`, `rusty_pool`, `rayon` (spawn + latch), the
//! `executors` crate's channel and work-stealing pools, the Go pool when
//! `TRIAGE_BENCH_GO` is set, and triage-pool with
//! a generic job (`Pool<J>`, no boxing), with boxed closures
//! (`Pool<FnJob>`), and with jobs spread over its three lanes.
//!
//! Peers are interleaved: each workload is measured in rounds (default 2,
//! `TRIAGE_BENCH_ROUNDS`), each round runs every peer once, and odd rounds
//! run the peers in reverse order, so slow drifts in background load hit
//! every peer alike. Criterion ids are `<workload>/<peer>/r<round>`.
//!
//! Workloads (`<kind>_p<producers>_w<workers>`): 1,000,000 empty jobs with 1 or
//! 2 producers and 2 or 4 workers (all four combinations); 200,000 jobs of 1 µs
//! of CPU work and 20,000 jobs of 50 µs, 1 producer and 2 workers. CPU work is
//! a spin loop calibrated once at startup.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use executors::crossbeam_workstealing_pool::small_pool;
use executors::Executor;
use triage_pool::{Context, FnJob, Job, Pool, Priority, Submitter};

use crossbeam_channel::Sender;

use common::{spin, BoxedJob, Floor, Latch};

/// Counted down by every job of every peer.
static LATCH: Latch = Latch::new();

/// Capacity of the floor's channel and of each triage-pool lane.
const CAPACITY: usize = 1024;

/// One workload: how many jobs, how much work each, who submits, who runs.
#[derive(Debug, Clone, Copy)]
struct Workload {
    name: &'static str,
    jobs: usize,
    producers: usize,
    workers: usize,
    work_us: f64,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "empty_p1_w2",
        jobs: 1_000_000,
        producers: 1,
        workers: 2,
        work_us: 0.0,
    },
    Workload {
        name: "empty_p2_w2",
        jobs: 1_000_000,
        producers: 2,
        workers: 2,
        work_us: 0.0,
    },
    Workload {
        name: "empty_p1_w4",
        jobs: 1_000_000,
        producers: 1,
        workers: 4,
        work_us: 0.0,
    },
    Workload {
        name: "empty_p2_w4",
        jobs: 1_000_000,
        producers: 2,
        workers: 4,
        work_us: 0.0,
    },
    Workload {
        name: "cpu1us_p1_w2",
        jobs: 200_000,
        producers: 1,
        workers: 2,
        work_us: 1.0,
    },
    Workload {
        name: "cpu50us_p1_w2",
        jobs: 20_000,
        producers: 1,
        workers: 2,
        work_us: 50.0,
    },
];

/// The body of every job: the calibrated work, then the latch.
#[inline(always)]
fn work(iters: u64) {
    spin(iters);
    LATCH.count_down();
}

/// triage-pool's generic job: 8 bytes, no allocation.
#[derive(Debug)]
struct Tick {
    iters: u64,
}

impl Job for Tick {
    type Error = std::convert::Infallible;

    fn run(&mut self, _ctx: &Context) -> Result<(), Self::Error> {
        work(self.iters);
        Ok(())
    }
}

/// A pool under test. `handle` gives each producer thread its own handle
/// (a sender clone or the like), so peers that are not `Sync` work too.
trait Peer {
    type Handle: Send + 'static;
    fn handle(&self) -> Self::Handle;
    fn submit(handle: &Self::Handle, index: usize, iters: u64);
}

struct FloorPeer(Floor);

impl Peer for FloorPeer {
    type Handle = Sender<BoxedJob>;
    fn handle(&self) -> Self::Handle {
        self.0.sender()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle
            .send(Box::new(move || work(iters)))
            .expect("floor workers are alive");
    }
}

struct ThreadpoolPeer(threadpool::ThreadPool);

impl Peer for ThreadpoolPeer {
    type Handle = threadpool::ThreadPool;
    fn handle(&self) -> Self::Handle {
        self.0.clone()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.execute(move || work(iters));
    }
}

impl Drop for ThreadpoolPeer {
    fn drop(&mut self) {
        self.0.join();
    }
}

struct RustyPeer(rusty_pool::ThreadPool);

impl Peer for RustyPeer {
    type Handle = rusty_pool::ThreadPool;
    fn handle(&self) -> Self::Handle {
        self.0.clone()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.execute(move || work(iters));
    }
}

struct RayonPeer(Arc<rayon::ThreadPool>);

impl Peer for RayonPeer {
    type Handle = Arc<rayon::ThreadPool>;
    fn handle(&self) -> Self::Handle {
        Arc::clone(&self.0)
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.spawn(move || work(iters));
    }
}

struct ExecutorsChannelPeer(executors::crossbeam_channel_pool::ThreadPool);

impl Peer for ExecutorsChannelPeer {
    type Handle = executors::crossbeam_channel_pool::ThreadPool;
    fn handle(&self) -> Self::Handle {
        self.0.clone()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.execute(move || work(iters));
    }
}

impl Drop for ExecutorsChannelPeer {
    fn drop(&mut self) {
        let _ = self.0.shutdown_borrowed();
    }
}

type WorkStealing = executors::crossbeam_workstealing_pool::ThreadPool<
    executors::parker::StaticParker<executors::parker::SmallThreadData>,
>;

struct ExecutorsWorkStealingPeer(WorkStealing);

impl Peer for ExecutorsWorkStealingPeer {
    type Handle = WorkStealing;
    fn handle(&self) -> Self::Handle {
        self.0.clone()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.execute(move || work(iters));
    }
}

impl Drop for ExecutorsWorkStealingPeer {
    fn drop(&mut self) {
        let _ = self.0.shutdown_borrowed();
    }
}

/// triage-pool with the generic job, every job in the Normal lane.
struct TriageGeneric(Pool<Tick>);

impl Peer for TriageGeneric {
    type Handle = Submitter<Tick>;
    fn handle(&self) -> Self::Handle {
        self.0.submitter()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle.submit(Tick { iters }).expect("pool is running");
    }
}

/// triage-pool with boxed closures.
struct TriageFnJob(Pool<FnJob>);

impl Peer for TriageFnJob {
    type Handle = Submitter<FnJob>;
    fn handle(&self) -> Self::Handle {
        self.0.submitter()
    }
    fn submit(handle: &Self::Handle, _: usize, iters: u64) {
        handle
            .submit(FnJob::new(move |_| work(iters)))
            .expect("pool is running");
    }
}

/// triage-pool with the generic job, jobs round-robin over the three lanes.
struct TriageThreeLanes(Pool<Tick>);

impl Peer for TriageThreeLanes {
    type Handle = Submitter<Tick>;
    fn handle(&self) -> Self::Handle {
        self.0.submitter()
    }
    fn submit(handle: &Self::Handle, index: usize, iters: u64) {
        handle
            .submit_to(Priority::ALL[index % 3], Tick { iters })
            .expect("pool is running");
    }
}

/// No pool: the submitting thread runs each job itself. The reference for
/// parallel efficiency on the CPU workloads.
struct Inline;

impl Peer for Inline {
    type Handle = ();
    fn handle(&self) {}
    fn submit(_: &(), _: usize, iters: u64) {
        work(iters);
    }
}

/// Submits every job of `w` (from `w.producers` threads, each with its own
/// handle) and waits for all of them to run.
fn run_once<P: Peer>(peer: &P, w: &Workload, iters: u64) {
    LATCH.arm(w.jobs);
    if w.producers == 1 {
        let handle = peer.handle();
        for index in 0..w.jobs {
            P::submit(&handle, index, iters);
        }
    } else {
        let per = w.jobs.div_ceil(w.producers);
        thread::scope(|scope| {
            for p in 0..w.producers {
                let handle = peer.handle();
                let range = (p * per)..((p + 1) * per).min(w.jobs);
                scope.spawn(move || {
                    for index in range {
                        P::submit(&handle, index, iters);
                    }
                });
            }
        });
    }
    LATCH.wait();
}

/// The Go peer (`benches/go/pool.go`): a plain goroutine pool — one
/// buffered channel of closures and a `sync.WaitGroup` — running in its own
/// process, built once per workload and round like every other peer. It is
/// measured only when `TRIAGE_BENCH_GO` names its compiled binary (so the
/// bench needs no Go toolchain by default). The Go process times each
/// request itself, so process start-up and the pipe are outside the timed
/// region; its spin loop is calibrated in Go to the same microseconds.
struct GoPeer {
    /// What the Go process said first: its Go version and `GOMAXPROCS`.
    version: String,
    child: std::process::Child,
    /// `None` once dropped: closing it ends the Go process's request loop.
    requests: Option<std::process::ChildStdin>,
    answers: std::io::BufReader<std::process::ChildStdout>,
}

impl GoPeer {
    /// Starts the Go pool with `workers` goroutines on a channel of
    /// [`CAPACITY`], or says why it could not.
    fn start(binary: &std::ffi::OsStr, workers: usize) -> GoPeer {
        use std::process::{Command, Stdio};
        let mut child = Command::new(binary)
            .args([workers.to_string(), CAPACITY.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("TRIAGE_BENCH_GO={binary:?} did not start: {e}"));
        let requests = child.stdin.take();
        let mut answers = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut version = String::new();
        std::io::BufRead::read_line(&mut answers, &mut version).expect("the Go peer says hello");
        GoPeer {
            version: version.trim().to_owned(),
            child,
            requests,
            answers,
        }
    }

    /// Runs `w` `reps` times back to back in the Go process; its own timing.
    fn run(&mut self, w: &Workload, reps: u64) -> Duration {
        use std::io::{BufRead, Write};
        let requests = self.requests.as_mut().expect("open until dropped");
        writeln!(requests, "{} {} {} {reps}", w.jobs, w.producers, w.work_us)
            .expect("the Go peer reads its requests");
        let mut answer = String::new();
        self.answers
            .read_line(&mut answer)
            .expect("the Go peer answers");
        let nanos: u64 = answer
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the Go peer answered {answer:?}"));
        Duration::from_nanos(nanos)
    }
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        drop(self.requests.take());
        let _ = self.child.wait();
    }
}

/// Benchmarks one peer on one workload; the peer is built by the caller
/// (outside the timed region) and dropped here afterwards.
fn bench_peer<P: Peer>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    peer: P,
    w: &Workload,
    iters: u64,
) {
    group.bench_function(id, |b| {
        b.iter_custom(|n| {
            let start = Instant::now();
            for _ in 0..n {
                run_once(&peer, w, iters);
            }
            start.elapsed()
        });
    });
    drop(peer);
}

/// The peers, in the order of the even rounds.
const PEERS: &[&str] = &[
    "floor",
    "triage_generic",
    "triage_untimed",
    "triage_fnjob",
    "triage_3lanes",
    "triage_3lanes_untimed",
    "threadpool",
    "rusty_pool",
    "rayon",
    "executors_channel",
    "executors_workstealing",
    "go_pool",
    "inline",
];

fn triage_builder<J: Job>(workers: usize) -> triage_pool::Builder<J> {
    Pool::builder()
        .workers(workers)
        .capacity(Priority::Urgent, CAPACITY)
        .capacity(Priority::Normal, CAPACITY)
        .capacity(Priority::Bulk, CAPACITY)
}

/// `go_binary`: `TRIAGE_BENCH_GO`, the Go peer's binary, if set.
fn bench_one(
    group: &mut BenchmarkGroup<'_, WallTime>,
    peer: &str,
    round: usize,
    w: &Workload,
    iters: u64,
    go_binary: Option<&std::ffi::OsStr>,
) {
    let id = BenchmarkId::new(peer, format!("r{round}"));
    let n = w.workers;
    match peer {
        "floor" => bench_peer(group, id, FloorPeer(Floor::new(n, CAPACITY)), w, iters),
        "threadpool" => bench_peer(
            group,
            id,
            ThreadpoolPeer(threadpool::ThreadPool::new(n)),
            w,
            iters,
        ),
        "rusty_pool" => bench_peer(
            group,
            id,
            RustyPeer(rusty_pool::ThreadPool::new(
                n,
                n,
                Duration::from_secs(3_600),
            )),
            w,
            iters,
        ),
        "rayon" => bench_peer(
            group,
            id,
            RayonPeer(Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("rayon pool"),
            )),
            w,
            iters,
        ),
        "executors_channel" => bench_peer(
            group,
            id,
            ExecutorsChannelPeer(executors::crossbeam_channel_pool::ThreadPool::new(n)),
            w,
            iters,
        ),
        "executors_workstealing" => bench_peer(
            group,
            id,
            ExecutorsWorkStealingPeer(small_pool(n)),
            w,
            iters,
        ),
        "triage_generic" => bench_peer(
            group,
            id,
            TriageGeneric(triage_builder(n).build().expect("triage pool")),
            w,
            iters,
        ),
        "triage_untimed" => bench_peer(
            group,
            id,
            TriageGeneric(
                triage_builder(n)
                    .timing(false)
                    .build()
                    .expect("triage pool"),
            ),
            w,
            iters,
        ),
        "triage_3lanes_untimed" => bench_peer(
            group,
            id,
            TriageThreeLanes(
                triage_builder(n)
                    .timing(false)
                    .build()
                    .expect("triage pool"),
            ),
            w,
            iters,
        ),
        "triage_fnjob" => bench_peer(
            group,
            id,
            TriageFnJob(triage_builder(n).build().expect("triage pool")),
            w,
            iters,
        ),
        "triage_3lanes" => bench_peer(
            group,
            id,
            TriageThreeLanes(triage_builder(n).build().expect("triage pool")),
            w,
            iters,
        ),
        "inline" => bench_peer(group, id, Inline, w, iters),
        "go_pool" => {
            let binary = go_binary.expect("filtered out when unset");
            let mut peer = GoPeer::start(binary, n);
            group.bench_function(id, |b| b.iter_custom(|reps| peer.run(w, reps)));
        }
        other => unreachable!("unknown peer {other}"),
    }
}

/// Whether this is a measuring run: `cargo bench` passes `--bench`; a
/// `cargo test --benches` run (criterion's test mode: every routine once)
/// does not, and `--list` / `--test` measure nothing.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--list" || a == "--test")
}

fn rounds() -> usize {
    if !measuring() {
        return 1;
    }
    std::env::var("TRIAGE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(2)
}

fn throughput(c: &mut Criterion) {
    let iters_per_us = common::calibrate();
    let rounds = rounds();
    let go_binary = std::env::var_os("TRIAGE_BENCH_GO");
    eprintln!("calibrated: {iters_per_us:.1} spin iterations per µs; {rounds} round(s)");
    // Only a measuring run may tell `bench_report` which results are current.
    if measuring() {
        let mut fields = vec![
            ("bench", "throughput".to_owned()),
            ("rounds", rounds.to_string()),
            ("iters_per_us", format!("{iters_per_us:.2}")),
        ];
        if let Some(binary) = &go_binary {
            fields.push(("go", GoPeer::start(binary, 1).version.clone()));
        }
        common::write_run_marker(&fields);
    }
    for w in WORKLOADS {
        let iters = common::iters_for(iters_per_us, w.work_us);
        let mut group = c.benchmark_group(w.name);
        group
            .sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(w.jobs as u64));
        for round in 0..rounds {
            let mut order: Vec<&str> = PEERS
                .iter()
                .copied()
                // Inline work only makes sense for CPU work and one producer.
                .filter(|&p| p != "inline" || (w.work_us > 0.0 && w.producers == 1))
                .filter(|&p| p != "go_pool" || go_binary.is_some())
                .collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for peer in order {
                bench_one(&mut group, peer, round, w, iters, go_binary.as_deref());
            }
        }
        group.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

// What `criterion_group!` + `criterion_main!` expand to, minus the
// undocumented `pub fn` they would add.
fn main() {
    let mut criterion = config().configure_from_args();
    throughput(&mut criterion);
    criterion.final_summary();
}
