//! The circuit breaker in front of Redis: after `breaker_failures`
//! consecutive failures Redis is skipped for `breaker_backoff` (logged
//! once per outage), then one probe decides whether it is used again.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Skips Redis after consecutive failures, for a backoff period.
pub(super) struct Breaker {
    threshold: u32,
    backoff: Duration,
    failures: AtomicU32,
    /// Milliseconds since `origin` until which Redis is skipped; 0 = closed.
    open_until: AtomicU64,
    /// Whether the opening was logged (once per outage).
    logged: AtomicBool,
    origin: Instant,
}

impl Breaker {
    /// Closed; opens after `threshold` consecutive failures, for `backoff`.
    pub(super) fn new(threshold: u32, backoff: Duration) -> Breaker {
        Breaker {
            threshold,
            backoff,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            logged: AtomicBool::new(false),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    /// Whether Redis may be tried now (closed, or open and past backoff:
    /// a probe).
    pub(super) fn allow(&self) -> bool {
        let until = self.open_until.load(Relaxed);
        until == 0 || self.now_ms() >= until
    }

    pub(super) fn success(&self) {
        self.failures.store(0, Relaxed);
        if self.open_until.swap(0, Relaxed) != 0 && self.logged.swap(false, Relaxed) {
            tracing::info!("Redis (shared cache) answers again; using it");
        }
    }

    pub(super) fn failure(&self, why: &str) {
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        // A failed probe (the breaker was open) opens it again at once.
        if n >= self.threshold || self.open_until.load(Relaxed) != 0 {
            self.open_until
                .store(self.now_ms() + self.backoff.as_millis() as u64, Relaxed);
            if !self.logged.swap(true, Relaxed) {
                tracing::warn!(
                    "Redis (shared cache) failing ({why}); skipping it, retrying every {} ms",
                    self.backoff.as_millis()
                );
            }
        }
    }
}
