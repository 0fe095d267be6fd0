//! The `resolvd` binary: CLI, configuration, runtime, signals. Everything
//! else lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use resolvd::config::Config;
use resolvd::daemon::Daemon;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// A recursive caching DNS resolver with load-balanced, geo-routed local zones.
#[derive(Parser, Debug)]
#[command(name = "resolvd", version, about)]
struct Cli {
    /// Configuration file (TOML); without it the embedded defaults are used.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (UDP and TCP); repeatable; replaces [server] listen.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Root hints file (named.root format); replaces [resolver] root_hints.
    #[arg(long, value_name = "FILE")]
    root_hints: Option<PathBuf>,
    /// Worker threads; replaces [server] threads.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file; prints every error with its line.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Talk to a running daemon through its control socket.
    Control {
        /// Control socket path (default: the configured one).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[command(subcommand)]
        action: ControlAction,
    },
}

#[derive(Subcommand, Debug)]
enum ControlAction {
    /// Print counters and cache statistics.
    Stats,
    /// Re-read the configuration file and apply it (as SIGHUP does); prints
    /// what changed, or every error and keeps the old configuration.
    Reload,
    /// Remove cached answers: all, one name, or a name and everything below.
    Flush {
        /// Name to flush; all when absent.
        name: Option<String>,
        /// Also flush every name below NAME.
        #[arg(long)]
        subtree: bool,
    },
    /// Resolve NAME with the caches bypassed and print every upstream
    /// exchange: server, zone cut, question, RTT, RCODE, what was learned.
    Trace {
        /// The name to resolve.
        name: String,
        /// Its type (default A).
        #[arg(default_value = "A")]
        qtype: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every pool member: weight, region, health, how often drawn.
    Pools,
    /// The infra cache: per upstream address, smoothed RTT and hold-downs.
    Servers,
    /// Write the answer cache to FILE (for a warm restart).
    DumpCache {
        /// Where to write it (the daemon writes it: it must be able to).
        file: PathBuf,
    },
    /// Load answers from a file written by dump-cache; expired ones are skipped.
    LoadCache {
        /// The dump to read.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { file }) => check_config(file),
        Some(Command::Control { socket, action }) => match control(&cli, socket.clone(), action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("resolvd: {e:#}");
                ExitCode::from(1)
            }
        },
        None => run(&cli),
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match load_checked(file) {
        Ok(_) => {
            println!("{}: ok", file.display());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            for e in errs {
                eprintln!("{e}");
            }
            ExitCode::from(1)
        }
    }
}

/// Reads a file and checks what only exists beyond the TOML: zones, pools,
/// zone files and the root hints file. One line per problem.
fn load_checked(file: &std::path::Path) -> Result<Config, Vec<String>> {
    let cfg = Config::load(file)
        .map_err(|errs| errs.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    let mut errs = Vec::new();
    if let Err(zone_errs) =
        resolvd::zones::LocalZones::from_config(&cfg.zone, &cfg.geo, &cfg.base_dir)
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        errs.extend(zone_errs.iter().map(|e| {
            let line = resolvd::config::zone_error_line(&text, e);
            format!("{}:{line}: {e}", file.display())
        }));
    }
    if let Some(h) = &cfg.resolver.root_hints {
        if let Err(e) = resolvd::root_hints::RootHints::load(&cfg.base_dir.join(h)) {
            errs.push(format!("{}: root_hints: {e}", file.display()));
        }
    }
    // Load the pair as the daemon will, so a missing file, a key that is
    // not the certificate's or a PEM without the right item fails here.
    if let Some((cert, key)) = cfg.tls_files() {
        if let Err(e) = resolvd::transport::tls::load_certified_key(&cert, &key) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let k = e.key_name();
            let line = resolvd::config::line_of_key(&text, k);
            errs.push(format!("{}:{line}: {k}: {e}", file.display()));
        }
    }
    if errs.is_empty() {
        Ok(cfg)
    } else {
        Err(errs)
    }
}

/// Loads the file (or the defaults) and applies command-line overrides.
fn load(cli: &Cli) -> Result<Config, ExitCode> {
    let mut cfg = match &cli.config {
        Some(p) => load_checked(p).map_err(|errs| {
            for e in errs {
                eprintln!("resolvd: {e}");
            }
            ExitCode::from(2)
        })?,
        None => Config::embedded_default(),
    };
    apply_overrides(cli, &mut cfg);
    Ok(cfg)
}

/// The command line wins over the file, at start and at every reload.
fn apply_overrides(cli: &Cli, cfg: &mut Config) {
    if !cli.listen.is_empty() {
        cfg.server.listen = cli.listen.clone();
    }
    if let Some(h) = &cli.root_hints {
        // Relative to the working directory, as a user typing it expects.
        cfg.resolver.root_hints = Some(std::path::absolute(h).unwrap_or_else(|_| h.clone()));
    }
    if let Some(t) = cli.threads {
        cfg.server.threads = t;
    }
}

fn run(cli: &Cli) -> ExitCode {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log_filter = init_logging(&cfg.log);
    // Before any other thread starts: they inherit the policy.
    if cfg.server.batch_scheduling {
        if let Err(e) = resolvd::sched::batch_this_thread() {
            tracing::warn!("batch_scheduling: cannot set SCHED_BATCH ({e}); default policy kept");
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("resolvd: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(serve(cli, cfg, log_filter))
}

async fn serve(cli: &Cli, cfg: Config, log_filter: LogFilter) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let daemon = match Daemon::start(&cfg).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("resolvd: {e}");
            return ExitCode::from(1);
        }
    };
    startup_summary(&cfg, &daemon);
    for a in daemon.local_addrs() {
        tracing::info!("listening on {a} (udp, tcp)");
    }
    for a in daemon.tls_addrs() {
        tracing::info!("listening on {a} (dns over tls)");
    }
    for a in daemon.https_addrs() {
        tracing::info!("listening on {a} (dns over https)");
    }
    for a in daemon.https_plain_addrs() {
        tracing::info!("listening on {a} (dns over plain http, for a proxy)");
    }
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        eprintln!("resolvd: cannot install signal handlers");
        return ExitCode::from(1);
    };
    // Every listener is bound and serving: systemd may start what needs DNS.
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    let mut reloads = daemon.take_reload_requests();
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                reload_notifying(cli, &daemon, &log_filter);
            }
            Some(reply) = async {
                match reloads.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let _ = reply.send(reload_notifying(cli, &daemon, &log_filter));
            }
        }
    }
    tracing::info!("shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    daemon.shutdown().await;
    ExitCode::SUCCESS
}

/// Changes the log filter of the running process (reload of `[log] level`).
type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Installs the subscriber: `[log] format` text or JSON lines on stderr,
/// filtered by `[log] level` (RUST_LOG overrides). Returns the handle a
/// reload uses to change the level.
fn init_logging(log: &resolvd::config::LogConfig) -> LogFilter {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| log.level.clone());
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(level));
    let json = log.format == resolvd::config::LogFormat::Json;
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    });
    // One JSON object per line with the event's fields at the top level,
    // as log shippers expect.
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .init();
    handle
}

/// One line that says what this process is and does: what an operator
/// looks for first in a log.
fn startup_summary(cfg: &Config, daemon: &Daemon) {
    let list = |v: Vec<SocketAddr>| {
        v.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let pools: usize = cfg.zone.iter().map(|z| z.pool.len()).sum();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        listen = %list(daemon.local_addrs()),
        tls_listen = %list(daemon.tls_addrs()),
        https_listen = %list(daemon.https_addrs()),
        https_listen_plain = %list(daemon.https_plain_addrs()),
        zones = cfg.zone.len(),
        pools,
        cache_max_bytes = cfg.cache.max_size.0,
        dnssec = if cfg.dnssec.validation { "validating" } else { "off" },
        metrics = %daemon.metrics_addr().map(|a| a.to_string()).unwrap_or_default(),
        dnstap = %cfg.dnstap.socket.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        control = %if cfg.control.enabled { cfg.control.socket.display().to_string() } else { String::new() },
        "resolvd started"
    );
}

/// Tells the service manager (systemd, `Type=notify`) about a state
/// change; does nothing when it did not start us (no NOTIFY_SOCKET).
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// A reload (SIGHUP or `control reload`) between RELOADING=1 and READY=1,
/// as systemd expects; returns the text for `control reload`.
fn reload_notifying(cli: &Cli, daemon: &Daemon, log_filter: &LogFilter) -> String {
    // MONOTONIC_USEC lets systemd tell this reload from an earlier one
    // (sd_notify(3), Type=notify-reload).
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
        states.push(t);
    }
    notify(&states);
    let text = reload(cli, daemon, log_filter);
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    text
}

/// Re-reads the file and applies it whole; a bad file changes nothing and
/// every error is logged and returned.
fn reload(cli: &Cli, daemon: &Daemon, log_filter: &LogFilter) -> String {
    let Some(path) = &cli.config else {
        tracing::warn!("reload ignored: no --config file to reload");
        return "error: no --config file to reload\n".into();
    };
    let mut cfg = match load_checked(path) {
        Ok(c) => c,
        Err(errs) => return rejected(&errs),
    };
    apply_overrides(cli, &mut cfg);
    match daemon.reload(&cfg) {
        Ok(report) => {
            if std::env::var_os("RUST_LOG").is_none() {
                let _ = log_filter.reload(tracing_subscriber::EnvFilter::new(&cfg.log.level));
            }
            tracing::info!("reloaded {}: {report}", path.display());
            for k in &report.needs_restart {
                tracing::warn!(
                    "reload: {k} changed; the new value takes effect at the next restart"
                );
            }
            format!("ok reloaded {}: {report}\n", path.display())
        }
        Err(e) => rejected(&e.0),
    }
}

fn rejected(errs: &[String]) -> String {
    let mut text = String::new();
    for e in errs {
        tracing::error!("reload rejected, old configuration kept: {e}");
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str("error: reload rejected, old configuration kept\n");
    text
}

fn control(cli: &Cli, socket: Option<PathBuf>, action: &ControlAction) -> anyhow::Result<()> {
    let path = match socket {
        Some(p) => p,
        None => match &cli.config {
            Some(c) => {
                Config::load(c)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{}",
                            e.iter()
                                .map(|x| x.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    })?
                    .control
                    .socket
            }
            None => Config::embedded_default().control.socket,
        },
    };
    let line = match action {
        ControlAction::Stats => "stats".to_string(),
        ControlAction::Reload => "reload".to_string(),
        ControlAction::Flush { name: None, .. } => "flush".to_string(),
        ControlAction::Flush {
            name: Some(n),
            subtree,
        } => {
            format!("flush {n}{}", if *subtree { " subtree" } else { "" })
        }
        ControlAction::Pools => "pools".to_string(),
        ControlAction::Trace { name, qtype, json } => {
            format!("trace {name} {qtype}{}", if *json { " json" } else { "" })
        }
        ControlAction::Servers => "servers".to_string(),
        // The daemon resolves paths against its own working directory.
        ControlAction::DumpCache { file } => format!("dump-cache {}", absolute(file)?.display()),
        ControlAction::LoadCache { file } => format!("load-cache {}", absolute(file)?.display()),
    };
    let mut s = UnixStream::connect(&path)
        .with_context(|| format!("cannot connect to control socket {}", path.display()))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    print!("{reply}");
    if reply.starts_with("error") {
        anyhow::bail!("command failed");
    }
    Ok(())
}

fn absolute(p: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))
}

/// mimalloc instead of glibc malloc: resolution allocates and frees many
/// short-lived objects between long-lived cache entries, and glibc's
/// fragmentation kept ~40% more memory resident per cached name
/// (benches/dnsperf.sh: 921 -> 524 bytes per name). How it is called is
/// in `resolvd::allocator`.
#[global_allocator]
static GLOBAL: resolvd::allocator::MiMalloc = resolvd::allocator::MiMalloc;
