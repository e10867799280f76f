//! Progress reporting and cancellation shared by the command line and the app.
//!
//! Long work receives a `&dyn Progress`; it announces stages, advances a counter and polls
//! `is_cancelled`, returning `Error::Cancelled` as soon as it sees it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

pub trait Progress: Sync {
    /// A new stage begins with `total` units of work (0 when unknown).
    fn start_stage(&self, name: &str, total: u64);
    /// `units` more units of the current stage are done.
    fn advance(&self, units: u64);
    /// Whether the user asked to stop.
    fn is_cancelled(&self) -> bool;

    /// `Err(Cancelled)` once the user asked to stop.
    fn check_cancelled(&self) -> Result<()> {
        if self.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }
}

/// Reports nothing and never cancels: for tests and library calls that need no feedback.
pub struct Silent;

impl Progress for Silent {
    fn start_stage(&self, _name: &str, _total: u64) {}
    fn advance(&self, _units: u64) {}
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A cancellation flag that another thread (a Ctrl-C handler, a UI button) can raise.
#[derive(Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    /// Lowers the flag again, for a worker that runs the next job.
    pub fn reset(&self) {
        self.0.store(false, Ordering::SeqCst);
    }
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
