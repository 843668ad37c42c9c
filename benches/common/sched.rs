//! Two unprivileged Linux scheduler settings that let a woken reserved
//! urgent worker preempt busy general workers at once.
//!
//! - [`request_slice`]: Linux 6.12 and later (the EEVDF scheduler) let an
//!   ordinary thread request its own time slice through `sched_setattr`'s
//!   `sched_runtime` for `SCHED_OTHER`. A woken thread with a shorter slice
//!   than the running one preempts it, instead of waiting for the running
//!   thread's slice (about 1.5 ms on 2 cores) to end. For the reserved
//!   urgent workers: their jobs are short, so a short slice costs nothing.
//! - [`batch_policy`]: `SCHED_BATCH` tells the scheduler a thread is
//!   CPU-bound and not latency-sensitive; for the general workers of a batch
//!   import. Same share of the CPU, but it yields to woken threads readily.
//!
//! The triage bench applies both from `Builder::on_worker_start`. Measured
//! on the 2-core host with 10 ms general jobs: the slice alone takes the
//! urgent p99 from milliseconds to tens of microseconds most runs; with
//! `SCHED_BATCH` on the general workers as well the tail stays there.
//!
//! The library itself forbids `unsafe` and has no libc dependency, so this
//! stays a user-side recipe (see `Builder::reserved_urgent_workers`).
#![allow(unsafe_code)]

/// `struct sched_attr` from `linux/sched/types.h` (the size of version 1).
#[cfg(target_os = "linux")]
#[repr(C)]
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

/// Requests a slice of `nanos` (the kernel clamps it to 0.1–100 ms) for the
/// calling thread, keeping `SCHED_OTHER` at nice 0. Returns whether the
/// kernel accepted it (older kernels ignore `sched_runtime` for
/// `SCHED_OTHER`, which is harmless).
#[cfg(target_os = "linux")]
pub(crate) fn request_slice(nanos: u64) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        flags: 0,
        nice: 0,
        priority: 0,
        runtime: nanos,
        deadline: 0,
        period: 0,
        util_min: 0,
        util_max: 0,
    };
    // SAFETY: `sched_setattr(0, &attr, 0)` reads `attr.size` bytes from a
    // live, properly aligned `repr(C)` value of exactly that size, and
    // affects only the calling thread's scheduling parameters.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Moves the calling thread to `SCHED_BATCH` (nice unchanged).
#[cfg(target_os = "linux")]
pub(crate) fn batch_policy() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a live, valid `sched_param`; pid 0 is the calling
    // thread, the only one affected.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is no such knob.
#[cfg(not(target_os = "linux"))]
pub(crate) fn request_slice(_nanos: u64) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Elsewhere there is no such knob.
#[cfg(not(target_os = "linux"))]
pub(crate) fn batch_policy() -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}
