//! TCP health probes for pool members.
//!
//! One task per (pool, member): every `interval` it opens a TCP connection to
//! `member:tcp_port` bounded by `timeout`. `fails` consecutive failures mark the
//! member down; one success marks it up again; members start up. Only the
//! connect is tested (like Route 53's TCP checks): no data is exchanged.
//!
//! Tasks hold a `Weak` to the member's health flag, so they end by themselves
//! when the `LocalZones` is dropped; the [`HealthGuard`] aborts them earlier.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{interval, timeout, MissedTickBehavior};

use super::pool::{HealthSpec, MemberHealth};

/// Owns the probe tasks; dropping it stops them.
#[derive(Debug, Default)]
pub struct HealthGuard {
    tasks: Vec<JoinHandle<()>>,
}

impl HealthGuard {
    pub(crate) fn push(&mut self, task: JoinHandle<()>) {
        self.tasks.push(task);
    }

    /// Number of probe tasks running (one per health-checked member).
    pub fn probes(&self) -> usize {
        self.tasks.len()
    }

    /// True when every probe task has ended.
    #[cfg(test)]
    pub(crate) fn tasks_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }
}

impl Drop for HealthGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Spawns the probe loop for one member on the current runtime.
pub(crate) fn spawn_probe(
    what: String,
    target: SocketAddr,
    spec: HealthSpec,
    health: Weak<MemberHealth>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = interval(spec.interval);
        // After a slow probe, keep the spacing rather than bursting to catch up.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut failures: u32 = 0;
        loop {
            ticks.tick().await;
            let ok = matches!(
                timeout(spec.timeout, TcpStream::connect(target)).await,
                Ok(Ok(_))
            );
            let Some(state) = health.upgrade() else {
                return; // the zones are gone
            };
            update(&state, ok, &mut failures, spec.fails, &what, target);
        }
    })
}

fn update(
    state: &Arc<MemberHealth>,
    ok: bool,
    failures: &mut u32,
    fails: u32,
    what: &str,
    target: SocketAddr,
) {
    if ok {
        *failures = 0;
        if !state.up.swap(true, Ordering::Relaxed) {
            tracing::info!(member = what, %target, "health check passed, member up");
        }
    } else {
        *failures = failures.saturating_add(1);
        if *failures >= fails && state.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(member = what, %target, failures = *failures, "health check failed, member down");
        }
    }
}
