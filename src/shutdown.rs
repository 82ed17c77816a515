//! One shutdown path: SIGINT/SIGTERM set a flag that every loop checks.

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// A cloneable stop flag.
#[derive(Clone, Default, Debug)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag nobody has raised yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// True once shutdown was requested.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Requests shutdown.
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// The underlying flag, for APIs that take an `Arc<AtomicBool>`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// The process-wide flag raised by SIGINT or SIGTERM (installed on first call).
pub fn on_signal() -> Stop {
    static STOP: OnceLock<Stop> = OnceLock::new();
    STOP.get_or_init(|| {
        let stop = Stop::new();
        let raised = stop.clone();
        // Fails only if another handler is installed; then signals keep their default.
        let _ = ctrlc::set_handler(move || raised.set());
        stop
    })
    .clone()
}
