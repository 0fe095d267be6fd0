//! The control socket behind `resolvd control`: a unix socket, mode 0600 so
//! only its owner can flush the cache or read statistics.
//!
//! Protocol: one request line, one reply ending when the server closes.
//! Requests: `stats`, `flush`, `flush NAME`, `flush NAME subtree`,
//! `dump-cache FILE`, `load-cache FILE` (absolute paths: the daemon's
//! working directory is not the client's).

use crate::handler::Handler;
use hickory_proto::rr::Name;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Binds the socket and serves it until shutdown.
pub fn start(
    path: &Path,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tasks: &TaskTracker,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run would make bind fail.
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let path = path.to_path_buf();
    tasks.spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = BufReader::new(rd).take(4096);
                if rd.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = execute(&handler, line.trim());
                let _ = wr.write_all(reply.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// Runs one control command and returns its reply text.
pub fn execute(handler: &Handler, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["stats"] => handler.stats(),
        ["flush"] => {
            handler.flush(None, false);
            "ok flushed all\n".into()
        }
        ["flush", name] | ["flush", name, "subtree"] => match Name::from_str(name) {
            Ok(mut n) => {
                n.set_fqdn(true);
                let subtree = words.len() == 3;
                handler.flush(Some(&n), subtree);
                format!(
                    "ok flushed {n}{}\n",
                    if subtree { " and below" } else { "" }
                )
            }
            Err(e) => format!("error: bad name {name:?}: {e}\n"),
        },
        ["dump-cache", path] => match crate::persist::dump(&handler.cache, Path::new(path)) {
            Ok(n) => format!("ok dumped {n} entries to {path}\n"),
            Err(e) => format!("error: {e}\n"),
        },
        ["load-cache", path] => match crate::persist::load(&handler.cache, Path::new(path)) {
            Ok(s) => format!(
                "ok loaded {} entries from {path} ({} expired, {} unusable)\n",
                s.loaded, s.expired, s.unusable
            ),
            Err(e) => format!("error: {e}\n"),
        },
        _ => format!(
            "error: unknown command {line:?} (try: stats, flush, flush NAME, flush NAME subtree, \
             dump-cache FILE, load-cache FILE)\n"
        ),
    }
}
