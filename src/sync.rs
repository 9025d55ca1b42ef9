//! Locking a mutex that a panicking thread may have poisoned.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, and takes it over as it is if a thread panicked holding it.
///
/// Recovering is right for every lock here: each guards data that every single
/// operation on it leaves consistent (one assignment, one push or pop, one call), so a
/// panic cannot leave it half-changed; and a panic in one connection's thread must not
/// take the server, or the client's other half, down with it.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
