//! A worker thread the OS refuses to start: `build` reports it and leaves no
//! thread behind, whether the first spawn fails or one midway (after some
//! workers started). Alone in its binary: it counts the process's threads,
//! which tests running in parallel would disturb.

mod common;

use std::error::Error;
use std::io;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{guarded, proc_bytes, thread_count};
use triage_pool::{BuildError, FnJob, Pool};

/// Waits (bounded) until the process is back to `baseline` threads and
/// returns the last count. A joined thread can linger in `/proc` for a
/// moment while the kernel reaps it, so this polls; there is nothing in the
/// process to wait on instead.
fn settle(baseline: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = thread_count().expect("/proc/self/task");
        if now == baseline || Instant::now() >= deadline {
            return now;
        }
        thread::yield_now();
    }
}

/// The index in the error's `"prefix-N"` thread name.
fn failed_index(err: &BuildError, prefix: &str) -> usize {
    let text = err.to_string();
    let start = text.find(prefix).expect("thread name in message") + prefix.len();
    text[start..]
        .trim_end_matches('"')
        .parse()
        .unwrap_or_else(|_| panic!("no worker index in {text:?}"))
}

/// Lowers this process's soft address-space limit to `bytes` until dropped
/// (with the util-linux `prlimit` tool; the hard limit is left alone, so
/// the old soft limit can always be restored).
struct AddressSpaceLimit {
    old: String,
}

impl AddressSpaceLimit {
    fn set(bytes: u64) -> Option<AddressSpaceLimit> {
        let pid = std::process::id().to_string();
        let out = Command::new("prlimit")
            .args([
                "--pid",
                &pid,
                "--as",
                "--raw",
                "--noheadings",
                "--output=SOFT,HARD",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut fields = text.split_whitespace();
        let (old, hard) = (fields.next()?.to_owned(), fields.next()?.to_owned());
        let status = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--as={bytes}:{hard}")])
            .status()
            .ok()?;
        status.success().then_some(AddressSpaceLimit { old })
    }
}

impl Drop for AddressSpaceLimit {
    fn drop(&mut self) {
        let pid = std::process::id().to_string();
        let restored = Command::new("prlimit")
            .args(["--pid", &pid, &format!("--as={}:", self.old)])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            restored || thread::panicking(),
            "could not restore RLIMIT_AS"
        );
    }
}

/// Virtual memory of this process in bytes.
fn vm_size() -> u64 {
    proc_bytes("/proc/self/status", "VmSize:").expect("VmSize in /proc/self/status")
}

#[test]
fn spawn_failures_leave_no_thread_behind() {
    guarded(|| {
        let Some(baseline) = thread_count() else {
            eprintln!("no /proc/self/task: thread count not checked");
            return;
        };

        // The first spawn fails: nothing started.
        let err = Pool::<FnJob>::builder()
            .workers(4)
            .stack_size(1 << 60)
            .build()
            .expect_err("a 2^60-byte stack was granted");
        assert!(err.is_spawn_failure(), "{err:?}");
        assert_eq!(failed_index(&err, "triage-pool-"), 0);
        assert!(err.source().is_some_and(|s| s.is::<io::Error>()));
        assert_eq!(settle(baseline), baseline, "threads left after {err}");

        // A spawn fails midway: with 1 GiB stacks and 2.5 GiB of address
        // space to spare, two workers start and the third is refused. The
        // two must be stopped and joined before `build` returns.
        const GIB: u64 = 1 << 30;
        let limit = AddressSpaceLimit::set(vm_size() + 5 * GIB / 2);
        if limit.is_none() {
            eprintln!("prlimit unavailable: midway spawn failure not checked");
            return;
        }
        let result = Pool::<FnJob>::builder()
            .workers(8)
            .thread_name("midway")
            .stack_size(GIB as usize)
            .build();
        drop(limit);
        let err = result.expect_err("8 workers with 1 GiB stacks fit in 2.5 GiB");
        assert!(err.is_spawn_failure(), "{err:?}");
        let source = err.source().expect("io::Error source");
        assert!(source.is::<io::Error>(), "{source:?}");
        let index = failed_index(&err, "midway-");
        assert!(
            (1..8).contains(&index),
            "the failure was not midway ({err}); the cleanup path went untested"
        );
        assert_eq!(
            settle(baseline),
            baseline,
            "{index} started workers were left running after {err}"
        );

        // And the process can still build and run a pool.
        let pool: Pool<FnJob> = Pool::builder().workers(2).build().expect("build");
        pool.submit(FnJob::new(|_| ())).expect("submit");
        assert_eq!(pool.stop().expect("stop").succeeded, 1);
        drop(pool);
        assert_eq!(settle(baseline), baseline);
    });
}
