#!/usr/bin/env bash
# Runs resolvd under a light, mixed load on loopback and plots its /metrics
# (contrib/plot-metrics.py): the picture in README's Operations section.
#
# Two resolvd processes: one serves the zone "." authoritatively (the
# "root", 127.209.0.11:5399) with www.example.test. and *.load.test., the
# other (127.209.0.12:5300, metrics on :9153) resolves through it and has a
# local zone svc.test. with two pools. dnsperf (Debian: dnsperf) sends
# cache hits, misses (unique names), NXDOMAINs and pool names at a fixed
# low rate; every process started here is stopped by PID at the end.
#
#   contrib/metrics-demo.sh [SECONDS] [OUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-40}
out=${2:-contrib/grafana/resolvd-metrics.png}
bin=${RESOLVD:-target/release/resolvd}
[ -x "$bin" ] || bin=target/debug/resolvd
[ -x "$bin" ] || { echo "build resolvd first (cargo build)" >&2; exit 1; }
command -v dnsperf >/dev/null || { echo "dnsperf is missing: apt-get install dnsperf" >&2; exit 1; }
# Debian's matplotlib lives in the system python, which may not be first on PATH.
py=${PYTHON:-python3}
"$py" -c 'import matplotlib' 2>/dev/null || py=/usr/bin/python3
"$py" -c 'import matplotlib' 2>/dev/null || { echo "matplotlib is missing: apt-get install python3-matplotlib" >&2; exit 1; }

dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

cat > "$dir/root.zone" <<'EOF'
$ORIGIN .
$TTL 86400
@ SOA a.root.test. hostmaster.test. 1 3600 600 86400 300
@ NS a.root.test.
a.root.test. A 127.209.0.11
www.example.test. 300 A 192.0.2.10
*.load.test. 30 A 192.0.2.20
EOF
cat > "$dir/auth.toml" <<'EOF'
[server]
listen = ["127.209.0.11:5399"]
[control]
enabled = false
[resolver]
special_use_names = false
[[zone]]
origin = "."
file = "root.zone"
EOF
printf '. 3600000 NS a.root.test.\na.root.test. 3600000 A 127.209.0.11\n' > "$dir/hints"
cat > "$dir/resolvd.toml" <<'EOF'
[server]
listen = ["127.209.0.12:5300"]
[resolver]
root_hints = "hints"
upstream_port = 5399
query_loopback = true
special_use_exclude = ["test."]
[control]
enabled = false
[metrics]
listen = "127.209.0.12:9153"
[[zone]]
origin = "svc.test."
[[zone.pool]]
name = "www"
type = "A"
answers = 1
members = [{ value = "192.0.2.30", weight = 70 }, { value = "192.0.2.31", weight = 30 }]
[[zone.pool]]
name = "api"
type = "A"
answers = 1
members = [{ value = "127.209.0.12", weight = 50 }, { value = "127.209.0.13", weight = 50 }]
health = { tcp_port = 5300, interval = "1s", timeout = "500ms", fails = 2 }
EOF

"$bin" --config "$dir/auth.toml" 2>"$dir/auth.log" & pids+=($!)
"$bin" --config "$dir/resolvd.toml" 2>"$dir/resolvd.log" & pids+=($!)
for _ in $(seq 50); do
  curl -sf http://127.209.0.12:9153/metrics >/dev/null && break
  sleep 0.1
done

# 40% hits, 30% misses (a new name each), 10% NXDOMAIN, 20% pools.
python3 - "$dir/queries" <<'EOF'
import random, sys
random.seed(1)
with open(sys.argv[1], 'w') as f:
    for i in range(200000):
        r = random.random()
        if r < 0.4:
            f.write('www.example.test. A\n')
        elif r < 0.7:
            f.write('n%d.load.test. A\n' % i)
        elif r < 0.8:
            f.write('nope%d.example.test. AAAA\n' % i)
        elif r < 0.9:
            f.write('www.svc.test. A\n')
        else:
            f.write('api.svc.test. A\n')
EOF

"$py" contrib/plot-metrics.py --url http://127.209.0.12:9153/metrics \
  --duration "$((secs + 4))" --interval 2 --save "$dir/scrapes.json" --out "$out" &
plotter=$!
sleep 2
dnsperf -s 127.209.0.12 -p 5300 -d "$dir/queries" -l "$secs" -Q 300 >"$dir/dnsperf.log" 2>&1 || true
wait "$plotter"
grep -E 'Queries (sent|completed|lost)' "$dir/dnsperf.log" || true
echo "plot: $out"
