#!/usr/bin/env bash
# Soak: resolvd under saturation with hostile company, on loopback, offline.
#
#   sudo benches/soak.sh            # 120 s
#   SOAK_SECONDS=30 benches/soak.sh # a try-out
#
# For SOAK_SECONDS, all at once:
#   mix     dnsperf at saturation on a mix of cold names (each new), NXDOMAIN
#           names and names behind a dead server (which time out once the
#           kernel rate-limits its ICMP errors: dnsperf counts them lost)
#   hot     a second dnsperf at a steady HOT_QPS (20,000) on cached names:
#           the share that must lose nothing
#   junk    a sender of random datagrams (JUNK_PPS, 2,000/s)
#   idle    2,000 TCP connections opened and held idle
# and every 10 s the resident memory. At the end: lost queries, answered
# q/s per phase, peak RSS against [cache] max_size + 64 MiB, and open file
# descriptors before and after (a leak shows as a difference).
#
# World: NSD serves "." (127.78.0.1), "test." (127.78.0.2) and
# "soak.test." (127.78.0.3, names c0..c{N}); "dead.test." is delegated to
# 127.78.0.9 where nothing listens. resolvd runs one worker pinned to CPU 0;
# the load runs on CPU 1. Needs root (NSD on port 53), nsd, dnsperf, dig,
# python3, taskset. Builds `cargo build --release` once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DUR=${SOAK_SECONDS:-120}
HOT_QPS=${HOT_QPS:-20000}
JUNK_PPS=${JUNK_PPS:-2000}
IDLE=${IDLE_CONNECTIONS:-2000}
PORT=${RESOLVD_PORT:-53541}
MAX_SIZE_MIB=${MAX_SIZE_MIB:-128}
NAMES=200000
NET=127.78.0

die() { echo "soak.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }
[ "$(id -u)" = 0 ] || die "needs root (NSD listens on port 53)"
for c in nsd dnsperf dig python3 taskset; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || die "missing $c"
done
NSD=$(command -v nsd || echo /usr/sbin/nsd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

PIDS=()
WORK=$(mktemp -d /tmp/resolvd-soak.XXXXXX)
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then echo "soak.sh: files kept in $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "cargo build --release"
(cd "$ROOT" && cargo build --release)
RESOLVD="${CARGO_TARGET_DIR:-$ROOT/target}/release/resolvd"
cd "$WORK"

# ---------------------------------------------------------------- world
cat >root.zone <<EOF
\$ORIGIN .
\$TTL 86400
@ SOA a.root-servers.test. hostmaster.test. 1 3600 600 86400 3600
@ NS a.root-servers.test.
a.root-servers.test. A $NET.1
test. NS ns1.test.
ns1.test. A $NET.2
EOF
cat >test.zone <<EOF
\$ORIGIN test.
\$TTL 86400
@ SOA ns1 hostmaster 1 3600 600 86400 3600
@ NS ns1
ns1 A $NET.2
soak NS ns1.soak
ns1.soak A $NET.3
dead NS ns1.dead
ns1.dead A $NET.9
EOF
{
  printf '$ORIGIN soak.test.\n$TTL 86400\n@ SOA ns1 hostmaster 1 3600 600 86400 3600\n@ NS ns1\nns1 A %s.3\n' "$NET"
  awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++) printf "c%d A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
} >soak.zone
cat >root.hints <<EOF
.                     3600000  NS  a.root-servers.test.
a.root-servers.test.  3600000  A   $NET.1
EOF
# The mix: per 10 queries 6 cold names, 2 NXDOMAIN, 2 behind the dead server.
awk -v n="$NAMES" 'BEGIN { for (i = 1000; i < n; i++) {
    printf "c%d.soak.test A\n", i
    if (i % 5 == 0) printf "nx%d.soak.test A\n", i
    if (i % 5 == 1) printf "d%d.dead.test A\n", i } }' >mix.txt
awk 'BEGIN { for (i = 0; i < 1000; i++) printf "c%d.soak.test A\n", i }' >hot.txt

start_nsd() { # N ZONE FILE
  cat >"nsd$1.conf" <<EOF
server:
  ip-address: $NET.$1
  port: 53
  server-count: 1
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$WORK"
  database: ""
  pidfile: "$WORK/nsd$1.pid"
  xfrdfile: "$WORK/xfrd$1.state"
  zonelistfile: "$WORK/zone$1.list"
  logfile: "$WORK/nsd$1.log"
  verbosity: 0
remote-control:
  control-enable: no
zone:
  name: "$2"
  zonefile: "$3"
EOF
  taskset -c 1 "$NSD" -d -c "$WORK/nsd$1.conf" >"nsd$1.out" 2>&1 &
  PIDS+=($!)
}
wait_dns() { # ADDR PORT NAME TYPE
  for _ in $(seq 1 100); do
    dig @"$1" -p "$2" +tries=1 +time=1 +norec "$3" "$4" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "no answer from $1 port $2"
}
log "starting NSD on $NET.1-3"
start_nsd 1 . root.zone
start_nsd 2 test. test.zone
start_nsd 3 soak.test. soak.zone
wait_dns "$NET.1" 53 . SOA
wait_dns "$NET.2" 53 test. SOA
wait_dns "$NET.3" 53 soak.test. SOA

cat >resolvd.toml <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
threads = 1
tcp_max_connections = $((IDLE + 500))
tcp_idle_timeout = "$((DUR + 60))s"
[resolver]
root_hints = "$WORK/root.hints"
query_loopback = true
special_use_exclude = ["test."]
[dnssec]
validation = false
[cache]
max_size = "${MAX_SIZE_MIB}MiB"
[log]
level = "warn"
[control]
socket = "$WORK/resolvd.sock"
EOF
log "starting resolvd on port $PORT"
taskset -c 0 "$RESOLVD" --config resolvd.toml >resolvd.log 2>&1 &
RPID=$!
PIDS+=("$RPID")
wait_dns 127.0.0.1 "$PORT" c0.soak.test A
fds() { find "/proc/$RPID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$RPID/status"; }
taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d hot.txt -n 1 >warm.out 2>&1
FDS_BEFORE=$(fds)

# ---------------------------------------------------------------- hostile company
cat >junk.py <<'EOF'
import os, random, socket, sys, time
port, pps, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, start = 0, time.monotonic()
while time.monotonic() - start < secs:
    for _ in range(pps // 100):
        n = random.choice([0, 1, 5, 11, 12, 13, 30, 300, 1400])
        pkt = os.urandom(n)
        if n >= 12 and random.random() < 0.5:
            # A header that claims a query, then garbage.
            pkt = pkt[:2] + b"\x01\x00\x00\x01" + pkt[6:]
        s.sendto(pkt, ("127.0.0.1", port))
        sent += 1
    time.sleep(0.01)
print(sent)
EOF
cat >idle.py <<'EOF'
import socket, sys, time
port, n, secs = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
conns = []
for _ in range(n):
    try:
        conns.append(socket.create_connection(("127.0.0.1", port), timeout=5))
    except OSError:
        break
print(len(conns), flush=True)
time.sleep(secs)
alive = 0
for c in conns:
    # Still open: a read would block (EAGAIN), not return EOF.
    c.setblocking(False)
    try:
        alive += 0 if c.recv(1) == b"" else 1
    except BlockingIOError:
        alive += 1
    c.close()
print(alive)
EOF
log "soak: ${DUR}s of mix + hot at ${HOT_QPS}/s + junk at ${JUNK_PPS}/s + $IDLE idle TCP connections"
taskset -c 1 python3 idle.py "$PORT" "$IDLE" "$DUR" >idle.out 2>&1 &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
taskset -c 1 python3 junk.py "$PORT" "$JUNK_PPS" "$DUR" >junk.out 2>&1 &
JUNK_PID=$!
PIDS+=("$JUNK_PID")
taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d hot.txt -l "$DUR" -c 4 -Q "$HOT_QPS" >hot.out 2>&1 &
HOT_PID=$!
taskset -c 1 dnsperf -s 127.0.0.1 -p "$PORT" -d mix.txt -l "$DUR" -c 10 -q 500 -t 2 >mix.out 2>&1 &
MIX_PID=$!
PEAK=0
for ((t = 10; t <= DUR; t += 10)); do
  sleep 10
  kill -0 "$RPID" 2>/dev/null || die "resolvd died (see $WORK/resolvd.log)"
  r=$(rss_mib)
  echo "t=${t}s rss=${r} MiB"
  PEAK=$(awk -v a="$PEAK" -v b="$r" 'BEGIN { print (b > a ? b : a) }')
done
wait "$HOT_PID" || die "hot dnsperf failed (see $WORK/hot.out)"
wait "$MIX_PID" || die "mix dnsperf failed (see $WORK/mix.out)"
wait "$JUNK_PID" || true
wait "$IDLE_PID" || true
kill -0 "$RPID" 2>/dev/null || die "resolvd died (see $WORK/resolvd.log)"
sleep 3
FDS_AFTER=$(fds)
"$RESOLVD" control --socket "$WORK/resolvd.sock" stats >stats.txt 2>&1 || true

summary() { # FILE LABEL
  awk -v label="$2" -v d="$DUR" '
    /Queries sent:/ { s = $3 } /Queries completed:/ { c = $3 } /Queries lost:/ { l = $3 }
    /Queries per second:/ { q = $4 }
    END { printf "%-6s sent %d, answered %d, lost %d, %.0f answered q/s\n", label, s, c, l, q }' "$1"
}
echo
echo "soak: ${DUR}s, resolvd $(git -C "$ROOT" rev-parse --short HEAD), one worker on CPU 0"
summary hot.out hot
summary mix.out mix
echo "resolvd counters: $(grep -E '^(queries|servfails|malformed|dropped|upstream_queries|cache_entries) ' stats.txt | paste -sd' ' | sed 's/ \([a-z_]*\) /, \1 /g')"
echo "junk datagrams sent: $(head -1 junk.out)"
echo "idle TCP connections opened / still open at the end: $(paste -sd/ idle.out)"
echo "peak RSS ${PEAK} MiB (limit: max_size ${MAX_SIZE_MIB} MiB + 64 MiB = $((MAX_SIZE_MIB + 64)) MiB)"
echo "open fds before ${FDS_BEFORE}, after ${FDS_AFTER}"
lost_hot=$(awk '/Queries lost:/ { print $3; exit }' hot.out)
fail=0
[ "${lost_hot:-1}" = 0 ] || { echo "FAIL: lost queries on the hot share"; fail=1; }
awk -v p="$PEAK" -v m="$((MAX_SIZE_MIB + 64))" 'BEGIN { exit !(p <= m) }' || { echo "FAIL: RSS above max_size + 64 MiB"; fail=1; }
[ $((FDS_AFTER - FDS_BEFORE)) -le 2 ] || { echo "FAIL: file descriptors leaked"; fail=1; }
[ $fail = 0 ] && echo "PASS: no crash, nothing lost on the hot share, memory bounded, no descriptor leak"
exit $fail
