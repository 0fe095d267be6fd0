//! A UDP relay that adds a fixed round-trip time in front of one DNS
//! server, so a benchmark's "cold" resolution pays an RTT per name as it
//! would on the internet, where an authoritative server is milliseconds
//! away, not microseconds as on loopback. (`tc netem` would do this, but
//! this machine's kernel has no netem.)
//!
//!     cargo build --release --example delay_proxy
//!     target/release/examples/delay_proxy LISTEN UPSTREAM RTT_MS
//!
//! Each query is sent to UPSTREAM from a fresh socket; the reply goes back
//! to the client RTT_MS after the query arrived (or as soon as it comes, if
//! the server took longer). Queries with no reply within two seconds are
//! dropped. Used by `benches/dnsperf.sh` (UPSTREAM_RTT_MS); a bench tool,
//! not a DNS server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::{sleep_until, timeout, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: delay_proxy LISTEN UPSTREAM RTT_MS";
    let (Some(listen), Some(upstream), Some(rtt)) = (args.next(), args.next(), args.next()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let parse = |s: &str| -> SocketAddr {
        s.parse().unwrap_or_else(|e| {
            eprintln!("delay_proxy: {s}: {e}");
            std::process::exit(2)
        })
    };
    let (listen, upstream) = (parse(&listen), parse(&upstream));
    let rtt = Duration::from_millis(rtt.parse().unwrap_or_else(|e| {
        eprintln!("delay_proxy: RTT_MS {rtt}: {e}");
        std::process::exit(2)
    }));
    let sock = Arc::new(UdpSocket::bind(listen).await?);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, client) = sock.recv_from(&mut buf).await?;
        let due = Instant::now() + rtt;
        let query = buf[..n].to_vec();
        let sock = sock.clone();
        tokio::spawn(async move {
            let up = UdpSocket::bind("127.0.0.1:0").await.ok()?;
            up.send_to(&query, upstream).await.ok()?;
            let mut reply = vec![0u8; 65535];
            let (m, _) = timeout(Duration::from_secs(2), up.recv_from(&mut reply))
                .await
                .ok()?
                .ok()?;
            sleep_until(due).await;
            sock.send_to(&reply[..m], client).await.ok()
        });
    }
}
