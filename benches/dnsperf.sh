#!/usr/bin/env bash
# resolvd vs Unbound under dnsperf, on loopback, offline.
#
#   benches/dnsperf.sh            # full run: 10 s phases, 100,000 names
#   QUICK=1 benches/dnsperf.sh    # 2 s phases, 10,000 names (try-out)
#
# Needs root (NSD binds port 53 on 127.77.0.1-3), and nsd, unbound, dnsperf,
# dig and taskset. Builds `cargo build --release` once.
#
# World: three NSD instances, each serving one zone from its own address:
#   127.77.0.1  "."            (root, a.root-servers.test.)
#   127.77.0.2  "test."        (ns1.test.)
#   127.77.0.3  "bench.test."  (ns1.bench.test.) with h0..h{N-1} A records
# Both resolvers get root hints pointing at 127.77.0.1 and run with ONE
# worker thread pinned to CPU 0; dnsperf and NSD run on CPU 1.
#
# Per resolver, in order:
#   warm   the 1,000 hot names once (dnsperf -n 1)
#   hot    dnsperf -l DUR -c 10 over the hot names (all cache hits);
#          server CPU (utime+stime from /proc/PID/stat) / answered queries
#   cold   COLD never-asked names once (dnsperf -n 1): each one is resolved
#   load   the remaining names once; then resident bytes per cached name =
#          (VmRSS now - VmRSS before the first query) / NOERROR answers
#   tcp    dnsperf -m tcp over the hot names with -c 10 and -c 1000
#   dot    dnsperf -m dot, the same, over TLS (self-signed certificate)
#   doh    dnsperf -m doh (HTTP/2 GET /dns-query?dns=), the same
# Then HOT_ROUNDS rounds of hot runs of the floor, resolvd and Unbound back
# to back, all three up and warm (below).
#
# Then, when redis-server is installed (NO_L2=1 skips it), the shared
# cache: a redis-server on 127.0.0.1:REDIS_PORT (CPU 1) and fresh resolvd
# instances with [cache.redis] (CPU 0), one after another:
#   l2-cold   instance A, empty L1 and empty Redis: the COLD names once
#             (truly cold, each resolved; A writes them to Redis)
#   l2-warm   instance B, empty L1, Redis filled by A: the same names once
#             (every answer an L2 hit), q/s and latency next to l2-cold
#   l2-hit    instance C, the same, one query at a time (-c 1 -q 1): the
#             mean latency of an L2 hit, client and loopback included
# On loopback an authoritative server answers in microseconds, so "cold"
# there is cheaper than anywhere real. UPSTREAM_RTT_MS=N gives instance A
# a round-trip time of N ms to bench.test.'s server: A holds bench.test. as
# a stub zone ([[forward]] recursion = false, so A still asks it as an
# authoritative, RD=0) whose server is benches/delay_proxy.rs on
# $NET.9, relaying to NSD and holding each reply until N ms after its
# query came. Redis, the root and test. are not delayed; B and C never ask
# upstream. (The kernel here has no netem, or tc would do this.)
#
# Environment: QUICK=1; RESOLVD_PORT (53531), UNBOUND_PORT (53532); their
# DoT and DoH ports are PORT+10 and PORT+20; NO_TLS=1 skips dot and doh;
# BENCH_DUR, BENCH_NAMES, BENCH_COLD override the phase length and counts;
# PERF_PHASE=hot|cold|load|l2-warm records resolvd during that phase with
# `perf record -e cpu-clock -g` into PERF_OUT (/tmp/resolvd-PHASE.perf);
# HOT_QPS (-Q for hot and TCP runs, default 1000000); KEEP=1 keeps the
# temporary directory (configs, logs, raw dnsperf output); REDIS_PORT
# (56379); L2_ONLY=1 runs only the shared-cache part; RESOLVD_BIN uses that
# binary instead of building one (a debug build checks that the script
# works; its numbers mean nothing).
# SYSCALLS=1 also counts system calls per answered query for the floor,
# resolvd and Unbound: `strace -c -f` attached over a rate-limited hot run
# (SYS_QPS, default 50000, for SYS_DUR, default 5, seconds; needs strace).
# HOT_ROUNDS (5; 3 with QUICK) rounds of floor, resolvd and Unbound hot
# runs back to back at the end, with per-round ratios and their medians;
# 0 skips them. COLD_ROUNDS (5; 3 with QUICK) does the same for the cold
# phase, each server started afresh for each round; COLD_ONLY=1 runs only
# the cold rounds (with COMPARE_BIN: an A/B of the cold path; about 10 s a
# round in full mode, after the zones are generated and NSD is up).
# CALLGRIND=1 counts user-space instructions per cold query of resolvd and
# Unbound (and COMPARE_BIN's build) under valgrind (needs valgrind; under a
# minute): exact, where CPU time here is not. COLD_ONLY=1 COLD_ROUNDS=0
# CALLGRIND=1 runs only that.
# SIGNED=1 signs the three zones (ldns-signzone, ECDSA P-256, NSEC) and runs
# both resolvers validating from the test root's key (needs ldnsutils).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DUR=2 NAMES=10000 COLD=2000
else
  DUR=10 NAMES=100000 COLD=20000
fi
# Overrides, e.g. for repeated cold-path runs: DUR=1 COLD=40000 NAMES=60000.
DUR=${BENCH_DUR:-$DUR} NAMES=${BENCH_NAMES:-$NAMES} COLD=${BENCH_COLD:-$COLD}
HOT=1000
HOT_QPS=${HOT_QPS:-1000000}
HOT_ROUNDS=${HOT_ROUNDS:-$([ "$QUICK" = 1 ] && echo 3 || echo 5)}
COLD_ROUNDS=${COLD_ROUNDS:-$([ "$QUICK" = 1 ] && echo 3 || echo 5)}
if [ "${COLD_ONLY:-0}" = 1 ]; then HOT_ROUNDS=0 NO_L2=1; fi
RESOLVD_PORT=${RESOLVD_PORT:-53531}
UNBOUND_PORT=${UNBOUND_PORT:-53532}
NET=127.77.0
CLK_TCK=$(getconf CLK_TCK)

die() { echo "dnsperf.sh: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (NSD listens on port 53)"
for c in nsd unbound dnsperf dig taskset openssl; do
  command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || die "missing $c"
done
NSD=$(command -v nsd || echo /usr/sbin/nsd)
UNBOUND=$(command -v unbound || echo /usr/sbin/unbound)
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (server on CPU 0, load generator on CPU 1)"

# Everything we start, by PID; the trap kills exactly these.
PIDS=()
WORK=$(mktemp -d /tmp/resolvd-dnsperf.XXXXXX)
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 30); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "dnsperf.sh: files kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1000+ TCP connections need file descriptors (inherited by all children).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------- build
if [ -n "${RESOLVD_BIN:-}" ]; then
  RESOLVD=$RESOLVD_BIN
  CANNED=""
  DELAY_PROXY="$(dirname "$RESOLVD_BIN")/examples/delay_proxy"
else
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release && cargo build --release --example canned_responder --example delay_proxy)
  RESOLVD="${CARGO_TARGET_DIR:-$ROOT/target}/release/resolvd"
  CANNED="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/canned_responder"
  DELAY_PROXY="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/delay_proxy"
fi
[ -x "$RESOLVD" ] || die "no binary at $RESOLVD"

# ---------------------------------------------------------------- zones
log "generating zones ($NAMES names) in $WORK"
cd "$WORK"
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
a.root-servers A $NET.1
bench NS ns1.bench
ns1.bench A $NET.3
EOF
{
  printf '$ORIGIN bench.test.\n$TTL 86400\n'
  printf '@ SOA ns1 hostmaster 1 3600 600 86400 3600\n@ NS ns1\nns1 A %s.3\n' "$NET"
  awk -v n="$NAMES" 'BEGIN { for (i = 0; i < n; i++)
    printf "h%d A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256 }'
} >bench.zone
cat >root.hints <<EOF
.                     3600000  NS  a.root-servers.test.
a.root-servers.test.  3600000  A   $NET.1
EOF
# dnsperf inputs: hot, cold (never asked before the cold run), the rest.
awk -v n="$HOT" 'BEGIN { for (i = 0; i < n; i++) printf "h%d.bench.test A\n", i }' >hot.txt
awk -v a="$HOT" -v n="$COLD" 'BEGIN { for (i = a; i < a + n; i++) printf "h%d.bench.test A\n", i }' >cold.txt
awk -v a="$((HOT + COLD))" -v n="$NAMES" 'BEGIN { for (i = a; i < n; i++) printf "h%d.bench.test A\n", i }' >rest.txt

# SIGNED=1: sign bottom-up, each parent carrying its child's DS; the root
# KSK's DS is both resolvers' only trust anchor.
SIGNED=${SIGNED:-0}
ZFILE_ROOT=root.zone ZFILE_TEST=test.zone ZFILE_BENCH=bench.zone
if [ "$SIGNED" = 1 ]; then
  command -v ldns-signzone >/dev/null 2>&1 || die "SIGNED=1 needs ldns-signzone (ldnsutils)"
  sign_zone() { # ORIGIN FILE -> FILE.signed, prints the KSK's DS
    local ksk zsk
    ksk=$(ldns-keygen -a ECDSAP256SHA256 -k "$1")
    zsk=$(ldns-keygen -a ECDSAP256SHA256 "$1")
    ldns-signzone -o "$1" "$2" "$zsk" "$ksk" >&2
    cat "$ksk.ds"
  }
  log "signing bench.test. ($NAMES names), test. and ."
  sign_zone bench.test. bench.zone >>test.zone
  sign_zone test. test.zone >>root.zone
  sign_zone . root.zone >root.anchor
  ZFILE_ROOT=root.zone.signed ZFILE_TEST=test.zone.signed ZFILE_BENCH=bench.zone.signed
fi

# ---------------------------------------------------------------- helpers
# wait_dns ADDR PORT [CLASS TYPE NAME]: until the server answers anything.
wait_dns() {
  local addr=$1 port=$2 what=${3:-CH TXT version.bind}
  for _ in $(seq 1 100); do
    # shellcheck disable=SC2086
    if dig @"$addr" -p "$port" +tries=1 +time=1 +norec $what >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  die "no answer from $addr port $port"
}

start_nsd() { # N ZONE FILE
  local n=$1 zone=$2 file=$3
  cat >"nsd$n.conf" <<EOF
server:
  ip-address: $NET.$n
  port: 53
  server-count: 1
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "$WORK"
  database: ""
  pidfile: "$WORK/nsd$n.pid"
  xfrdfile: "$WORK/xfrd$n.state"
  zonelistfile: "$WORK/zone$n.list"
  logfile: "$WORK/nsd$n.log"
  verbosity: 0
  hide-version: yes
  refuse-any: yes
remote-control:
  control-enable: no
zone:
  name: "$zone"
  zonefile: "$file"
EOF
  taskset -c 1 "$NSD" -d -c "$WORK/nsd$n.conf" >"nsd$n.out" 2>&1 &
  PIDS+=($!)
}

# stat_cpu PID: utime+stime of the whole process, in clock ticks.
stat_cpu() {
  local rest
  rest=$(sed 's/^.*) //' "/proc/$1/stat")
  # After "pid (comm) ": field 3 is state, so utime (14) and stime (15)
  # are the 12th and 13th words here.
  awk '{ print $12 + $13 }' <<<"$rest"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# perf_run TAG PID ARGS...: runs dnsperf on CPU 1 and prints
# "sent completed lost qps avg_latency_s noerror cpu_ticks".
perf_run() {
  local tag=$1 pid=$2
  shift 2
  local c0 c1
  c0=$(stat_cpu "$pid")
  taskset -c 1 dnsperf -s 127.0.0.1 "$@" >"$tag.out" 2>&1 || {
    cat "$tag.out" >&2
    die "dnsperf failed ($tag)"
  }
  c1=$(stat_cpu "$pid")
  awk -v cpu="$((c1 - c0))" '
    /Queries sent:/        { sent = $3 }
    /Queries completed:/   { done = $3 }
    /Queries lost:/        { lost = $3 }
    /Queries per second:/  { qps = $4 }
    /Average Latency/ && lat == "" { lat = $4 }  # TCP adds a connect latency line
    /Response codes:/      { for (i = 3; i <= NF; i++) if ($i == "NOERROR") { v = $(i + 1); gsub(/,/, "", v); ok = v } }
    END { printf "%d %d %d %.0f %s %d %d\n", sent, done, lost, qps, (lat == "" ? "0" : lat), ok, cpu }
  ' "$tag.out"
}

# syscall_run TAG PID PORT: with SYSCALLS=1, `strace -c -f` over a
# rate-limited hot run (strace slows the server, so the rate is fixed);
# sets R[TAG.sys_q] (system calls per answered query) and R[TAG.sys_top]
# (the five most frequent, per query, with their error counts).
syscall_run() {
  [ "${SYSCALLS:-0}" = 1 ] || return 0
  local tag=$1 pid=$2 port=$3 spid line sent answered lost qps lat ok cpu
  command -v strace >/dev/null || die "SYSCALLS=1 needs strace (apt-get install strace)"
  log "$tag: system calls, ${SYS_QPS:-50000} q/s for ${SYS_DUR:-5}s under strace"
  strace -c -f -qq -o "$tag-sys.strace" -p "$pid" 2>/dev/null &
  spid=$!
  sleep 1
  line=$(perf_run "$tag-sys" "$pid" -p "$port" -d hot.txt -l "${SYS_DUR:-5}" -c 10 -Q "${SYS_QPS:-50000}")
  read -r sent answered lost qps lat ok cpu <<<"$line"
  kill -INT "$spid"
  wait "$spid" || true
  R[$tag.sys_q]=$(sys_summary total "$answered" "$tag-sys.strace")
  R[$tag.sys_top]=$(sys_summary top "$answered" "$tag-sys.strace")
}

# sys_summary total|top ANSWERED FILE: from `strace -c` output.
sys_summary() {
  awk -v what="$1" -v n="$2" '
    $1 ~ /^[0-9.]+$/ && NF >= 5 {
      if ($NF == "total") { total = $4; next }
      calls[$NF] = $4; errs[$NF] = (NF == 6 ? $5 : 0)
    }
    END {
      if (n <= 0) { print "n/a"; exit }
      if (what == "total") { printf "%.2f", total / n; exit }
      for (k = 0; k < 5; k++) {
        best = ""
        for (s in calls) if (best == "" || calls[s] > calls[best]) best = s
        if (best == "") break
        printf "%s%s %.2f/q", (k ? ", " : ""), best, calls[best] / n
        if (errs[best] > 0) printf " (%.2f/q errors)", errs[best] / n
        delete calls[best]
      }
    }' "$3"
}

# cpu_us TICKS COMPLETED: server CPU microseconds per answered query.
cpu_us() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "n/a" }'; }

# profile_start NAME PHASE PID / profile_stop: `perf record` of resolvd
# during the phase named by PERF_PHASE, into PERF_OUT.
PROF=""
profile_start() {
  if [ "${PERF_PHASE:-}" = "$2" ] && [ "$1" = resolvd ]; then
    perf record -e cpu-clock ${PERF_CALLGRAPH:--g} -o "${PERF_OUT:-/tmp/resolvd-$2.perf}" -p "$3" 2>/dev/null &
    PROF=$!
  fi
}
profile_stop() {
  if [ -n "$PROF" ]; then
    kill -INT "$PROF" 2>/dev/null || true
    wait "$PROF" 2>/dev/null || true
    PROF=""
  fi
}

declare -A R # results: R[resolver.metric]
declare -A ROUND # hot rounds: ROUND[server.round] = CPU us/query
declare -A CG # instructions per cold query, by server (CALLGRIND=1)
declare -A CROUND # cold rounds: CROUND[server.round] = CPU us/query, CROUND[server.qps.round] = q/s

# bench NAME PID PORT: the whole sequence against one running resolver.
bench() {
  local name=$1 pid=$2 port=$3 line sent answered lost qps lat ok cpu rss0 rss1 cached=0
  [ "${COLD_ONLY:-0}" = 1 ] && return 0
  sleep 0.5
  rss0=$(rss_kb "$pid")
  log "$name: warm $HOT names"
  line=$(perf_run "$name-warm" "$pid" -p "$port" -d hot.txt -n 1 -l 60 -c 10)
  read -r sent answered lost qps lat ok cpu <<<"$line"
  [ "$ok" -ge $((HOT * 99 / 100)) ] || die "$name: only $ok of $HOT hot names resolved (see $WORK/$name-warm.out)"
  cached=$((cached + ok))

  log "$name: hot, ${DUR}s"
  profile_start "$name" hot "$pid"
  line=$(perf_run "$name-hot" "$pid" -p "$port" -d hot.txt -l "$DUR" -c 10 -Q "$HOT_QPS")
  profile_stop
  read -r sent answered lost qps lat ok cpu <<<"$line"
  R[$name.hot_qps]=$qps R[$name.hot_lat]=$(awk -v l="$lat" 'BEGIN { printf "%.0f", l * 1e6 }')
  R[$name.hot_lost]=$lost R[$name.hot_cpu]=$(cpu_us "$cpu" "$answered")
  # Below ~100%, dnsperf (not the server) set the pace and q/s says little.
  R[$name.hot_busy]=$(awk -v t="$cpu" -v hz="$CLK_TCK" -v d="$DUR" 'BEGIN { printf "%.0f", t * 100 / hz / d }')
  syscall_run "$name" "$pid" "$port"

  log "$name: cold, $COLD new names"
  profile_start "$name" cold "$pid"
  line=$(perf_run "$name-cold" "$pid" -p "$port" -d cold.txt -n 1 -l 120 -c 10)
  profile_stop
  read -r sent answered lost qps lat ok cpu <<<"$line"
  R[$name.cold_qps]=$qps R[$name.cold_lost]=$lost R[$name.cold_cpu]=$(cpu_us "$cpu" "$answered")
  cached=$((cached + ok))

  log "$name: loading the other $((NAMES - HOT - COLD)) names"
  profile_start "$name" load "$pid"
  line=$(perf_run "$name-load" "$pid" -p "$port" -d rest.txt -n 1 -l 300 -c 10)
  profile_stop
  read -r sent answered lost qps lat ok cpu <<<"$line"
  R[$name.load_qps]=$qps R[$name.load_cpu]=$(cpu_us "$cpu" "$answered")
  cached=$((cached + ok))
  sleep 1
  rss1=$(rss_kb "$pid")
  R[$name.cached]=$cached
  R[$name.rss_mb]=$(awk -v k="$rss1" 'BEGIN { printf "%.1f", k / 1024 }')
  R[$name.bytes_name]=$(awk -v a="$rss0" -v b="$rss1" -v n="$cached" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')

  local c
  for c in 10 1000; do
    log "$name: tcp, $c connections, ${DUR}s"
    line=$(perf_run "$name-tcp$c" "$pid" -p "$port" -m tcp -d hot.txt -l "$DUR" -c "$c" -q "$((c > 100 ? c : 100))" -Q "$HOT_QPS")
    read -r sent answered lost qps lat ok cpu <<<"$line"
    R[$name.tcp${c}_qps]=$qps R[$name.tcp${c}_cpu]=$(cpu_us "$cpu" "$answered") R[$name.tcp${c}_lost]=$lost
  done

  [ "${NO_TLS:-0}" = 1 ] && return 0
  local mode mport extra
  for mode in dot doh; do
    if [ "$mode" = dot ]; then mport=$((port + 10)); else mport=$((port + 20)); fi
    extra=()
    # GET, not POST: dnsperf writes a POST's HEADERS and DATA frames with
    # separate SSL_write calls on a socket without TCP_NODELAY, so Nagle
    # holds the DATA until the server's delayed ACK (~40 ms) and both
    # servers measure at ~45 ms per query. A GET is one HEADERS frame.
    [ "$mode" = doh ] && extra=(-O "doh-uri=https://127.0.0.1:$mport/dns-query" -O doh-method=GET)
    for c in 10 1000; do
      log "$name: $mode, $c connections, ${DUR}s"
      line=$(perf_run "$name-$mode$c" "$pid" -p "$mport" -m "$mode" "${extra[@]}" -d hot.txt -l "$DUR" -c "$c" -q "$((c > 100 ? c : 100))" -Q "$HOT_QPS")
      read -r sent answered lost qps lat ok cpu <<<"$line"
      R[$name.$mode${c}_qps]=$qps R[$name.$mode${c}_cpu]=$(cpu_us "$cpu" "$answered") R[$name.$mode${c}_lost]=$lost
    done
  done
}

# A self-signed certificate for both resolvers' DoT and DoH listeners
# (dnsperf does not verify it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

# other_config: checks COMPARE_BIN and writes other.toml, resolvd.toml
# moved to port RESOLVD_PORT+50 without the TLS listeners, for the "other"
# column of the hot and cold rounds and of CALLGRIND=1.
other_config() {
  [ -x "$COMPARE_BIN" ] || die "COMPARE_BIN: no binary at $COMPARE_BIN"
  [ -f other.toml ] || sed -e "s/127.0.0.1:$RESOLVD_PORT\"/127.0.0.1:$((RESOLVD_PORT + 50))\"/" \
    -e '/^tls_listen\|^https_listen/d' -e "s#resolvd.sock#other.sock#" resolvd.toml >other.toml
}

stop() { # PID
  local pid=$1
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- NSD
log "starting NSD on $NET.1-3 port 53"
start_nsd 1 . "$ZFILE_ROOT"
start_nsd 2 test. "$ZFILE_TEST"
start_nsd 3 bench.test. "$ZFILE_BENCH"
wait_dns "$NET.1" 53 ". SOA"
wait_dns "$NET.2" 53 "test. SOA"
wait_dns "$NET.3" 53 "bench.test. SOA"
dig @"$NET.3" +norec +short "h$((NAMES - 1)).bench.test" A | grep -q . || die "bench.test zone not loaded (see $WORK/nsd3.log)"

# ---------------------------------------------------------------- L2 (Redis)
REDIS_PORT=${REDIS_PORT:-56379}
declare -A L # shared-cache results
# stat_of SOCKET KEY: one counter from `resolvd control stats`.
stat_of() { { "$RESOLVD" control --socket "$1" stats 2>/dev/null || true; } | awk -v k="$2" '$1 == k { print $2 }'; }

# l2_instance TAG PORT [EXTRA]: starts resolvd with [cache.redis] on PORT
# (CPU 0), EXTRA appended to its config; sets LPID.
l2_instance() {
  local tag=$1 port=$2 extra=${3:-}
  cat >"$tag.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
threads = 1
[resolver]
root_hints = "$WORK/root.hints"
query_loopback = true
upstream_port = 53
special_use_exclude = ["test."]
[cache]
max_size = "1GiB"
[cache.redis]
url = "redis://127.0.0.1:$REDIS_PORT/0"
key_prefix = "bench:"
[dnssec]
$(if [ "$SIGNED" = 1 ]; then echo "trust_anchor_files = [\"$WORK/root.anchor\"]"; else echo "validation = false"; fi)
[log]
level = "warn"
[control]
socket = "$WORK/$tag.sock"
$extra
EOF
  taskset -c 0 "$RESOLVD" --config "$WORK/$tag.toml" --threads 1 >"$tag.log" 2>&1 &
  LPID=$!
  PIDS+=("$LPID")
  wait_dns 127.0.0.1 "$port"
  sleep 0.5
}

bench_l2() {
  local line sent answered lost qps lat ok cpu written
  command -v redis-server >/dev/null 2>&1 || { log "no redis-server: skipping the shared-cache runs"; return 0; }
  log "starting redis-server on 127.0.0.1:$REDIS_PORT"
  mkdir -p "$WORK/redis"
  taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" \
    --save "" --appendonly no --daemonize no --loglevel warning >redis.log 2>&1 &
  local rpid=$!
  PIDS+=("$rpid")
  for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break
    sleep 0.1
  done

  local stub=""
  if [ -n "${UPSTREAM_RTT_MS:-}" ]; then
    [ -x "$DELAY_PROXY" ] || die "UPSTREAM_RTT_MS needs $DELAY_PROXY (cargo build --release --example delay_proxy)"
    taskset -c 1 "$DELAY_PROXY" "$NET.9:53" "$NET.3:53" "$UPSTREAM_RTT_MS" >delay_proxy.log 2>&1 &
    PIDS+=("$!")
    wait_dns "$NET.9" 53
    stub=$(printf '[[forward]]\nzone = "bench.test."\nservers = ["%s.9"]\nrecursion = false' "$NET")
  fi
  l2_instance l2a $((RESOLVD_PORT + 40)) "$stub"
  log "l2-cold: $COLD names through an empty L1 and an empty Redis${UPSTREAM_RTT_MS:+, ${UPSTREAM_RTT_MS} ms RTT to the bench.test. server}"
  line=$(perf_run l2-cold "$LPID" -p $((RESOLVD_PORT + 40)) -d cold.txt -n 1 -l 120 -c 10)
  read -r sent answered lost qps lat ok cpu <<<"$line"
  L[cold_qps]=$qps L[cold_lat]=$(awk -v l="$lat" 'BEGIN { printf "%.0f", l * 1e6 }') L[cold_lost]=$lost
  # Wait (bounded) for A's background writes to reach Redis.
  for _ in $(seq 1 100); do
    written=$(stat_of "$WORK/l2a.sock" l2_writes)
    [ "${written:-0}" -ge "$ok" ] && break
    sleep 0.1
  done
  L[written]=${written:-0}
  stop "$LPID"

  l2_instance l2b $((RESOLVD_PORT + 41))
  log "l2-warm: the same names through an empty L1, Redis filled"
  profile_start resolvd l2-warm "$LPID"
  line=$(perf_run l2-warm "$LPID" -p $((RESOLVD_PORT + 41)) -d cold.txt -n 1 -l 120 -c 10)
  profile_stop
  read -r sent answered lost qps lat ok cpu <<<"$line"
  L[warm_qps]=$qps L[warm_lat]=$(awk -v l="$lat" 'BEGIN { printf "%.0f", l * 1e6 }') L[warm_lost]=$lost
  L[warm_cpu]=$(cpu_us "$cpu" "$answered")
  L[warm_hits]=$(stat_of "$WORK/l2b.sock" l2_hits)
  L[warm_upstream]=$(stat_of "$WORK/l2b.sock" upstream_queries)
  stop "$LPID"

  l2_instance l2c $((RESOLVD_PORT + 42))
  log "l2-hit: one query at a time, every answer from Redis"
  line=$(perf_run l2-hit "$LPID" -p $((RESOLVD_PORT + 42)) -d cold.txt -n 1 -l 120 -c 1 -q 1)
  read -r sent answered lost qps lat ok cpu <<<"$line"
  L[hit_lat]=$(awk -v l="$lat" 'BEGIN { printf "%.0f", l * 1e6 }')
  L[hit_hits]=$(stat_of "$WORK/l2c.sock" l2_hits)
  stop "$LPID"
  stop "$rpid"
}

# (Skipped with RESOLVD_BIN, which builds nothing.)
if [ "${L2_ONLY:-0}" != 1 ] && [ "${COLD_ONLY:-0}" != 1 ] && [ -n "$CANNED" ]; then
# ---------------------------------------------------------------- floor
# The canned responder (benches/canned_responder.rs): what a UDP answer
# costs with no DNS work at all, on the same CPU and the same dnsperf run.
FLOOR_PORT=$((RESOLVD_PORT + 30))
log "floor: canned responder on port $FLOOR_PORT, hot, ${DUR}s"
taskset -c 0 "$CANNED" "127.0.0.1:$FLOOR_PORT" >canned.log 2>&1 &
FPID=$!
PIDS+=("$FPID")
wait_dns 127.0.0.1 "$FLOOR_PORT"
line=$(perf_run floor-hot "$FPID" -p "$FLOOR_PORT" -d hot.txt -l "$DUR" -c 10 -Q "$HOT_QPS")
read -r sent answered lost qps lat ok cpu <<<"$line"
R[floor.hot_qps]=$qps R[floor.hot_lost]=$lost R[floor.hot_cpu]=$(cpu_us "$cpu" "$answered")
syscall_run floor "$FPID" "$FLOOR_PORT"
stop "$FPID"
fi


# ---------------------------------------------------------------- resolvd
if [ "${L2_ONLY:-0}" != 1 ]; then
cat >resolvd.toml <<EOF
[server]
listen = ["127.0.0.1:$RESOLVD_PORT"]
threads = 1
tcp_max_connections = 2000
tls_listen = ["127.0.0.1:$((RESOLVD_PORT + 10))"]
https_listen = ["127.0.0.1:$((RESOLVD_PORT + 20))"]
[tls]
cert = "$WORK/cert.pem"
key = "$WORK/key.pem"
[resolver]
root_hints = "$WORK/root.hints"
query_loopback = true
upstream_port = 53
special_use_exclude = ["test."]
[dnssec]
# Without SIGNED=1 the bench hierarchy is unsigned and Unbound runs
# without its validator; with it both validate from the same anchor.
$(if [ "$SIGNED" = 1 ]; then echo "trust_anchor_files = [\"$WORK/root.anchor\"]"; else echo "validation = false"; fi)
[cache]
max_size = "1GiB"
[log]
level = "warn"
[control]
socket = "$WORK/resolvd.sock"
EOF
log "starting resolvd on port $RESOLVD_PORT"
taskset -c 0 "$RESOLVD" --config "$WORK/resolvd.toml" --threads 1 >resolvd.log 2>&1 &
RPID=$!
PIDS+=("$RPID")
wait_dns 127.0.0.1 "$RESOLVD_PORT"
bench resolvd "$RPID" "$RESOLVD_PORT"
"$RESOLVD" control --socket "$WORK/resolvd.sock" stats >resolvd.stats 2>&1 || true
# Still up, idle and warm, for the hot rounds after Unbound's run.

# ---------------------------------------------------------------- Unbound
cat >unbound.conf <<EOF
server:
  interface: 127.0.0.1
  interface: 127.0.0.1@$((UNBOUND_PORT + 10))
  interface: 127.0.0.1@$((UNBOUND_PORT + 20))
  port: $UNBOUND_PORT
  # Debian's Unbound is built with libnghttp2: DoT and DoH both work.
  tls-port: $((UNBOUND_PORT + 10))
  https-port: $((UNBOUND_PORT + 20))
  tls-service-key: "$WORK/key.pem"
  tls-service-pem: "$WORK/cert.pem"
  do-ip6: no
  num-threads: 1
$(if [ "$SIGNED" = 1 ]; then printf '  module-config: "validator iterator"\n  trust-anchor-file: "%s/root.anchor"\n' "$WORK"; else echo '  module-config: "iterator"'; fi)
  username: ""
  chroot: ""
  directory: "$WORK"
  pidfile: "$WORK/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 0
  do-not-query-localhost: no
  root-hints: "$WORK/root.hints"
  msg-cache-size: 512m
  rrset-cache-size: 1g
  so-rcvbuf: 4m
  so-sndbuf: 4m
  incoming-num-tcp: 2000
  num-queries-per-thread: 4096
  access-control: 127.0.0.0/8 allow
  # Unbound answers RFC 6761 "test." locally (NXDOMAIN) unless told not to.
  local-zone: "test." nodefault
remote-control:
  control-enable: no
EOF
log "starting Unbound on port $UNBOUND_PORT"
taskset -c 0 "$UNBOUND" -d -c "$WORK/unbound.conf" >unbound.log 2>&1 &
UPID=$!
PIDS+=("$UPID")
wait_dns 127.0.0.1 "$UNBOUND_PORT"
bench unbound "$UPID" "$UNBOUND_PORT"

# ------------------------------------------------------------ hot rounds
# The hot figures above come from runs minutes apart, and this VM's speed
# drifts between them by more than the differences being measured. Here
# the three servers are all up and warm (resolvd and Unbound idle on CPU 0
# while another is measured), and HOT_ROUNDS rounds each measure the floor,
# resolvd and Unbound back to back, DUR seconds each: a round's ratios
# compare like with like, and their medians are the figures to hold
# against issue 14's targets.
# COMPARE_BIN=PATH adds a second resolvd binary (another build, same
# config on port RESOLVD_PORT+50) to every round, as column "other": an A/B
# of two builds under the same conditions.
ROUND_WHO="floor resolvd unbound"
if [ "$HOT_ROUNDS" -gt 0 ] && [ -n "$CANNED" ]; then
  taskset -c 0 "$CANNED" "127.0.0.1:$FLOOR_PORT" >canned2.log 2>&1 &
  FPID=$!
  PIDS+=("$FPID")
  wait_dns 127.0.0.1 "$FLOOR_PORT"
  if [ -n "${COMPARE_BIN:-}" ]; then
    other_config
    taskset -c 0 "$COMPARE_BIN" --config "$WORK/other.toml" --threads 1 >other.log 2>&1 &
    OPID=$!
    PIDS+=("$OPID")
    wait_dns 127.0.0.1 $((RESOLVD_PORT + 50))
    perf_run other-warm "$OPID" -p $((RESOLVD_PORT + 50)) -d hot.txt -n 1 -l 60 -c 10 >/dev/null
    ROUND_WHO="floor resolvd other unbound"
  fi
  for r in $(seq 1 "$HOT_ROUNDS"); do
    log "hot round $r of $HOT_ROUNDS: ${ROUND_WHO// /, }, ${DUR}s each"
    for who in $ROUND_WHO; do
      case $who in
        floor) pid=$FPID port=$FLOOR_PORT ;;
        resolvd) pid=$RPID port=$RESOLVD_PORT ;;
        other) pid=$OPID port=$((RESOLVD_PORT + 50)) ;;
        unbound) pid=$UPID port=$UNBOUND_PORT ;;
      esac
      line=$(perf_run "round$r-$who" "$pid" -p "$port" -d hot.txt -l "$DUR" -c 10 -Q "$HOT_QPS")
      read -r sent answered lost qps lat ok cpu <<<"$line"
      ROUND[$who.$r]=$(cpu_us "$cpu" "$answered")
    done
  done
  stop "$FPID"
  if [ -n "${OPID:-}" ]; then stop "$OPID"; fi
fi
stop "$RPID"
stop "$UPID"

# ----------------------------------------------------------- cold rounds
# Like the hot rounds, for the cold path: each round starts a fresh
# resolvd (and COMPARE_BIN's build) and a fresh Unbound one after another,
# primes each with one hot name (so the root, test. and bench.test.
# delegations are known, as in the single cold phase above), then sends it
# the COLD names once. Every round resolves the same names, each from an
# empty cache, back to back with the other servers.
if [ "$COLD_ROUNDS" -gt 0 ]; then
  COLD_WHO="resolvd unbound"
  if [ -n "${COMPARE_BIN:-}" ]; then
    other_config
    COLD_WHO="resolvd other unbound"
  fi
  for r in $(seq 1 "$COLD_ROUNDS"); do
    log "cold round $r of $COLD_ROUNDS: ${COLD_WHO// /, }, $COLD names each from a fresh start"
    for who in $COLD_WHO; do
      case $who in
        resolvd) taskset -c 0 "$RESOLVD" --config "$WORK/resolvd.toml" --threads 1 >"cold$r-$who.log" 2>&1 & port=$RESOLVD_PORT ;;
        other) taskset -c 0 "$COMPARE_BIN" --config "$WORK/other.toml" --threads 1 >"cold$r-$who.log" 2>&1 & port=$((RESOLVD_PORT + 50)) ;;
        unbound) taskset -c 0 "$UNBOUND" -d -c "$WORK/unbound.conf" >"cold$r-$who.log" 2>&1 & port=$UNBOUND_PORT ;;
      esac
      pid=$!
      PIDS+=("$pid")
      wait_dns 127.0.0.1 "$port"
      dig @127.0.0.1 -p "$port" +tries=1 +time=2 h0.bench.test A >/dev/null || die "$who: no answer for h0.bench.test"
      sleep 0.3
      line=$(perf_run "cold$r-$who" "$pid" -p "$port" -d cold.txt -n 1 -l 120 -c 10)
      read -r sent answered lost qps lat ok cpu <<<"$line"
      CROUND[$who.$r]=$(cpu_us "$cpu" "$answered") CROUND[$who.qps.$r]=$qps
      stop "$pid"
    done
  done
fi

# ---------------------------------------------------------- instructions
# CALLGRIND=1: user-space instructions per cold query, counted exactly by
# callgrind where CPU time on this VM moves by a third from run to run:
# the way to compare two builds' cold paths (or resolvd's with Unbound's)
# to within a percent. Kernel work is not counted. Each server runs under
# valgrind, is primed with one name, has its counters zeroed, and gets the
# first CG_NAMES (4000) cold names at CG_QPS (300) q/s; instructions in the
# dump divided by answers. At that rate a receive batch holds one query,
# so per-batch costs weigh more than under load.
if [ "${CALLGRIND:-0}" = 1 ]; then
  command -v valgrind >/dev/null 2>&1 || die "CALLGRIND=1 needs valgrind (apt-get install valgrind)"
  head -n "${CG_NAMES:-4000}" cold.txt >cg-names.txt
  CG_WHO="resolvd unbound"
  if [ -n "${COMPARE_BIN:-}" ]; then
    other_config
    CG_WHO="resolvd other unbound"
  fi
  for who in $CG_WHO; do
    log "$who under callgrind: ${CG_NAMES:-4000} cold names at ${CG_QPS:-300} q/s"
    case $who in
      resolvd) valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$who" "$RESOLVD" --config "$WORK/resolvd.toml" --threads 1 >"cg-$who.log" 2>&1 & port=$RESOLVD_PORT ;;
      other) valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$who" "$COMPARE_BIN" --config "$WORK/other.toml" --threads 1 >"cg-$who.log" 2>&1 & port=$((RESOLVD_PORT + 50)) ;;
      unbound) valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$who" "$UNBOUND" -d -c "$WORK/unbound.conf" >"cg-$who.log" 2>&1 & port=$UNBOUND_PORT ;;
    esac
    pid=$!
    PIDS+=("$pid")
    # valgrind starts slowly: up to 30 s for the first answer.
    for _ in $(seq 1 100); do
      dig @127.0.0.1 -p "$port" +tries=1 +time=2 h0.bench.test A >/dev/null 2>&1 && break
      sleep 0.3
    done
    dig @127.0.0.1 -p "$port" +tries=1 +time=5 h0.bench.test A >/dev/null || die "$who under valgrind: no answer (see $WORK/cg-$who.log)"
    sleep 1
    callgrind_control -z "$pid" >/dev/null
    line=$(perf_run "cg-$who" "$pid" -p "$port" -d cg-names.txt -n 1 -l 300 -c 10 -Q "${CG_QPS:-300}")
    read -r sent answered lost qps lat ok cpu <<<"$line"
    callgrind_control -d "$pid" >/dev/null
    stop "$pid"
    # The dump asked for above is part 1; the file without a suffix is
    # what ran after it.
    total=$(callgrind_annotate "$WORK/cg.$who.1" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    CG[$who]=$(awk -v t="${total:-0}" -v n="$answered" 'BEGIN { if (n > 0 && t > 0) printf "%.0f", t / n; else print "n/a" }')
  done
fi
fi

[ "${NO_L2:-0}" = 1 ] || bench_l2

# ---------------------------------------------------------------- report
if [ -n "${L[warm_qps]:-}" ]; then
  echo
  echo "shared cache (Redis $(redis-server --version | awk '{ print $3 }' | cut -d= -f2)): fresh resolvd instances, 1 worker on CPU 0; redis-server and dnsperf on CPU 1"
  printf '%-44s %12s\n' "l2-cold q/s ($COLD names, empty Redis)" "${L[cold_qps]}"
  printf '%-44s %12s\n' "  RTT to the authoritative (UPSTREAM_RTT_MS)" "${UPSTREAM_RTT_MS:-0 (loopback)} ms"
  printf '%-44s %12s\n' "l2-cold mean latency us" "${L[cold_lat]}"
  printf '%-44s %12s\n' "answers written to Redis" "${L[written]}"
  printf '%-44s %12s\n' "l2-warm q/s (same names, Redis filled)" "${L[warm_qps]}"
  printf '%-44s %12s\n' "l2-warm mean latency us" "${L[warm_lat]}"
  printf '%-44s %12s\n' "l2-warm server CPU us/query" "${L[warm_cpu]}"
  printf '%-44s %12s\n' "l2-warm L2 hits / upstream queries" "${L[warm_hits]} / ${L[warm_upstream]}"
  printf '%-44s %12s\n' "l2-warm / l2-cold q/s" "$(awk -v a="${L[warm_qps]}" -v b="${L[cold_qps]}" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "n/a" }')"
  printf '%-44s %12s\n' "L2 hit, one at a time: mean latency us" "${L[hit_lat]} (${L[hit_hits]} hits)"
  echo "targets (issue 11): l2-warm >= 5x l2-cold q/s; an L2 hit under 150 us (median) on loopback"
fi
[ "${L2_ONLY:-0}" = 1 ] && exit 0
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else print "n/a" }'; }
row() { # LABEL KEY
  printf '%-34s %12s %12s %10s\n' "$1" "${R[resolvd.$2]}" "${R[unbound.$2]}" "$(ratio "${R[resolvd.$2]}" "${R[unbound.$2]}")"
}
if [ "${COLD_ONLY:-0}" != 1 ]; then
echo
echo "resolvd vs Unbound $("$UNBOUND" -V | awk 'NR == 1 { print $2 }'): 1 worker thread each on CPU 0, dnsperf on CPU 1"
echo "mode: $([ "$QUICK" = 1 ] && echo QUICK || echo full), ${DUR}s timed runs, $NAMES names ($HOT hot, $COLD cold)$([ "$SIGNED" = 1 ] && echo ', signed zones, both validating')"
echo
printf '%-34s %12s %12s %10s\n' metric resolvd unbound ratio
printf '%-34s %12s %12s %10s\n' ------ ------- ------- -----
row "UDP hot q/s" hot_qps
row "UDP hot server CPU us/query" hot_cpu
row "UDP hot mean latency us" hot_lat
row "UDP hot lost queries" hot_lost
row "UDP hot server CPU busy %" hot_busy
row "cold q/s (${COLD} new names)" cold_qps
row "cold server CPU us/query" cold_cpu
row "cold lost queries" cold_lost
row "load q/s ($((NAMES - HOT - COLD)) more new names)" load_qps
row "load server CPU us/query" load_cpu
row "names cached (NOERROR answers)" cached
row "VmRSS after load MiB" rss_mb
row "resident bytes per cached name" bytes_name
row "TCP q/s, 10 conns" tcp10_qps
row "TCP server CPU us/query, 10 conns" tcp10_cpu
row "TCP lost, 10 conns" tcp10_lost
row "TCP q/s, 1000 conns" tcp1000_qps
row "TCP server CPU us/query, 1000 conns" tcp1000_cpu
row "TCP lost, 1000 conns" tcp1000_lost
if [ "${NO_TLS:-0}" != 1 ]; then
  for m in dot doh; do
    M=$(tr a-z A-Z <<<"$m")
    for c in 10 1000; do
      row "$M q/s, $c conns" "$m${c}_qps"
      row "$M server CPU us/query, $c conns" "$m${c}_cpu"
      row "$M lost, $c conns" "$m${c}_lost"
    done
  done
fi
fi
echo
if [ -n "${R[floor.hot_qps]:-}" ]; then
  echo "floor (canned responder, no DNS work): UDP hot ${R[floor.hot_qps]} q/s, ${R[floor.hot_cpu]} us CPU/query, ${R[floor.hot_lost]} lost"
  echo "UDP hot CPU/query: resolvd / floor = $(ratio "${R[resolvd.hot_cpu]}" "${R[floor.hot_cpu]}"), unbound / floor = $(ratio "${R[unbound.hot_cpu]}" "${R[floor.hot_cpu]}")"
fi
if [ -n "${ROUND[floor.1]:-}" ]; then
  echo
  echo "hot rounds: floor, resolvd, Unbound back to back, ${DUR}s each, all warm (UDP hot server CPU us/query)"
  printf '%-8s %8s %8s %8s %14s %16s\n' round floor resolvd unbound resolvd/floor resolvd/unbound
  rf=() ru=()
  for r in $(seq 1 "$HOT_ROUNDS"); do
    f=${ROUND[floor.$r]} d=${ROUND[resolvd.$r]} u=${ROUND[unbound.$r]}
    rf+=("$(ratio "$d" "$f")") ru+=("$(ratio "$d" "$u")")
    printf '%-8s %8s %8s %8s %14s %16s\n' "$r" "$f" "$d" "$u" "${rf[-1]}" "${ru[-1]}"
  done
  printf '%-8s %8s %8s %8s %14s %16s\n' median "" "" "" "$(median "${rf[@]}")" "$(median "${ru[@]}")"
  echo "targets (issue 14): resolvd / floor <= 1.1, resolvd / unbound <= 0.8"
  if [ -n "${ROUND[other.1]:-}" ]; then
    ro=()
    for r in $(seq 1 "$HOT_ROUNDS"); do ro+=("$(ratio "${ROUND[other.$r]}" "${ROUND[resolvd.$r]}")"); done
    echo "COMPARE_BIN $COMPARE_BIN, CPU us/query by round: ${ROUND[other.1]}$(for r in $(seq 2 "$HOT_ROUNDS"); do printf ', %s' "${ROUND[other.$r]}"; done)"
    echo "other / resolvd by round: ${ro[*]}; median $(median "${ro[@]}")"
  fi
fi
if [ -n "${CROUND[resolvd.1]:-}" ]; then
  echo
  echo "cold rounds: fresh resolvd and Unbound back to back, $COLD new names each (server CPU us/query, q/s)"
  printf '%-8s %10s %10s %10s %10s %12s %12s\n' round resolvd unbound "r q/s" "u q/s" "CPU ratio" "q/s ratio"
  cc=() cq=() co=()
  for r in $(seq 1 "$COLD_ROUNDS"); do
    d=${CROUND[resolvd.$r]} u=${CROUND[unbound.$r]} dq=${CROUND[resolvd.qps.$r]} uq=${CROUND[unbound.qps.$r]}
    cc+=("$(ratio "$d" "$u")") cq+=("$(ratio "$dq" "$uq")")
    printf '%-8s %10s %10s %10s %10s %12s %12s\n' "$r" "$d" "$u" "$dq" "$uq" "${cc[-1]}" "${cq[-1]}"
    if [ -n "${CROUND[other.1]:-}" ]; then co+=("$(ratio "${CROUND[other.$r]}" "$d")"); fi
  done
  printf '%-8s %10s %10s %10s %10s %12s %12s\n' median "" "" "" "" "$(median "${cc[@]}")" "$(median "${cq[@]}")"
  echo "targets (issue 8): cold CPU ratio <= 0.8, cold q/s ratio >= 1.2"
  if [ -n "${CROUND[other.1]:-}" ]; then
    echo "COMPARE_BIN $COMPARE_BIN, cold CPU us/query by round: ${CROUND[other.1]}$(for r in $(seq 2 "$COLD_ROUNDS"); do printf ', %s' "${CROUND[other.$r]}"; done)"
    echo "other / resolvd by round: ${co[*]}; median $(median "${co[@]}")"
  fi
fi
if [ -n "${CG[resolvd]:-}" ]; then
  echo
  echo "user-space instructions per cold query (callgrind, ${CG_NAMES:-4000} names at ${CG_QPS:-300} q/s): resolvd ${CG[resolvd]}, unbound ${CG[unbound]}, ratio $(ratio "${CG[resolvd]}" "${CG[unbound]}")"
  if [ -n "${CG[other]:-}" ]; then
    echo "COMPARE_BIN $COMPARE_BIN: ${CG[other]} instructions per cold query, other / resolvd $(ratio "${CG[other]}" "${CG[resolvd]}")"
  fi
fi
if [ -n "${R[resolvd.sys_q]:-}${R[floor.sys_q]:-}" ]; then
  echo "system calls per answered query (strace -c -f, hot, ${SYS_QPS:-50000} q/s for ${SYS_DUR:-5}s):"
  for n in floor resolvd unbound; do
    if [ -n "${R[$n.sys_q]:-}" ]; then
      echo "  $n: ${R[$n.sys_q]} (${R[$n.sys_top]})"
    fi
  done
fi
echo
echo "ratio = resolvd / unbound (q/s: higher is better; CPU, latency, bytes: lower is better)"
echo "When 'CPU busy %' is well below 100, dnsperf on CPU 1 was the bottleneck: compare CPU us/query, not q/s."
