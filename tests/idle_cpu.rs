//! Idle workers block instead of spinning: over an idle second the process
//! uses (almost) no CPU time. Linux only (reads /proc/self/stat).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use triage_pool::{FnJob, Pool};

/// User + system CPU time of this process, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, i.e. the 12th and 13th after ") ".
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn idle_workers_burn_no_cpu() {
    common::guarded(|| {
        let pool: Pool<FnJob> = Pool::builder()
            .workers(4)
            .reserved_urgent_workers(1)
            .build()
            .expect("pool");
        // Run a little work first so every worker has been awake once.
        for _ in 0..1_000 {
            pool.submit(FnJob::new(|_| ())).expect("submit");
        }
        let (tx, rx) = std::sync::mpsc::channel();
        pool.submit(FnJob::new(move |_| tx.send(()).expect("send")))
            .expect("submit");
        rx.recv().expect("job ran");

        let before = cpu_ticks();
        // Letting time pass is the point of this test, not synchronisation.
        std::thread::sleep(Duration::from_secs(1));
        let used = cpu_ticks() - before;
        // Clock ticks are usually 10 ms. Five spinning or polling threads
        // would use ~100 ticks (or all 2 cores' worth); blocked ones use ~0.
        assert!(used <= 5, "idle pool used {used} clock ticks of CPU in 1 s");
        assert!(pool.stop().expect("stop").is_clean());
    });
}
