//! `bench-report`: turns one run of the benches into `docs/benchmarks.md`
//! (markdown tables of ns/job and ratios to the floor, with the machine and
//! date) and `docs/throughput.svg` (a bar chart of the same ratios).
//!
//! It reads criterion's results (`<criterion dir>/**/new/benchmark.json`,
//! `estimates.json` and `sample.json`) written by `benches/throughput.rs`,
//! and, if given, the markdown table `benches/triage.rs` printed.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench throughput
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench triage -- --out /work/target-bench/triage.md
//! CARGO_TARGET_DIR=/work/target-bench cargo run --release --example bench_report -- \
//!     /work/target-bench/criterion --triage /work/target-bench/triage.md
//! ```
//!
//! Usage: `bench_report [CRITERION_DIR] [--triage FILE] [--out-dir DIR]`.
//! `CRITERION_DIR` defaults to `target/criterion`, `DIR` to this crate's
//! `docs/`. Only results of the latest throughput run are used: the bench
//! writes `triage-pool-run.txt` (start time, host) into the criterion
//! directory, and older results are listed as skipped. Nothing is
//! hard-coded: every number comes from those files.
//!
//! Criterion's ids are `<workload>/<peer>/r<round>`; a peer's ns/job is the
//! median over rounds of its per-round value, and its ratio to the floor is
//! the median over rounds of (peer ÷ floor of the same round), so peers are
//! only ever compared with measurements taken minutes apart.

// The host description the benches use (not every helper is needed here).
#[allow(dead_code)]
#[path = "../benches/common/host.rs"]
mod host;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench_report: {e}");
        std::process::exit(1);
    }
}

type Error = Box<dyn std::error::Error>;

/// Command-line options.
struct Options {
    criterion: PathBuf,
    triage: Option<PathBuf>,
    out_dir: PathBuf,
}

fn parse_args() -> Result<Options, Error> {
    let mut options = Options {
        criterion: PathBuf::from("target/criterion"),
        triage: None,
        out_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("docs"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--triage" => options.triage = Some(args.next().ok_or("--triage needs a file")?.into()),
            "--out-dir" => options.out_dir = args.next().ok_or("--out-dir needs a dir")?.into(),
            "-h" | "--help" => {
                println!("usage: bench_report [CRITERION_DIR] [--triage FILE] [--out-dir DIR]");
                std::process::exit(0);
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}").into()),
            dir => options.criterion = dir.into(),
        }
    }
    Ok(options)
}

fn run() -> Result<(), Error> {
    let options = parse_args()?;
    let marker = read_marker(&options.criterion);
    let since = marker
        .get("started_unix")
        .and_then(|s| s.parse::<u64>().ok());
    let (results, skipped) = collect(&options.criterion, since)?;
    if results.is_empty() {
        return Err(format!(
            "no criterion results of the latest run under {}; run `cargo bench --bench throughput` first",
            options.criterion.display()
        )
        .into());
    }
    let workloads = aggregate(&results);
    let triage = match &options.triage {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&options.out_dir)?;
    let markdown = render_markdown(&marker, &workloads, triage.as_deref(), &skipped);
    let svg = render_svg(&marker, &workloads);
    let md_path = options.out_dir.join("benchmarks.md");
    let svg_path = options.out_dir.join("throughput.svg");
    std::fs::write(&md_path, markdown)?;
    std::fs::write(&svg_path, svg)?;
    println!("wrote {} and {}", md_path.display(), svg_path.display());
    if !skipped.is_empty() {
        println!(
            "skipped {} result(s) older than the latest run",
            skipped.len()
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Reading criterion's output.

/// One criterion benchmark: `<group>/<function>/<value>`.
struct Measured {
    group: String,
    peer: String,
    round: String,
    /// Jobs per iteration (criterion's `Elements` throughput).
    jobs: f64,
    /// Median time per iteration, ns.
    median_ns: f64,
    /// Fastest sample's time per iteration, ns.
    best_ns: f64,
}

/// `key=value` lines of the run marker, if there is one.
fn read_marker(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("triage-pool-run.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn collect(dir: &Path, since: Option<u64>) -> Result<(Vec<Measured>, Vec<String>), Error> {
    let mut files = Vec::new();
    find_benchmarks(dir, &mut files)?;
    files.sort();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for new_dir in files {
        let meta = parse_json(&std::fs::read_to_string(new_dir.join("benchmark.json"))?)?;
        let estimates_path = new_dir.join("estimates.json");
        let modified = std::fs::metadata(&estimates_path)?
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_secs();
        let full_id = meta.get("full_id").and_then(Json::as_str).unwrap_or("?");
        if since.is_some_and(|since| modified < since) {
            skipped.push(full_id.to_owned());
            continue;
        }
        let estimates = parse_json(&std::fs::read_to_string(&estimates_path)?)?;
        let sample = parse_json(&std::fs::read_to_string(new_dir.join("sample.json"))?)?;
        let text = |key: &str| {
            meta.get(key)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let jobs = meta
            .get("throughput")
            .and_then(|t| t.get("Elements"))
            .and_then(Json::as_f64)
            .ok_or_else(|| format!("{full_id}: no Elements throughput"))?;
        let median_ns = estimates
            .get("median")
            .and_then(|m| m.get("point_estimate"))
            .and_then(Json::as_f64)
            .ok_or_else(|| format!("{full_id}: no median"))?;
        let iters = sample.get("iters").and_then(Json::as_array).unwrap_or(&[]);
        let times = sample.get("times").and_then(Json::as_array).unwrap_or(&[]);
        let best_ns = iters
            .iter()
            .zip(times)
            .filter_map(|(i, t)| Some(t.as_f64()? / i.as_f64()?))
            .fold(f64::INFINITY, f64::min);
        results.push(Measured {
            group: text("group_id"),
            peer: text("function_id"),
            round: text("value_str"),
            jobs,
            median_ns,
            best_ns: if best_ns.is_finite() {
                best_ns
            } else {
                median_ns
            },
        });
    }
    Ok((results, skipped))
}

/// Every `new/` directory holding a `benchmark.json` under `dir`.
fn find_benchmarks(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if path.join("benchmark.json").is_file() && path.join("estimates.json").is_file() {
                out.push(path);
            }
        } else if path
            .file_name()
            .is_some_and(|n| n != "base" && n != "change")
        {
            find_benchmarks(&path, out)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Aggregation.

/// The peers' display order, table labels and chart labels; unknown peers
/// follow, sorted, under their criterion names.
const PEERS: &[(&str, &str, &str)] = &[
    (
        "floor",
        "floor: std threads + one bounded crossbeam channel (1024), boxed closures",
        "floor (bounded crossbeam channel)",
    ),
    (
        "triage_generic",
        "triage-pool `Pool<J>` (generic job)",
        "triage-pool Pool<J>",
    ),
    (
        "triage_untimed",
        "triage-pool `Pool<J>`, `timing(false)`",
        "triage-pool Pool<J>, untimed",
    ),
    (
        "triage_fnjob",
        "triage-pool `Pool<FnJob>` (boxed closures)",
        "triage-pool Pool<FnJob>",
    ),
    (
        "triage_3lanes",
        "triage-pool `Pool<J>`, jobs over 3 lanes",
        "triage-pool Pool<J>, 3 lanes",
    ),
    (
        "triage_3lanes_untimed",
        "triage-pool `Pool<J>`, 3 lanes, `timing(false)`",
        "triage-pool Pool<J>, 3 lanes, untimed",
    ),
    ("threadpool", "`threadpool`", "threadpool"),
    ("rusty_pool", "`rusty_pool`", "rusty_pool"),
    ("rayon", "`rayon` (spawn + latch)", "rayon (spawn + latch)"),
    (
        "executors_channel",
        "`executors` crossbeam_channel_pool",
        "executors channel pool",
    ),
    (
        "executors_workstealing",
        "`executors` crossbeam_workstealing_pool",
        "executors work-stealing pool",
    ),
    (
        "go_pool",
        "Go: goroutine pool (buffered channel + `WaitGroup`)",
        "Go goroutine pool",
    ),
    (
        "inline",
        "inline: no pool, 1 thread (efficiency reference)",
        "inline (no pool)",
    ),
];

fn peer_rank(peer: &str) -> usize {
    PEERS
        .iter()
        .position(|(key, ..)| *key == peer)
        .unwrap_or(PEERS.len())
}

fn peer_label(peer: &str) -> String {
    PEERS
        .iter()
        .find(|(key, ..)| *key == peer)
        .map_or_else(|| peer.to_owned(), |(_, label, _)| (*label).to_owned())
}

fn peer_short_label(peer: &str) -> String {
    PEERS
        .iter()
        .find(|(key, ..)| *key == peer)
        .map_or_else(|| peer.to_owned(), |(.., short)| (*short).to_owned())
}

/// One peer on one workload, over all its rounds.
struct Line {
    peer: String,
    rounds: usize,
    /// Median over rounds of the per-round median ns/job.
    median: f64,
    /// Fastest sample of any round, ns/job.
    best: f64,
    /// Slowest and fastest per-round median, ns/job.
    spread: (f64, f64),
    /// Median over rounds of peer ÷ floor (same round), by per-round median.
    ratio: Option<f64>,
    /// The same with each round's fastest samples.
    ratio_best: Option<f64>,
}

/// One workload: its criterion group and every peer's line.
struct Workload {
    group: String,
    jobs: f64,
    lines: Vec<Line>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn aggregate(results: &[Measured]) -> Vec<Workload> {
    let mut groups: BTreeMap<&str, Vec<&Measured>> = BTreeMap::new();
    for r in results {
        groups.entry(&r.group).or_default().push(r);
    }
    let mut workloads: Vec<Workload> = groups
        .into_iter()
        .map(|(group, rs)| {
            let floor: BTreeMap<&str, &Measured> = rs
                .iter()
                .filter(|r| r.peer == "floor")
                .map(|r| (r.round.as_str(), *r))
                .collect();
            let mut peers: BTreeMap<&str, Vec<&Measured>> = BTreeMap::new();
            for r in &rs {
                peers.entry(&r.peer).or_default().push(r);
            }
            let mut lines: Vec<Line> = peers
                .into_iter()
                .map(|(peer, rounds)| {
                    let per_job: Vec<f64> = rounds.iter().map(|r| r.median_ns / r.jobs).collect();
                    let ratios: Vec<f64> = rounds
                        .iter()
                        .filter_map(|r| {
                            floor
                                .get(r.round.as_str())
                                .map(|f| r.median_ns / f.median_ns)
                        })
                        .collect();
                    let ratios_best: Vec<f64> = rounds
                        .iter()
                        .filter_map(|r| floor.get(r.round.as_str()).map(|f| r.best_ns / f.best_ns))
                        .collect();
                    Line {
                        peer: peer.to_owned(),
                        rounds: rounds.len(),
                        median: median(per_job.clone()),
                        best: rounds
                            .iter()
                            .map(|r| r.best_ns / r.jobs)
                            .fold(f64::INFINITY, f64::min),
                        spread: (
                            per_job.iter().copied().fold(f64::INFINITY, f64::min),
                            per_job.iter().copied().fold(0.0, f64::max),
                        ),
                        ratio: (!ratios.is_empty()).then(|| median(ratios)),
                        ratio_best: (!ratios_best.is_empty()).then(|| median(ratios_best)),
                    }
                })
                .collect();
            lines.sort_by(|a, b| (peer_rank(&a.peer), &a.peer).cmp(&(peer_rank(&b.peer), &b.peer)));
            Workload {
                group: group.to_owned(),
                jobs: rs.first().map_or(0.0, |r| r.jobs),
                lines,
            }
        })
        .collect();
    workloads.sort_by_key(|w| workload_order(&w.group));
    workloads
}

/// Parsed `<kind>_p<producers>_w<workers>` group name.
struct Shape {
    /// Microseconds of CPU work per job (0 for empty jobs).
    work_us: Option<u64>,
    producers: Option<u64>,
    workers: Option<u64>,
}

fn shape(group: &str) -> Shape {
    let mut s = Shape {
        work_us: None,
        producers: None,
        workers: None,
    };
    for part in group.split('_') {
        if part == "empty" {
            s.work_us = Some(0);
        } else if let Some(us) = part.strip_prefix("cpu").and_then(|p| p.strip_suffix("us")) {
            s.work_us = us.parse().ok();
        } else if let Some(p) = part.strip_prefix('p') {
            s.producers = p.parse().ok();
        } else if let Some(w) = part.strip_prefix('w') {
            s.workers = w.parse().ok();
        }
    }
    s
}

fn workload_order(group: &str) -> (u64, u64, u64, String) {
    let s = shape(group);
    (
        s.work_us.unwrap_or(u64::MAX),
        s.workers.unwrap_or(0),
        s.producers.unwrap_or(0),
        group.to_owned(),
    )
}

fn describe(w: &Workload) -> String {
    let s = shape(&w.group);
    let work = match s.work_us {
        Some(0) => "empty jobs".to_owned(),
        Some(us) => format!("jobs of {us} µs CPU work"),
        None => "jobs".to_owned(),
    };
    let plural = |n: Option<u64>, one: &str, many: &str| match n {
        Some(1) => format!("1 {one}"),
        Some(n) => format!("{n} {many}"),
        None => format!("? {many}"),
    };
    format!(
        "{} {work}, {}, {}",
        host::thousands(w.jobs as u64),
        plural(s.producers, "producer", "producers"),
        plural(s.workers, "worker", "workers"),
    )
}

/// Versions of the peers as locked in this crate's Cargo.lock.
fn locked_versions() -> BTreeMap<String, String> {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .unwrap_or_default();
    let mut versions = BTreeMap::new();
    let mut name = None;
    for line in lock.lines() {
        if let Some(n) = line.strip_prefix("name = ") {
            name = Some(n.trim_matches('"').to_owned());
        } else if let Some(v) = line.strip_prefix("version = ") {
            if let Some(n) = name.take() {
                versions.insert(n, v.trim_matches('"').to_owned());
            }
        }
    }
    versions
}

// ---------------------------------------------------------------------------
// Output.

/// A time per job with its unit: `55.9 ns`, `3130 ns`, `26.6 µs`.
fn fmt_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns >= 100.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{ns:.1} ns")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"))
}

/// The run's host and date, from the run marker (or this machine now).
fn host_parts(marker: &BTreeMap<String, String>) -> Vec<String> {
    let get = |k: &str| marker.get(k).cloned();
    let nproc = get("nproc").unwrap_or_else(|| host::nproc().to_string());
    let cpu = get("cpu").unwrap_or_else(host::cpu_model);
    let date = get("date").unwrap_or_else(|| {
        format!(
            "{} (report time; the run marker is missing)",
            host::utc_date_time(host::unix_seconds())
        )
    });
    let mut parts = vec![
        format!("nproc {nproc}"),
        format!("CPU {cpu}"),
        format!("run started {date}"),
    ];
    if let Some(kernel) = get("kernel") {
        parts.push(format!("kernel {kernel}"));
    }
    if let Some(load) = get("loadavg") {
        parts.push(format!("load average at start {load}"));
    }
    if let Some(source) = get("source") {
        parts.push(format!("source {source}"));
    }
    parts
}

fn host_line(marker: &BTreeMap<String, String>) -> String {
    host_parts(marker).join(", ")
}

/// `parts` joined with ", " into lines of at most `width` characters.
fn wrap(parts: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for part in parts {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 2 + part.chars().count() <= width => {
                line.push_str(", ");
                line.push_str(part);
            }
            _ => lines.push(part.clone()),
        }
    }
    lines
}

const RERUN: &str = "\
```sh
CARGO_TARGET_DIR=/work/target-bench cargo bench --bench throughput
CARGO_TARGET_DIR=/work/target-bench cargo bench --bench triage -- --out /work/target-bench/triage.md
CARGO_TARGET_DIR=/work/target-bench cargo run --release --example bench_report -- \\
    /work/target-bench/criterion --triage /work/target-bench/triage.md
```
(With the default target directory: `cargo bench --bench throughput`,
`cargo bench --bench triage -- --out target/triage.md`, then
`cargo run --release --example bench_report -- target/criterion --triage target/triage.md`.
`TRIAGE_BENCH_ROUNDS=1` halves the throughput run; `-- --quick` runs a fifth of the
latency trials.) The Go peer needs a Go toolchain (Debian's `golang-go`, Go 1.19) and
is measured only when the throughput run is told where its binary is:
`go build -o /work/target-bench/gopool benches/go/pool.go`, then add
`TRIAGE_BENCH_GO=/work/target-bench/gopool` to the first command.
";

fn render_markdown(
    marker: &BTreeMap<String, String>,
    workloads: &[Workload],
    triage: Option<&str>,
    skipped: &[String],
) -> String {
    let versions = locked_versions();
    let version = |name: &str| {
        versions
            .get(name)
            .map_or_else(|| name.to_owned(), |v| format!("{name} {v}"))
    };
    let mut s = String::new();
    s.push_str("# Benchmarks\n\n");
    s.push_str(
        "Generated by `examples/bench_report.rs` from one run of `benches/throughput.rs` \
         (criterion) and one of `benches/triage.rs`; each section's host line says when \
         its run started and on which source. Do not edit by hand; rerun:\n\n",
    );
    s.push_str(RERUN);
    let _ = write!(s, "\n## Throughput\n\nHost: {}.\n", host_line(marker));
    if let Some(rounds) = marker.get("rounds") {
        let _ = write!(s, "Rounds per workload: {rounds}. ");
    }
    if let Some(cal) = marker.get("iters_per_us") {
        let _ = write!(s, "Spin calibration: {cal} iterations/µs. ");
    }
    let _ = writeln!(
        s,
        "Peers: {}, {}, {}, {} (as locked in Cargo.lock); floor on {}.\n",
        version("threadpool"),
        version("rusty_pool"),
        version("rayon"),
        version("executors"),
        version("crossbeam-channel"),
    );
    if let Some(go) = marker.get("go") {
        let _ = writeln!(
            s,
            "Go peer: `benches/go/pool.go` built with {go}, run as a child process that \
             times its own requests.\n",
        );
    }
    s.push_str(
        "One measurement = submit every job and wait until all have run (each job counts \
         down one shared latch; pools are built outside the timed region and reused). \
         Each workload runs every peer once per round, odd rounds in reverse order. \
         **time/job** is the median over rounds of each round's median sample; **best** is the \
         fastest sample of any round. **× floor** divides by the floor measured in the same \
         round (median over rounds), by median and by best sample. Lower is better. On a \
         shared, busy machine the best-sample ratio is the steadier of the two; the spread \
         column shows how much the per-round medians moved.\n\n",
    );
    s.push_str("![ns/job relative to the floor](throughput.svg)\n");
    for w in workloads {
        let _ = write!(s, "\n### {}\n\n", describe(w));
        let cpu = shape(&w.group).work_us.unwrap_or(0) > 0;
        let workers = shape(&w.group).workers.unwrap_or(1) as f64;
        let inline = w
            .lines
            .iter()
            .find(|l| l.peer == "inline")
            .map(|l| l.median);
        s.push_str(
            "| pool | time/job | × floor | best time/job | × floor (best) | spread of rounds |",
        );
        if cpu && inline.is_some() {
            s.push_str(" efficiency |");
        }
        s.push_str("\n|---|---:|---:|---:|---:|---:|");
        if cpu && inline.is_some() {
            s.push_str("---:|");
        }
        s.push('\n');
        for line in &w.lines {
            let _ = write!(
                s,
                "| {} | {} | {} | {} | {} | {}–{} ({} round{}) |",
                peer_label(&line.peer),
                fmt_ns(line.median),
                fmt_ratio(line.ratio),
                fmt_ns(line.best),
                fmt_ratio(line.ratio_best),
                fmt_ns(line.spread.0),
                fmt_ns(line.spread.1),
                line.rounds,
                if line.rounds == 1 { "" } else { "s" },
            );
            if let (true, Some(inline)) = (cpu, inline) {
                if line.peer == "inline" {
                    s.push_str(" (1 thread) |");
                } else {
                    let _ = write!(s, " {:.0}% |", 100.0 * inline / (workers * line.median));
                }
            }
            s.push('\n');
        }
        if cpu && inline.is_some() {
            let _ = writeln!(
                s,
                "\nEfficiency = inline time/job ÷ ({} workers × pool time/job); 100% means the \
                 workers never wait and the pool costs nothing.",
                workers
            );
        }
    }
    if !skipped.is_empty() {
        let _ = write!(
            s,
            "\n_Left out: {} result(s) older than this run ({})._\n",
            skipped.len(),
            skipped.join(", ")
        );
    }
    s.push_str("\n## Urgent start latency under backlog\n\n");
    match triage {
        Some(table) => {
            s.push_str(table.trim_end());
            s.push('\n');
        }
        None => s.push_str(
            "_Not included in this report: pass `--triage FILE` with the output of \
             `cargo bench --bench triage`._\n",
        ),
    }
    s.push_str(
        "\n## Reading these numbers\n\n\
         Ratios between pools swing from host to host (they depend on the cost of waking \
         a thread), so compare only numbers from one run on one host, like the tables above. \
         Check the load average in the host lines: on a busy host (other builds or tests \
         running) every number is inflated and scattered. The interleaved rounds spread \
         that noise over every peer alike, and the best-sample columns are the least \
         affected by it.\n",
    );
    s
}

/// Horizontal bars of "× floor" (best sample) per workload, on a log scale.
fn render_svg(marker: &BTreeMap<String, String>, workloads: &[Workload]) -> String {
    const WIDTH: f64 = 980.0;
    const LABEL_W: f64 = 400.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 4.0;
    const PANEL_HEAD: f64 = 30.0;
    let plot_x0 = LABEL_W + 10.0;
    let plot_x1 = WIDTH - 120.0;

    let ratios = workloads
        .iter()
        .flat_map(|w| w.lines.iter().filter_map(|l| l.ratio_best))
        .filter(|r| r.is_finite() && *r > 0.0);
    let (lo, hi) = ratios.fold((1.0_f64, 1.0_f64), |(lo, hi), r| (lo.min(r), hi.max(r)));
    let lo_exp = lo.log2().floor().min(-1.0);
    let hi_exp = hi.log2().ceil().max(1.0);
    let x =
        |ratio: f64| plot_x0 + (ratio.log2() - lo_exp) / (hi_exp - lo_exp) * (plot_x1 - plot_x0);

    let panels: Vec<(&Workload, Vec<&Line>)> = workloads
        .iter()
        .map(|w| {
            (
                w,
                w.lines
                    .iter()
                    .filter(|l| l.ratio_best.is_some() && l.peer != "inline")
                    .collect(),
            )
        })
        .collect();
    let host_lines = wrap(&host_parts(marker), 120);
    let top = 48.0 + 16.0 * host_lines.len() as f64;
    let height = top
        + panels
            .iter()
            .map(|(_, lines)| PANEL_HEAD + lines.len() as f64 * (BAR_H + GAP) + 14.0)
            .sum::<f64>()
        + 30.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">Time per job relative to the floor (fastest sample, log scale; lower is better)</text>"#
    );
    for (i, line) in host_lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="10" y="{}" fill="#555">{}</text>"##,
            42 + 16 * i,
            escape(line)
        );
    }
    let mut y = top;
    for (w, lines) in &panels {
        let _ = writeln!(
            s,
            r#"<text x="10" y="{:.1}" font-weight="bold">{}</text>"#,
            y + 18.0,
            escape(&describe(w))
        );
        let panel_top = y + PANEL_HEAD - 4.0;
        let panel_bottom = panel_top + lines.len() as f64 * (BAR_H + GAP) + 4.0;
        // Grid lines at powers of two, labelled.
        let mut e = lo_exp;
        while e <= hi_exp + 1e-9 {
            let ratio = 2f64.powf(e);
            let gx = x(ratio);
            let (stroke, dash) = if e == 0.0 {
                ("#000", "")
            } else {
                ("#ccc", r#" stroke-dasharray="3,3""#)
            };
            let _ = writeln!(
                s,
                r#"<line x1="{gx:.1}" y1="{panel_top:.1}" x2="{gx:.1}" y2="{panel_bottom:.1}" stroke="{stroke}"{dash}/>"#
            );
            let label = if ratio >= 1.0 {
                format!("{ratio:.0}×")
            } else {
                format!("{ratio}×")
            };
            let _ = writeln!(
                s,
                r##"<text x="{gx:.1}" y="{:.1}" text-anchor="middle" fill="#777" font-size="10">{label}</text>"##,
                y + 18.0
            );
            e += 1.0;
        }
        let mut by = y + PANEL_HEAD;
        for line in lines {
            let ratio = line.ratio_best.unwrap_or(f64::NAN);
            let colour = if line.peer == "floor" {
                "#999999"
            } else if line.peer.starts_with("triage") {
                "#d95f02"
            } else {
                "#1f78b4"
            };
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LABEL_W,
                by + BAR_H - 4.0,
                escape(&peer_short_label(&line.peer))
            );
            let x_end = x(ratio).max(plot_x0 + 1.0);
            let _ = writeln!(
                s,
                r#"<rect x="{plot_x0:.1}" y="{by:.1}" width="{:.1}" height="{BAR_H}" fill="{colour}"/>"#,
                x_end - plot_x0
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}">{:.2}× ({})</text>"#,
                x_end + 4.0,
                by + BAR_H - 4.0,
                ratio,
                fmt_ns(line.best)
            );
            by += BAR_H + GAP;
        }
        y = by + 14.0;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{:.1}" fill="#555" font-size="10">Generated by examples/bench_report.rs; tables and method in docs/benchmarks.md.</text>"##,
        height - 10.0
    );
    s.push_str("</svg>\n");
    s
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('`', "")
}

// ---------------------------------------------------------------------------
// A minimal JSON reader, enough for criterion's files (no dependency).

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Number(n) => Some(*n),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Json]> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }
}

fn parse_json(text: &str) -> Result<Json, Error> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let value = parser.value()?;
    parser.skip_ws();
    if parser.pos != parser.bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> Error {
        format!("JSON: {what} at byte {}", self.pos).into()
    }

    fn skip_ws(&mut self) {
        while self
            .bytes
            .get(self.pos)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), Error> {
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn value(&mut self) -> Result<Json, Error> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b'{') => {
                self.pos += 1;
                let mut fields = Vec::new();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b'}') {
                    self.pos += 1;
                    return Ok(Json::Object(fields));
                }
                loop {
                    self.skip_ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    fields.push((key, self.value()?));
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Json::Object(fields));
                        }
                        _ => return Err(self.error("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.bytes.get(self.pos) == Some(&b']') {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.skip_ws();
                    match self.bytes.get(self.pos) {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(self.error("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.keyword("true", Json::Bool(true)),
            Some(b'f') => self.keyword("false", Json::Bool(false)),
            Some(b'n') => self.keyword("null", Json::Null),
            Some(_) => self.number(),
            None => Err(self.error("unexpected end")),
        }
    }

    fn keyword(&mut self, word: &str, value: Json) -> Result<Json, Error> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn number(&mut self) -> Result<Json, Error> {
        let start = self.pos;
        while self
            .bytes
            .get(self.pos)
            .is_some_and(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
        {
            self.pos += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.pos])
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Json::Number)
            .ok_or_else(|| self.error("bad number"))
    }

    fn string(&mut self) -> Result<String, Error> {
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.error("expected a string"));
        }
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return String::from_utf8(out).map_err(|_| self.error("invalid UTF-8"));
                }
                Some(b'\\') => {
                    let escaped = *self
                        .bytes
                        .get(self.pos + 1)
                        .ok_or_else(|| self.error("bad escape"))?;
                    self.pos += 2;
                    match escaped {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self
                                .bytes
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.error("bad \\u escape"))?;
                            self.pos += 4;
                            let c = char::from_u32(hex).unwrap_or('\u{fffd}');
                            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        other => out.push(other),
                    }
                }
                Some(&b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }
}
