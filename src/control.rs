//! The control socket behind `resolvd control`: a unix socket, mode 0600 so
//! only its owner can flush the cache or read statistics.
//!
//! Protocol: one request line, one reply ending when the server closes.
//! Requests: `reload`, `trace NAME [TYPE] [json]`, `stats`, `flush`, `flush NAME`, `flush NAME subtree`,
//! `pools`, `servers`, `dump-cache FILE`, `load-cache FILE` (absolute paths: the daemon's
//! working directory is not the client's).

use crate::handler::Handler;
use hickory_proto::rr::{Name, RecordType};
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
    reload: tokio::sync::mpsc::Sender<crate::daemon::ReloadRequest>,
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
            let reload = reload.clone();
            tokio::spawn(async move {
                let (rd, mut wr) = stream.into_split();
                let mut line = String::new();
                let mut rd = BufReader::new(rd).take(4096);
                if rd.read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = if line.trim() == "reload" {
                    request_reload(&reload).await
                } else {
                    execute_async(&handler, line.trim()).await
                };
                let _ = wr.write_all(reply.as_bytes()).await;
            });
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

/// How long `control reload` waits for the outcome.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Asks the process to reload its configuration and waits for the outcome.
async fn request_reload(
    reload: &tokio::sync::mpsc::Sender<crate::daemon::ReloadRequest>,
) -> String {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if reload.send(tx).await.is_err() {
        return "error: this resolvd cannot reload (no configuration file)\n".into();
    }
    match tokio::time::timeout(RELOAD_TIMEOUT, rx).await {
        Ok(Ok(text)) => text,
        _ => "error: reload did not finish\n".into(),
    }
}

/// `trace NAME [TYPE] [json]`: one resolution with the caches bypassed,
/// every upstream exchange listed.
async fn trace(handler: &Handler, line: &str) -> String {
    let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
    let json = words.last() == Some(&"json");
    if json {
        words.pop();
    }
    let (name, qtype) = match words.as_slice() {
        [name] => (*name, RecordType::A),
        [name, t] => match RecordType::from_str(&t.to_ascii_uppercase()) {
            Ok(t) => (*name, t),
            Err(_) => return format!("error: unknown type {t:?}\n"),
        },
        _ => return "error: usage: trace NAME [TYPE] [json]\n".into(),
    };
    let mut name = match Name::from_str(name) {
        Ok(n) => n,
        Err(e) => return format!("error: bad name {name:?}: {e}\n"),
    };
    name.set_fqdn(true);
    match handler.trace(name, qtype).await {
        Some(t) if json => match serde_json::to_string_pretty(&t) {
            Ok(s) => s + "\n",
            Err(e) => format!("error: {e}\n"),
        },
        Some(t) => t.render(),
        None => "error: this resolver cannot trace\n".into(),
    }
}

/// As [`execute`], with the commands that wait for the network: `trace`,
/// and a flush also empties the shared cache (Redis) when there is one,
/// before the reply is sent. `reload` is not among them: the process that
/// owns the configuration file answers it.
pub async fn execute_async(handler: &Handler, line: &str) -> String {
    if line.starts_with("trace ") {
        return trace(handler, line).await;
    }
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

/// The argument of `command PATH`: everything after the command and the
/// blanks that follow it, up to the end of the line. None when the line is
/// another command or has no path.
fn path_argument<'a>(line: &'a str, command: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(command)?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let path = rest.trim_start().trim_end_matches(['\r', '\n']);
    (!path.is_empty()).then_some(path)
}

/// Runs one control command and returns its reply text.
pub fn execute(handler: &Handler, line: &str) -> String {
    // A path is the rest of the line, so one with spaces in it survives.
    if let Some(path) = path_argument(line, "dump-cache") {
        return match crate::persist::dump(&handler.cache, Path::new(path)) {
            Ok(n) => format!("ok dumped {n} entries to {path}\n"),
            Err(e) => format!("error: {e}\n"),
        };
    }
    if let Some(path) = path_argument(line, "load-cache") {
        return match crate::persist::load(&handler.cache, Path::new(path)) {
            Ok(s) => format!(
                "ok loaded {} entries from {path} ({} expired, {} unusable)\n",
                s.loaded, s.expired, s.unusable
            ),
            Err(e) => format!("error: {e}\n"),
        };
    }
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
        ["pools"] => pools(handler),
        ["servers"] => servers(handler),
        _ => format!(
            "error: unknown command {line:?} (try: reload, trace NAME [TYPE], stats, flush, flush NAME, flush NAME subtree, \
             dump-cache FILE, load-cache FILE, pools, servers)\n"
        ),
    }
}

/// Formats rows as columns separated by two spaces, the first row a header.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!(
                    "{c:<w$}  ",
                    w = widths.get(i).copied().unwrap_or(0)
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `pools`: every pool member with its weight, region, health and how
/// often it was drawn since the zones were loaded.
fn pools(handler: &Handler) -> String {
    let members = handler.zones.load().pool_members();
    if members.is_empty() {
        return "no pools configured\n".into();
    }
    let mut rows = vec![[
        "POOL", "TYPE", "MEMBER", "WEIGHT", "REGION", "HEALTH", "SELECTED",
    ]
    .map(String::from)
    .to_vec()];
    for m in members {
        rows.push(vec![
            m.pool,
            m.rtype,
            m.member,
            m.weight.to_string(),
            m.region.unwrap_or_else(|| "-".into()),
            match (m.checked, m.up) {
                (false, _) => "unchecked".into(),
                (true, true) => "up".into(),
                (true, false) => "down".into(),
            },
            m.selections.to_string(),
        ]);
    }
    table(&rows)
}

/// `servers`: the infra cache, one upstream address a line: smoothed RTT,
/// variance, timeouts in a row, and any hold-down with its reason.
fn servers(handler: &Handler) -> String {
    let servers = handler.servers();
    if servers.is_empty() {
        return "no upstream servers contacted yet\n".into();
    }
    let mut rows = vec![["ADDRESS", "SRTT_MS", "RTTVAR_MS", "TIMEOUTS", "HELD_DOWN"]
        .map(String::from)
        .to_vec()];
    for s in servers {
        let mut held: Vec<String> = Vec::new();
        if let Some(d) = s.dead_for {
            held.push(format!("dead for {}s", d.as_secs() + 1));
        }
        for (zone, d) in &s.lame_for {
            held.push(format!("lame for {zone} {}s", d.as_secs() + 1));
        }
        rows.push(vec![
            s.addr.to_string(),
            s.srtt_ms.map_or("-".into(), |v| format!("{v:.1}")),
            format!("{:.1}", s.rttvar_ms),
            s.timeouts_in_row.to_string(),
            if held.is_empty() {
                "-".into()
            } else {
                held.join(", ")
            },
        ]);
    }
    table(&rows)
}

#[cfg(test)]
mod tests {
    use super::path_argument;

    #[test]
    fn a_path_argument_is_the_rest_of_the_line() {
        assert_eq!(
            path_argument("dump-cache /var/lib/my cache.bin\n", "dump-cache"),
            Some("/var/lib/my cache.bin")
        );
        assert_eq!(
            path_argument("load-cache  /x\r\n", "load-cache"),
            Some("/x")
        );
        assert_eq!(path_argument("dump-cache\n", "dump-cache"), None);
        assert_eq!(path_argument("dump-cachex /a", "dump-cache"), None);
        assert_eq!(path_argument("stats", "dump-cache"), None);
    }
}
