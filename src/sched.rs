//! The CPU scheduling policy of resolvd's threads (sched(7)).
//!
//! resolvd runs two kinds of busy threads: a UDP listener thread per socket
//! (cache hits) and the runtime's workers (misses: upstream exchanges and
//! replies). Under the default policy every datagram that wakes a thread
//! lets it preempt the other at once, so on a cold load the two traded the
//! CPU about once per query (0.9 voluntary context switches per query, 14%
//! of the CPU in the scheduler and wake-up IPIs, where single-threaded
//! Unbound has 0.01). `SCHED_BATCH` only turns off that wake-up preemption
//! (it is not a priority; no privilege is needed): a woken thread waits
//! until the running one blocks or uses up its slice, and then finds a
//! batch of work waiting. Switches fell to 0.03 per query and CPU per cold
//! query by 14% (`benches/dnsperf.sh` cold rounds). The price is latency
//! on a CPU that is busy with something else: a woken resolvd thread can
//! wait for the running task's slice (milliseconds) instead of taking the
//! CPU at once, the same as a query waiting its turn in a single-threaded
//! event loop. `[server] batch_scheduling = false` keeps the default
//! policy.

use std::io;

/// Puts the calling thread under `SCHED_BATCH`. Threads it creates later
/// inherit the policy (pthread's default `PTHREAD_INHERIT_SCHED`), so
/// calling this on the main thread before the runtime and the listener
/// threads start covers them all.
pub fn batch_this_thread() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call;
    // pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The policy of thread `tid` of this process (0: the calling thread),
/// e.g. `libc::SCHED_BATCH`.
pub fn policy(tid: i32) -> io::Result<i32> {
    // SAFETY: a plain system call without pointers.
    let p = unsafe { libc::sched_getscheduler(tid) };
    if p < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_policy_is_inherited_by_threads_started_after() {
        let (before, after) = std::thread::spawn(|| {
            let before = policy(0).ok();
            batch_this_thread().ok();
            let child = std::thread::spawn(|| policy(0).ok()).join().ok().flatten();
            (before, child)
        })
        .join()
        .unwrap_or((None, None));
        assert_eq!(before, Some(libc::SCHED_OTHER));
        assert_eq!(after, Some(libc::SCHED_BATCH));
    }
}
