//! The synchronisation primitives the pool's protocol is written against,
//! switched between production (`std` atomics, `parking_lot`, crossbeam
//! channels, OS threads) and the `loom` model checker (`--cfg loom`).
//!
//! Everything the shutdown and wake-up protocols depend on goes through
//! here, so the model checker sees every interleaving of the real code. Only
//! the lane queue itself is replaced under loom (loom cannot see inside
//! crossbeam-channel): `Queue` is the small, non-blocking interface the
//! lanes need, with a crossbeam implementation in production and a
//! `Mutex + VecDeque` one under the checker. All blocking (full lanes, idle
//! workers, stops) is the pool's own protocol on the primitives below.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, MutexGuard};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::thread;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
#[cfg(loom)]
pub(crate) use loom::thread;
#[cfg(loom)]
pub(crate) use model::{Condvar, Mutex, MutexGuard};

/// Declares a thread-local with the production or the loom macro.
macro_rules! thread_local_cell {
    ($(#[$meta:meta])* static $name:ident: Cell<$ty:ty> = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$meta])* static $name: std::cell::Cell<$ty> = const { std::cell::Cell::new($init) }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$meta])* static $name: std::cell::Cell<$ty> = std::cell::Cell::new($init); }
    };
}
pub(crate) use thread_local_cell;

/// Spins briefly before a worker goes to sleep, in production. Under loom a
/// spin would only multiply the interleavings to explore, so it is skipped.
#[derive(Debug)]
pub(crate) struct Spin {
    #[cfg(not(loom))]
    backoff: crossbeam_utils::Backoff,
}

impl Spin {
    pub(crate) fn new() -> Spin {
        Spin {
            #[cfg(not(loom))]
            backoff: crossbeam_utils::Backoff::new(),
        }
    }

    /// Spins or yields once; returns false when it is time to sleep.
    pub(crate) fn again(&self) -> bool {
        #[cfg(not(loom))]
        {
            if self.backoff.is_completed() {
                return false;
            }
            self.backoff.snooze();
            true
        }
        #[cfg(loom)]
        false
    }
}

/// Waits a moment for another thread to finish a few instructions (a stop
/// waiting out a worker's `STARTING` mark), `attempt` counting from 0.
///
/// Yields at first; from the 32nd attempt it sleeps 50 µs instead, so a
/// waiter that outranks the other thread (a real-time stopper sharing its
/// core, for which a yield does not let a normal thread run) cannot spin
/// forever. Under loom: a yield, which the checker treats as "let the
/// others run".
pub(crate) fn wait_for_progress(attempt: u32) {
    #[cfg(not(loom))]
    {
        if attempt < 32 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    #[cfg(loom)]
    {
        let _ = attempt;
        loom::thread::yield_now();
    }
}

/// A bounded FIFO queue: what a lane needs from a channel.
///
/// Memory ordering the wake-up and backpressure protocols rely on (see
/// "Sleeping workers" and "Backpressure" in `src/lanes.rs`): `try_push`
/// publishes an item with a SeqCst read-modify-write that `is_empty` and
/// `try_pop` observe through SeqCst loads, and `try_pop` frees a slot with
/// a SeqCst read-modify-write. crossbeam-channel's array flavor does all
/// three (the tail and head compare-and-swaps and `is_empty`'s loads in
/// `flavors/array.rs`); the loom model does them under one lock.
pub(crate) trait Queue<T>: Sized {
    /// A queue holding at most `capacity` items, preallocated.
    fn with_capacity(capacity: usize) -> Self;
    /// Enqueues if there is room; gives the item back if full.
    fn try_push(&self, item: T) -> Result<(), T>;
    /// Dequeues the oldest item, if any.
    fn try_pop(&self) -> Option<T>;
    /// Items queued now.
    fn len(&self) -> usize;
    /// Whether nothing is queued now.
    fn is_empty(&self) -> bool;
}

#[cfg(not(loom))]
pub(crate) use crossbeam_queue::CrossbeamQueue as LaneQueue;
#[cfg(loom)]
pub(crate) use model::ModelQueue as LaneQueue;

#[cfg(not(loom))]
mod crossbeam_queue {
    use crossbeam_channel::{Receiver, Sender, TrySendError};

    use super::Queue;

    /// A lane as one bounded crossbeam channel; the queue owns both ends,
    /// so it never disconnects.
    #[derive(Debug)]
    pub(crate) struct CrossbeamQueue<T> {
        /// Sending half.
        tx: Sender<T>,
        /// Receiving half.
        rx: Receiver<T>,
    }

    impl<T> Queue<T> for CrossbeamQueue<T> {
        fn with_capacity(capacity: usize) -> Self {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            CrossbeamQueue { tx, rx }
        }

        fn try_push(&self, item: T) -> Result<(), T> {
            self.tx.try_send(item).map_err(TrySendError::into_inner)
        }

        fn try_pop(&self) -> Option<T> {
            // `is_empty` is two loads; `try_recv` on an empty array channel
            // also issues a SeqCst fence. Workers probe empty lanes (Urgent,
            // usually) before every job, so look before reaching in. A push
            // racing this check is found by the next probe; the sleep
            // protocol re-checks after registering (src/lanes.rs).
            if self.rx.is_empty() {
                return None;
            }
            self.rx.try_recv().ok()
        }

        fn len(&self) -> usize {
            self.rx.len()
        }

        fn is_empty(&self) -> bool {
            self.rx.is_empty()
        }
    }
}

#[cfg(loom)]
mod model {
    use std::collections::VecDeque;
    use std::ops::{Deref, DerefMut};
    use std::time::Instant;

    use super::Queue;

    /// `parking_lot::Mutex`'s API over loom's mutex.
    #[derive(Debug)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// Its guard; the `Option` lets `Condvar::wait` move the inner guard.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Mutex<T> {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().unwrap()))
        }

        /// Deadlines are not modelled: locks like `lock`.
        pub(crate) fn try_lock_until(&self, _deadline: Instant) -> Option<MutexGuard<'_, T>> {
            Some(self.lock())
        }

        pub(crate) fn get_mut(&mut self) -> &mut T {
            self.0.get_mut().unwrap()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Self {
            Mutex::new(T::default())
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().unwrap()
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().unwrap()
        }
    }

    /// `wait_until`'s result.
    pub(crate) struct Timeout(bool);

    impl Timeout {
        pub(crate) fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// `parking_lot::Condvar`'s API over loom's condvar.
    #[derive(Debug, Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Condvar {
            Condvar(loom::sync::Condvar::new())
        }

        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().unwrap();
            guard.0 = Some(self.0.wait(inner).unwrap());
        }

        /// Time is not modelled, except that a deadline already passed
        /// times out at once (what `stop_timeout(Duration::ZERO)` relies
        /// on); any other deadline waits like `wait`.
        pub(crate) fn wait_until<T>(
            &self,
            guard: &mut MutexGuard<'_, T>,
            deadline: Instant,
        ) -> Timeout {
            if Instant::now() >= deadline {
                return Timeout(true);
            }
            self.wait(guard);
            Timeout(false)
        }

        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }

        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    /// A lane under the model checker.
    #[derive(Debug)]
    pub(crate) struct ModelQueue<T> {
        /// The items, oldest first.
        items: Mutex<VecDeque<T>>,
        /// Most items held at once.
        capacity: usize,
    }

    impl<T> Queue<T> for ModelQueue<T> {
        fn with_capacity(capacity: usize) -> Self {
            ModelQueue {
                items: Mutex::new(VecDeque::with_capacity(capacity)),
                capacity,
            }
        }

        fn try_push(&self, item: T) -> Result<(), T> {
            let mut items = self.items.lock();
            if items.len() >= self.capacity {
                return Err(item);
            }
            items.push_back(item);
            Ok(())
        }

        fn try_pop(&self) -> Option<T> {
            self.items.lock().pop_front()
        }

        fn len(&self) -> usize {
            self.items.lock().len()
        }

        fn is_empty(&self) -> bool {
            self.items.lock().is_empty()
        }
    }
}
