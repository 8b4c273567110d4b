//! A shared list of failures raised inside operators.
//!
//! Operators must not panic on bad input or failed I/O. Where an operator cannot return an
//! error (it runs inside a timely worker), it records the failure here and stops producing; the
//! job checks the list when the dataflow completes and exits non-zero with every message.

use std::sync::{Arc, Mutex};

/// Cloneable handle to the failures of one run (shared across worker threads).
#[derive(Clone, Debug, Default)]
pub struct Failures(Arc<Mutex<Vec<String>>>);

impl Failures {
    /// Records a failure message.
    pub fn push(&self, message: impl Into<String>) {
        let mut guard = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.push(message.into());
    }

    /// All failures recorded so far, sorted (worker interleaving must not change the report).
    pub fn take_sorted(&self) -> Vec<String> {
        let mut guard = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut all = std::mem::take(&mut *guard);
        all.sort();
        all.dedup();
        all
    }

    /// True if any failure was recorded.
    pub fn any(&self) -> bool {
        match self.0.lock() {
            Ok(g) => !g.is_empty(),
            Err(poisoned) => !poisoned.into_inner().is_empty(),
        }
    }
}
