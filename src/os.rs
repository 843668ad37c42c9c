//! The one place that talks to the OS scheduler: lowering a general
//! worker's priority (`Builder::general_worker_nice`).
//!
//! On Linux the nice value is a per-thread attribute:
//! `setpriority(PRIO_PROCESS, tid, …)` changes only the thread `tid`, and
//! any thread may raise its own nice value (lower its priority) without
//! privileges. Other Unix systems apply the nice value to the whole process,
//! so there the setting is ignored rather than slowing every thread.

/// The highest nice value (lowest priority) Linux allows.
#[cfg(all(target_os = "linux", not(loom)))]
const MAX_NICE: i32 = 19;

/// Raises the calling thread's nice value by `increment` (capped at 19).
/// Returns the new nice value, or `None` where the setting does not apply.
#[cfg(all(target_os = "linux", not(loom)))]
pub(crate) fn lower_current_thread_priority(increment: u8) -> std::io::Result<Option<i32>> {
    use rustix::process::{getpriority_process, setpriority_process};
    let tid = Some(rustix::thread::gettid());
    let current = getpriority_process(tid)?;
    let nice = current.saturating_add(i32::from(increment)).min(MAX_NICE);
    setpriority_process(tid, nice)?;
    Ok(Some(nice))
}

/// Raises the calling thread's nice value by `increment` (capped at 19).
/// Returns the new nice value, or `None` where the setting does not apply.
#[cfg(not(all(target_os = "linux", not(loom))))]
pub(crate) fn lower_current_thread_priority(_increment: u8) -> std::io::Result<Option<i32>> {
    Ok(None)
}
