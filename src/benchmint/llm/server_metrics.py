"""The server's own view of a run: its Prometheus ``/metrics`` scraped during the run, mapped to one set of names.

A :class:`MetricsScraper` runs in a thread of its own (never on the client's event loop): it GETs ``/metrics``
every ``interval_s`` and keeps the raw text with the client's monotonic time (``now_ns``) of the answer's end:
the server read its counters before then, so a snapshot that ended before the measured start is a sound baseline
(a midpoint could fall before the start while the server answered after the first request). Parsing
(``prometheus_client.parser``) happens after the run, so scraping costs the load generator one small HTTP GET
per interval. Memory is bounded: past ``max_scrapes`` snapshots, every other one is dropped and the interval
doubles.

The names of vLLM, SGLang, TGI and ``benchmint llm serve`` map to one set (:data:`GAUGES`, :data:`COUNTERS`,
:data:`HISTOGRAMS`); the first name the server exposes wins and is recorded as ``source``. A metric none of
the names gives is listed in ``absent``, never estimated. An endpoint that is missing or answers garbage is a
warning in the result; the run goes on.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from benchmint.core.clock import now_ns

SERIES_SCHEMA_VERSION = "1.0"

# one name -> the names servers use, first match wins (gauges: mean over label sets for fractions, else sum)
GAUGES: dict[str, tuple[str, ...]] = {
    "running_requests": ("vllm:num_requests_running", "sglang:num_running_reqs", "tgi_batch_current_size",
                         "benchmint_requests_running"),
    "waiting_requests": ("vllm:num_requests_waiting", "sglang:num_queue_reqs", "tgi_queue_size",
                         "benchmint_queue_depth"),
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "prefix_cache_hit_rate_gauge": ("vllm:gpu_prefix_cache_hit_rate", "sglang:cache_hit_rate"),
}
FRACTIONS = ("kv_cache_usage", "prefix_cache_hit_rate_gauge")
COUNTERS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm:generation_tokens_total", "sglang:generation_tokens_total",
                          "tgi_request_generated_tokens_sum", "benchmint_generation_tokens_total"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries_total",),
    "prefix_cache_hits": ("vllm:prefix_cache_hits_total",),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft_s": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "tpot_s": ("vllm:request_time_per_output_token_seconds", "vllm:time_per_output_token_seconds",
               "sglang:time_per_output_token_seconds", "vllm:inter_token_latency_seconds",
               "sglang:inter_token_latency_seconds", "tgi_request_mean_time_per_token_duration"),
}
# what the result names as present or absent
SUMMARY_NAMES = ("running_requests", "waiting_requests", "kv_cache_usage", "prefix_cache_hit_rate",
                 "ttft_s", "tpot_s", "generation_tokens")


def metrics_url(base_url: str) -> str:
    """``http://h:p/v1`` -> ``http://h:p/metrics`` (servers expose /metrics at their root)."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return root + "/metrics"


class MetricsScraper:
    """Scrape ``url`` every ``interval_s`` in a thread; ``stop()`` takes a last scrape and joins."""

    def __init__(self, url: str, interval_s: float = 1.0, timeout_s: float = 5.0, api_key: str | None = None,
                 max_scrapes: int = 600):
        from yarl import URL

        u = URL(url)
        self.url = str(u.with_user(None))  # credentials in the URL go in a header, never in a text we print
        self.interval_s = float(interval_s)
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if not api_key and u.user is not None:
            import base64

            cred = base64.b64encode(f"{u.user}:{u.password or ''}".encode()).decode()
            self.headers = {"Authorization": f"Basic {cred}"}
        self.max_scrapes = max_scrapes
        self.snapshots: list[tuple[int, str]] = []  # (client monotonic ns, text)
        self.sent: dict[int, int] = {}  # a snapshot's time -> when its GET was sent (the latest sent, the baseline)
        self.failures: list[str] = []
        self.failed = 0
        self.gave_up: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="benchmint-metrics-scraper", daemon=True)

    def start(self) -> MetricsScraper:
        self._scrape()  # the first snapshot before the run: counters are read as deltas from it
        if self.gave_up is None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout_s + 5)
        if self.gave_up is None:
            self._scrape()  # the last snapshot after the run

    def mark(self) -> None:
        """A snapshot now (called as the measured requests start, after a warm-up): counters are read as deltas
        from the last snapshot before the measured start, so the warm-up's tokens are not the run's."""
        if self.gave_up is None:
            self._scrape()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._scrape()
            if self.gave_up is not None:
                return

    def _scrape(self) -> None:
        t0 = now_ns()
        try:
            req = urllib.request.Request(self.url, headers=self.headers)
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                text = r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            self._fail(f"HTTP {e.code}", fatal=e.code in (401, 403, 404, 405))
            return
        except (OSError, ValueError) as e:
            self._fail(f"{type(e).__name__}: {e}", fatal=False)
            return
        t = now_ns()  # the answer's end: the server's counters were read before it
        with self._lock:  # (the thread's scrapes and a mark() from the run's loop)
            self.snapshots.append((t, text))
            self.sent[t] = t0
            self.snapshots.sort(key=lambda x: x[0])
            if len(self.snapshots) > self.max_scrapes:  # bounded: keep every other snapshot, scrape half as often
                self.snapshots = self.snapshots[::2] + ([self.snapshots[-1]] if len(self.snapshots) % 2 == 0 else [])
                self.sent = {t: self.sent[t] for t, _ in self.snapshots if t in self.sent}
                self.interval_s *= 2

    def _fail(self, why: str, fatal: bool) -> None:
        self.failed += 1
        if len(self.failures) < 5:
            self.failures.append(why)
        if fatal and not self.snapshots:
            self.gave_up = why  # no /metrics here: stop asking
        elif self.failed >= 3 and not self.snapshots:
            self.gave_up = why


# ---------------------------------------------------------------- after the run
def _parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (``x_total``, ``x_bucket``...), each with its labels. ValueError on garbage."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, float(s.value)))
    return out


def _pick(samples: dict, names: tuple[str, ...], suffix: str = "") -> str | None:
    return next((n for n in names if n + suffix in samples), None)


def _gauge(samples: dict, name: str, fraction: bool) -> float:
    vals = [v for _, v in samples[name] if np.isfinite(v)]
    if not vals:
        return float("nan")
    return float(np.mean(vals)) if fraction else float(np.sum(vals))


def _buckets(samples: dict, name: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Cumulative bucket counts by upper bound (summed over other labels), with _sum and _count."""
    by_le: dict[float, float] = {}
    for labels, v in samples.get(name + "_bucket", []):
        le = float(labels.get("le", "nan"))
        by_le[le] = by_le.get(le, 0.0) + v
    les = np.array(sorted(by_le))
    counts = np.array([by_le[x] for x in les]) if len(les) else np.array([])
    total = sum(v for _, v in samples.get(name + "_sum", []))
    n = sum(v for _, v in samples.get(name + "_count", []))
    return les, counts, total, n


def histogram_quantile(q: float, les: np.ndarray, cum: np.ndarray) -> float | None:
    """Prometheus's ``histogram_quantile``: linear within the bucket holding rank ``q``; None without data."""
    if len(les) == 0 or cum[-1] <= 0:
        return None
    rank = q * cum[-1]
    i = int(np.searchsorted(cum, rank, side="left"))
    if i >= len(les):
        i = len(les) - 1
    hi = les[i]
    lo = les[i - 1] if i > 0 else 0.0
    if not np.isfinite(hi):  # in the +Inf bucket: the largest finite bound is all one can say
        return float(lo)
    below = cum[i - 1] if i > 0 else 0.0
    inside = cum[i] - below
    return float(hi if inside <= 0 else lo + (hi - lo) * (rank - below) / inside)


def summarize(scraper: MetricsScraper, start_ns: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the result's ``server_metrics`` block, the time series written as ``server_metrics.json``)."""
    block: dict[str, Any] = {
        "url": scraper.url, "interval_s": scraper.interval_s, "scrapes": len(scraper.snapshots),
        "failed_scrapes": scraper.failed, "clock": "client monotonic (end of each scrape's answer), s from the run's start",
        "parser": "prometheus_client.parser", "warnings": [], "sources": {}, "summary": {}, "absent": [],
    }
    if scraper.gave_up is not None:
        block["warnings"].append(f"no server metrics: {scraper.url} answered {scraper.gave_up}")
    elif scraper.failures:
        block["warnings"].append(f"{scraper.failed} scrapes of {scraper.url} failed (first: {scraper.failures[0]})")
    parsed: list[tuple[float, dict]] = []
    sent: list[int] = []  # each parsed snapshot's send time
    bad = 0
    for t, text in scraper.snapshots:
        try:
            parsed.append(((t - start_ns) / 1e9, _parse(text)))
            sent.append(scraper.sent.get(t, t))
        except Exception:  # the parser raises ValueError and others on garbage: a warning, never the run's end
            bad += 1
    if bad:
        block["warnings"].append(f"{bad} of {len(scraper.snapshots)} answers of {scraper.url} are not Prometheus text")
    sent = [w for (_, s), w in zip(parsed, sent, strict=True) if s]
    parsed = [(t, s) for t, s in parsed if s]
    if scraper.snapshots and not parsed and not bad:
        block["warnings"].append(f"{scraper.url} answered no metrics")
    series: dict[str, Any] = {"schema_version": SERIES_SCHEMA_VERSION, "url": scraper.url, "clock": block["clock"],
                              "t_s": [t for t, _ in parsed], "gauges": {}, "counters": {}, "histograms": {}}
    block["scrapes_parsed"] = len(parsed)
    if not parsed:
        block["absent"] = list(SUMMARY_NAMES)
        return block, series
    # the baseline: of the snapshots answered before the measured start, the one sent last (its counters were read
    # latest: after any warm-up, see MetricsScraper.mark; a periodic scrape sent during the warm-up and answered
    # after the mark's would hold part of the warm-up's tokens)
    before = [k for k, (t, _) in enumerate(parsed) if t <= 0]
    base = max(before, key=lambda k: (sent[k], k)) if before else 0
    first, last = parsed[base][1], parsed[-1][1]
    block["baseline_t_s"] = parsed[base][0]
    summ, src = block["summary"], block["sources"]
    for key, names in GAUGES.items():
        name = next((n for n in names if any(n in s for _, s in parsed)), None)
        if name is None:
            continue
        vals = [_gauge(s, name, key in FRACTIONS) if name in s else float("nan") for _, s in parsed]
        series["gauges"][key] = [None if not np.isfinite(v) else v for v in vals]
        arr = np.array(vals, dtype=float)
        arr = arr[np.isfinite(arr)]
        if len(arr):
            src[key] = name
            summ[key] = {"mean": float(arr.mean()), "max": float(arr.max()), "last": float(arr[-1])}
    for key, names in COUNTERS.items():
        name = _pick(last, names)
        if name is None or name not in first:
            continue
        vals = [_gauge(s, name, False) if name in s else None for _, s in parsed]
        series["counters"][key] = vals
        src[key] = name
        summ[key] = {"delta": _gauge(last, name, False) - _gauge(first, name, False)}
    q, h = summ.pop("prefix_cache_queries", None), summ.pop("prefix_cache_hits", None)
    if q and h and q["delta"] > 0:
        summ["prefix_cache_hit_rate"] = {"over_run": h["delta"] / q["delta"], "hits": h["delta"], "queries": q["delta"]}
        src["prefix_cache_hit_rate"] = f"{src.pop('prefix_cache_hits')} / {src.pop('prefix_cache_queries')}"
    else:
        src.pop("prefix_cache_hits", None), src.pop("prefix_cache_queries", None)
        g = summ.pop("prefix_cache_hit_rate_gauge", None)
        if g is not None:
            summ["prefix_cache_hit_rate"] = g
            src["prefix_cache_hit_rate"] = src.pop("prefix_cache_hit_rate_gauge")
    summ.pop("prefix_cache_hit_rate_gauge", None)
    src.pop("prefix_cache_hit_rate_gauge", None)
    if "generation_tokens" in summ:
        summ["generation_tokens"] = {"total_during_run": summ["generation_tokens"]["delta"]}
    for key, names in HISTOGRAMS.items():
        name = _pick(last, names, "_bucket")
        if name is None:
            continue
        les, c1, s1, n1 = _buckets(last, name)
        les0, c0, s0, n0 = _buckets(first, name)
        if len(les0) == len(les) and np.array_equal(les0, les):
            c1, s1, n1 = c1 - c0, s1 - s0, n1 - n0  # the run's own observations
        src[key] = name
        series["histograms"][key] = {"le": [float(x) for x in les], "cumulative_counts": c1.tolist(),
                                     "sum": s1, "count": n1}
        summ[key] = {
            "count": n1, "mean": s1 / n1 if n1 > 0 else None,
            "p50": histogram_quantile(0.5, les, c1), "p90": histogram_quantile(0.9, les, c1),
            "p99": histogram_quantile(0.99, les, c1),
            "how": "from the server's histogram buckets (Prometheus histogram_quantile interpolation)",
        }
    block["absent"] = [k for k in SUMMARY_NAMES if k not in summ]
    return block, series


def metrics_lines(block: dict[str, Any] | None) -> list[str]:
    """Console lines for a result's ``server_metrics`` block."""
    if not block:
        return []
    lines = [f"[yellow]warning:[/] {w}" for w in block.get("warnings", [])]
    s = block.get("summary") or {}
    parts = []
    for key, label in (("running_requests", "running"), ("waiting_requests", "waiting")):
        if key in s:
            parts.append(f"{label} mean {s[key]['mean']:.1f} max {s[key]['max']:.0f}")
    if "kv_cache_usage" in s:
        parts.append(f"KV cache max {100 * s['kv_cache_usage']['max']:.1f}%")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT")):
        if key in s and s[key]["p50"] is not None:
            parts.append(f"{label} p50 {1000 * s[key]['p50']:.1f} ms p99 {1000 * s[key]['p99']:.1f} ms")
    if "generation_tokens" in s:
        parts.append(f"generated {s['generation_tokens']['total_during_run']:.0f} tokens")
    if parts:
        lines.append(f"server metrics ({block['scrapes']} scrapes): " + ", ".join(parts))
    if block.get("absent") and block.get("scrapes_parsed"):
        lines.append(f"[dim]not exposed by this server: {', '.join(block['absent'])}[/]")
    return lines
