//! The control socket behind `resolvd control`: a unix socket, mode 0600 so
//! only its owner can flush the cache or read statistics.
//!
//! Protocol: one request line, one reply ending when the server closes.
//! Requests: `stats`, `flush`, `flush NAME`, `flush NAME subtree`.

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
                let reply = execute_async(&handler, line.trim()).await;
                let _ = wr.write_all(reply.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// As [`execute`], and a flush also empties the shared cache (Redis) when
/// there is one, before the reply is sent.
pub async fn execute_async(handler: &Handler, line: &str) -> String {
    let mut reply = execute(handler, line);
    if !reply.starts_with("ok flushed") {
        return reply;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let name = match words.get(1).map(|n| Name::from_str(n)) {
        None => None,
        Some(Ok(mut n)) => {
            n.set_fqdn(true);
            Some(n)
        }
        Some(Err(_)) => return reply,
    };
    if let Some(more) = handler.flush_shared(name.as_ref(), words.len() == 3).await {
        reply.push_str(&more);
    }
    reply
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
        _ => format!(
            "error: unknown command {line:?} (try: stats, flush, flush NAME, flush NAME subtree)\n"
        ),
    }
}
