//! The one place that catches panics.
//!
//! Catching requires the crate to be built with `panic = "unwind"` (the
//! default). Under `panic = "abort"` a panicking job aborts the process, as
//! any panic does.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A panic payload.
type Payload = Box<dyn Any + Send + 'static>;

/// Runs `f`, turning a panic into its message.
///
/// Unwind safety: the closures given here borrow a job mutably. After a
/// panic the job may be half-updated, which is exactly what the caller is
/// told: the job comes back as *panicked* and is never run again by the pool.
/// No pool state is borrowed across the call, so nothing of the pool's can
/// be observed in a broken state.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = message(&*payload);
        dispose(payload);
        message
    })
}

/// Runs `f` — a log event ([`log_event!`]) — with a panic in it (a
/// `tracing` subscriber that panics) contained and dropped, so that it
/// cannot take a job being filed, a worker, or a stop with it.
pub(crate) fn contain(f: impl FnOnce()) {
    drop(catch(f));
}

/// A `tracing` event, `log_event!(level, fields…, "message")`, with a
/// panic in the subscriber contained (see [`contain`]).
///
/// Every event the pool logs goes through this: a subscriber that panics
/// (a user bug, but a real one) must not take a worker down before or
/// after its loop, lose a report in the middle of a stop, or leave a stop
/// half done for the next one to wait on forever.
macro_rules! log_event {
    ($level:ident, $($event:tt)+) => {
        $crate::unwind::contain(|| ::tracing::$level!($($event)+))
    };
}
pub(crate) use log_event;

/// Drops `value`, containing a panic from its `Drop`. Returns the panic
/// message if there was one.
pub(crate) fn drop_contained<T>(value: T) -> Option<String> {
    catch(move || drop(value)).err()
}

/// Drops every item with [`drop_contained`], ignoring the panics: for the
/// jobs nobody is left to receive (a dropped pool's report).
pub(crate) fn drop_all_contained<T>(items: impl IntoIterator<Item = T>) {
    items
        .into_iter()
        .for_each(|item| drop(drop_contained(item)));
}

/// The text of a panic: the `&str` or `String` it was raised with, or a
/// placeholder for any other payload.
fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Drops a panic payload. A payload whose own `Drop` panics (rust-lang/rust
/// #86027) would otherwise unwind out of the worker; that second panic is
/// caught here and its payload leaked, which is safe and bounded (one small
/// allocation per such pathological panic).
fn dispose(payload: Payload) {
    if let Err(second) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(second);
    }
}

#[cfg(all(test, panic = "unwind"))]
mod tests {
    use super::*;

    struct PanicsOnDrop;

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("payload drop panicked");
        }
    }

    #[test]
    fn messages_of_every_payload_kind() {
        assert_eq!(catch(|| panic!("static")).unwrap_err(), "static");
        assert_eq!(
            catch(|| panic!("formatted {}", 7)).unwrap_err(),
            "formatted 7"
        );
        let other = catch(|| std::panic::panic_any(42_u32)).unwrap_err();
        assert_eq!(other, "non-string panic payload");
        assert_eq!(catch(|| 5).unwrap(), 5);
    }

    #[test]
    fn payload_that_panics_on_drop_is_contained() {
        let msg = catch(|| std::panic::panic_any(PanicsOnDrop)).unwrap_err();
        assert_eq!(msg, "non-string panic payload");
    }

    #[test]
    fn drop_that_panics_is_contained() {
        assert_eq!(
            drop_contained(PanicsOnDrop).as_deref(),
            Some("payload drop panicked")
        );
        assert_eq!(drop_contained(5_u8), None);
    }
}
