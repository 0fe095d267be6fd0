#!/usr/bin/env python3
"""Scrape resolvd's /metrics for a while and plot what the Grafana dashboard
(contrib/grafana/resolvd.json) shows, as one PNG: queries per second by
RCODE, cache hit ratio, cache-miss latency quantiles, upstream outcomes,
pool shares and queries by type.

    contrib/plot-metrics.py --url http://127.0.0.1:9153/metrics \
        --duration 60 --interval 2 --save scrapes.json --out resolvd.png
    contrib/plot-metrics.py --load scrapes.json --out resolvd.png

Needs matplotlib (Debian: python3-matplotlib). Rates are computed between
consecutive scrapes, quantiles from the histogram's bucket deltas with
linear interpolation inside a bucket, as Prometheus' histogram_quantile
does.
"""

import argparse
import json
import re
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Prometheus text format -> {(name, ((label, value), ...)): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(LABEL.findall(m.group(3) or '')))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


def scrape(url, duration, interval):
    scrapes = []
    end = time.time() + duration
    while True:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
        scrapes.append({'t': time.time(), 'text': body})
        if time.time() + interval > end:
            break
        time.sleep(interval)
    return scrapes


def series(samples, name, by=None):
    """Sum of `name` per value of label `by` (or in total)."""
    out = {}
    for (n, labels), v in samples.items():
        if n != name:
            continue
        key = dict(labels).get(by, '') if by else ''
        out[key] = out.get(key, 0.0) + v
    return out


def rates(points, name, by=None):
    """{label: [(t, rate)]} between consecutive scrapes."""
    out = {}
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        a, b = series(s0, name, by), series(s1, name, by)
        for k, v in b.items():
            out.setdefault(k, []).append((t1, max(0.0, v - a.get(k, 0.0)) / (t1 - t0)))
    return out


def quantile(q, buckets):
    """histogram_quantile over [(le, cumulative count)] sorted by le."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float('inf'):
                return prev_le
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


def latency(points, qs):
    name = 'resolvd_resolution_duration_seconds_bucket'
    out = {q: [] for q in qs}
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        a, b = series(s0, name, 'le'), series(s1, name, 'le')
        buckets = sorted((float(le), b[le] - a.get(le, 0.0)) for le in b)
        for q in qs:
            v = quantile(q, buckets)
            if v is not None:
                out[q].append((t1, v * 1000.0))
    return out


def plot(scrapes, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    t0 = scrapes[0]['t']
    points = [(s['t'] - t0, parse(s['text'])) for s in scrapes]
    fig, axes = plt.subplots(3, 2, figsize=(13, 11))
    fig.suptitle('resolvd: %d scrapes over %.0f s' % (len(points), points[-1][0]))

    def lines(ax, data, title, ylabel, stack=False):
        keys = sorted(k for k in data if any(v for _, v in data[k]))
        if stack and keys:
            xs = [t for t, _ in data[keys[0]]]
            ax.stackplot(xs, *[[v for _, v in data[k]] for k in keys], labels=keys, alpha=0.8)
        else:
            for k in keys:
                ax.plot([t for t, _ in data[k]], [v for _, v in data[k]], label=str(k))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel('seconds')
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8, loc='upper left')

    lines(axes[0][0], rates(points, 'resolvd_responses_total', 'rcode'),
          'Queries per second by RCODE', 'replies/s', stack=True)
    hits = rates(points, 'resolvd_cache_hits_total').get('', [])
    misses = rates(points, 'resolvd_cache_misses_total').get('', [])
    ratio = [(t, h / (h + m)) for (t, h), (_, m) in zip(hits, misses) if h + m > 0]
    lines(axes[0][1], {'hit ratio': ratio}, 'Cache hit ratio', 'ratio')
    axes[0][1].set_ylim(0, 1.05)
    lat = latency(points, (0.5, 0.9, 0.99))
    lines(axes[1][0], {'p%d' % round(q * 100): v for q, v in lat.items()},
          'Cache-miss latency quantiles', 'ms')
    up = rates(points, 'resolvd_upstream_outcomes_total', 'outcome')
    up['tcp fallback'] = rates(points, 'resolvd_upstream_tcp_fallbacks_total').get('', [])
    lines(axes[1][1], up, 'Upstream exchanges by outcome', 'exchanges/s')
    sel = {}
    for (t0_, s0), (t1, s1) in zip(points, points[1:]):
        per = {}
        for (n, labels), v in s1.items():
            if n != 'resolvd_pool_selections_total':
                continue
            d = dict(labels)
            per[(d.get('pool'), d.get('member'))] = v - s0.get((n, labels), 0.0)
        for (pool, member), v in per.items():
            total = sum(x for (p, _), x in per.items() if p == pool)
            if total > 0:
                sel.setdefault('%s %s' % (pool, member), []).append((t1, v / total))
    lines(axes[2][0], sel, 'Pool shares', 'share of the pool\'s answers')
    axes[2][0].set_ylim(0, 1.05)
    lines(axes[2][1], rates(points, 'resolvd_queries_by_type_total', 'type'),
          'Queries per second by type', 'queries/s', stack=True)
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--url', help='the /metrics URL to scrape')
    ap.add_argument('--duration', type=float, default=60, help='seconds to scrape')
    ap.add_argument('--interval', type=float, default=2, help='seconds between scrapes')
    ap.add_argument('--save', help='write the raw scrapes here (JSON)')
    ap.add_argument('--load', help='plot scrapes saved with --save instead of scraping')
    ap.add_argument('--out', required=True, help='the PNG to write')
    a = ap.parse_args()
    if a.load:
        with open(a.load) as f:
            scrapes = json.load(f)
    elif a.url:
        scrapes = scrape(a.url, a.duration, a.interval)
    else:
        ap.error('give --url or --load')
    if a.save:
        with open(a.save, 'w') as f:
            json.dump(scrapes, f)
    if len(scrapes) < 2:
        sys.exit('need at least two scrapes to compute rates')
    plot(scrapes, a.out)
    print('wrote %s from %d scrapes' % (a.out, len(scrapes)))


if __name__ == '__main__':
    main()
