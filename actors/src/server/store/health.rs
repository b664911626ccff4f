//! The store's health, shared with whoever shows it (the snapshot's `store`, `/healthz`).
//!
//! The Store writes it after every commit attempt; readers (the Registry, HTTP) take a copy.

use std::sync::Mutex;

use crate::util::now_ms;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct StoreHealth {
    fault: Mutex<Option<StoreFault>>,
}

/// Why the store cannot write, since when, and what waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// The last error, as SQLite (or the OS) words it.
    pub error: String,
    /// When the first failed commit of this episode happened, ms since the Unix epoch.
    pub since_ms: u64,
    /// Failed commits in a row.
    pub attempts: u64,
    /// Writes waiting to be committed (samples and hellos).
    pub queued: usize,
}

impl StoreHealth {
    /// `None` while the store writes; the current fault otherwise.
    pub fn status(&self) -> Option<StoreFault> {
        self.lock().clone()
    }

    /// The store's state as the snapshot and `/healthz` show it.
    pub fn view(&self) -> crate::snapshot::StoreView {
        use crate::snapshot::{StoreStatus, StoreView};
        match self.status() {
            None => StoreView {
                status: StoreStatus::Ok,
                error: None,
                failing_since_ms: None,
                failed_attempts: 0,
                queued_writes: 0,
            },
            Some(f) => StoreView {
                status: StoreStatus::Failing,
                error: Some(f.error),
                failing_since_ms: Some(f.since_ms),
                failed_attempts: f.attempts,
                queued_writes: u64::try_from(f.queued).unwrap_or(u64::MAX),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<StoreFault>> {
        self.fault
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failed commit; returns the fault as it now stands.
    pub(super) fn failed(&self, error: String, queued: usize) -> StoreFault {
        let mut fault = self.lock();
        let f = fault.get_or_insert_with(|| StoreFault {
            error: String::new(),
            since_ms: now_ms(),
            attempts: 0,
            queued,
        });
        f.error = error;
        f.attempts += 1;
        f.queued = queued;
        f.clone()
    }

    /// Records a successful commit; returns the fault it ends, if any.
    pub(super) fn recovered(&self) -> Option<StoreFault> {
        self.lock().take()
    }
}
