#![allow(dead_code)]
//! External processes for the interop tests (NSD, Unbound, dig, the
//! resolvd binary): finding tools, bounded runs, and guards that stop what
//! a test started by its PID and process group, also when it panics.

use std::fs::{self, File};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Path of an external tool; panics naming the Debian package when missing.
pub fn tool(name: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"] {
        dirs.push(PathBuf::from(d));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found in PATH or /usr/sbin: install the Debian package \
                 `{package}` (apt-get install {package})"
            )
        })
}

/// Runs a command to completion, killing it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => sleep(Duration::from_millis(10)),
            _ => {
                kill_group(child.id(), libc::SIGKILL);
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}");
            }
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

pub fn kill_group(pid: u32, sig: i32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) has no memory effects; the group is one we created.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// A port in 20000..32000 on which UDP and TCP bind on every address given.
pub fn free_port(addrs: &[String]) -> u16 {
    for _ in 0..200 {
        let port: u16 = 20000 + rand::random::<u16>() % 12000;
        if addrs.iter().all(|a| {
            UdpSocket::bind((a.as_str(), port)).is_ok()
                && TcpListener::bind((a.as_str(), port)).is_ok()
        }) {
            return port;
        }
    }
    panic!("no port free on all of {addrs:?} after 200 tries");
}

pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Processes started by a test; each is stopped by its PID (and process
/// group, for daemons that fork helpers, like NSD) when this is dropped.
#[derive(Default)]
pub struct Procs(Vec<Proc>);

impl Procs {
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> usize {
        let out = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().expect("clone log handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.0.push(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        });
        self.0.len() - 1
    }

    /// Panics with the process's log if it has exited.
    pub fn assert_alive(&mut self, i: usize) {
        let p = &mut self.0[i];
        if let Ok(Some(status)) = p.child.try_wait() {
            panic!(
                "{} exited early ({status}); its output:\n{}",
                p.name,
                tail(&p.log)
            );
        }
    }

    /// Waits (bounded) until the process's log contains `needle`.
    pub fn wait_for_log(&mut self, i: usize, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..500 {
            if fs::read_to_string(&self.0[i].log)
                .unwrap_or_default()
                .contains(needle)
            {
                return;
            }
            self.assert_alive(i);
            if Instant::now() > deadline {
                break;
            }
            sleep(Duration::from_millis(20));
        }
        panic!(
            "{} did not log {needle:?} within 10 s; its output:\n{}",
            self.0[i].name,
            tail(&self.0[i].log)
        );
    }

    /// PID of the `i`th process started.
    pub fn pid(&self, i: usize) -> u32 {
        self.0[i].child.id()
    }

    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.0[i].log)
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for p in self.0.iter_mut().rev() {
            let pid = p.child.id();
            if let Ok(None) = p.child.try_wait() {
                kill_group(pid, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(3);
                while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    sleep(Duration::from_millis(10));
                }
            }
            // Whatever is left of the group (the leader or its helpers).
            kill_group(pid, libc::SIGKILL);
            let _ = p.child.wait();
        }
    }
}
