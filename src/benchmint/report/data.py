"""What the report reads out of RunRecords, tolerant of missing pieces.

Replay runs carry ``metrics.per_op_type`` (a list of ``{op, count, original_s, replay_s}``, or a mapping op ->
that), ``metrics.error`` and ``metrics.coverage``; LLM runs carry ``artifacts["requests"]`` (a per-request
Parquet file with ``ttft_s``, ``tpot_s``, ``e2e_s``) and percentiles such as ``metrics.ttft_s.p99``, and
``metrics.throughput`` against the offered load in ``config`` (rate or concurrency). A peak search
(``benchmint llm sweep``) stores one more record whose ``metrics.sweep`` holds the trials' curve and the peak
(``SweepResult.to_dict()`` plus ``unit`` and ``criterion``); it is a sweep, not an LLM run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmint.results.record import RunRecord

LATENCY_METRICS = ("ttft_s", "tpot_s", "e2e_s")
PERCENTILES = ("p50", "p90", "p95", "p99", "max")
LOAD_KEYS = (
    ("rate", "offered rate (req/s)"),
    ("request_rate", "offered rate (req/s)"),
    ("target_qps", "offered rate (req/s)"),
    ("qps", "offered rate (req/s)"),
    ("concurrency", "concurrency"),
    ("max_concurrency", "concurrency"),
)


def metrics(rec: RunRecord) -> dict[str, Any]:
    """The run's metrics as plain JSON builtins: the typed model of its kind (``results/models.py``) encoded,
    so the keys are those the model declares; a record built from a dict by older code reads the same."""
    m = rec.metrics
    if hasattr(m, "to_dict"):
        return m.to_dict()
    return m if isinstance(m, dict) else {}


def short_id(rec: RunRecord) -> str:
    return rec.id if len(rec.id) <= 24 else rec.id[:24] + "…"


def _short_name(v: Any) -> str | None:
    """A short text for a config value: dicts give their ``kind``/``name``; local paths their last part."""
    if isinstance(v, dict):
        v = v.get("kind") or v.get("name")
    if v is None or isinstance(v, dict | list) or v == "":
        return None
    s = str(v)
    if s.startswith(("/", "./", "../", "~")) and len(s) > 24:
        s = Path(s).name or s
    return s


def short_name(v: Any) -> str | None:
    """A short text for a name or a config value (a long local path: its last part)."""
    return _short_name(v)


def label(rec: RunRecord) -> str:
    """A short human label for a run: model, backend or scenario, and a short id."""
    w, c = rec.workload or {}, rec.config or {}
    # (a peak search stored before it named the model model_name has it as model)
    bits = [_short_name(w.get("model_name")) or _short_name(w.get("model")) or _short_name(w.get("name")) or rec.kind]
    for k in ("backend", "engine", "scenario", "device"):
        s = _short_name(c.get(k))
        if s:
            bits.append(s)
            break
    if rec.kind == "mlperf":
        bits.append("LoadGen")
    return f"{' / '.join(bits)} ({rec.id[-8:]})"


def num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int | float):
        f = float(v)
        return f if math.isfinite(f) else None
    try:
        f = float(v)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return None


@dataclass
class OpRow:
    op: str
    count: int | None
    original_s: float | None
    replay_s: float | None

    @property
    def error(self) -> float | None:
        if self.original_s and self.replay_s is not None:
            return (self.replay_s - self.original_s) / self.original_s
        return None


def per_op_rows(rec: RunRecord) -> list[OpRow]:
    raw = metrics(rec).get("per_op_type")
    items: list[dict[str, Any]] = []
    if isinstance(raw, list):
        items = [d for d in raw if isinstance(d, dict)]
    elif isinstance(raw, dict):
        items = [{"op": k, **v} for k, v in raw.items() if isinstance(v, dict)]
    rows = []
    for d in items:
        op = d.get("op") or d.get("name") or d.get("op_type") or "?"
        cnt = d.get("count")
        under = d.get("original_under_observer_cost")  # all recorded within the recorder's cost: unknown, not 0
        orig = None if isinstance(under, int) and isinstance(cnt, int) and under >= cnt > 0 else num(d.get("original_s"))
        rows.append(OpRow(str(op), int(cnt) if isinstance(cnt, int | float) else None, orig, num(d.get("replay_s"))))
    rows.sort(key=lambda r: -(r.original_s or r.replay_s or 0.0))
    return rows


def coverage(rec: RunRecord) -> tuple[float | None, float | None]:
    """(coverage by count, coverage by time) when the replay run recorded them."""
    cov = metrics(rec).get("coverage")
    if isinstance(cov, dict):
        return num(cov.get("count")), num(cov.get("time"))
    m = metrics(rec)
    return num(cov) if cov is not None else num(m.get("coverage_count")), num(m.get("coverage_time"))


def resolve_artifact(rec: RunRecord, key: str, base_dirs: list[Path]) -> Path | None:
    """Find an artifact file: absolute, or relative to the run's folder (``artifacts.out_dir``,
    ``config.out``), one of ``base_dirs`` (e.g. the folder of a run.json given to the report) or the cwd."""
    arts = rec.artifacts or {}
    absolute = arts.get(f"{key}_abs")  # the LLM layer records the absolute path beside the relative one
    if isinstance(absolute, str | Path) and Path(absolute).is_file():
        return Path(absolute)
    value = arts.get(key)
    if not value or not isinstance(value, str | Path):
        return None
    p = Path(value)
    if p.is_absolute():
        return p if p.is_file() else None
    candidates = []
    for k in ("out_dir", "run_dir"):
        if (rec.artifacts or {}).get(k):
            candidates.append(Path(rec.artifacts[k]))
    for k in ("out", "out_dir"):
        if (rec.config or {}).get(k):
            candidates.append(Path(str(rec.config[k])))
    candidates += list(base_dirs) + [Path.cwd()]
    for base in candidates:
        q = base / p
        if q.is_file():
            return q
    return None


@dataclass
class LatencySamples:
    """Per-request latencies of one run (seconds), or ``None`` per metric when only percentiles exist."""

    values: dict[str, list[float]]
    source: str  # "requests file" | "percentiles" | "none"


def latency_samples(rec: RunRecord, base_dirs: list[Path]) -> LatencySamples:
    path = resolve_artifact(rec, "requests", base_dirs)
    if path is not None:
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            n = table.num_rows
            keep = [True] * n  # measured, successful requests only (no warm-up, no failures)
            if "warmup" in table.column_names:
                keep = [k and not w for k, w in zip(keep, table.column("warmup").to_pylist(), strict=True)]
            if "ok" in table.column_names:
                keep = [k and ok is not False for k, ok in zip(keep, table.column("ok").to_pylist(), strict=True)]
            vals: dict[str, list[float]] = {}
            for m in LATENCY_METRICS:
                if m in table.column_names:
                    col = [num(v) for v, k in zip(table.column(m).to_pylist(), keep, strict=True) if k]
                    vals[m] = sorted(v for v in col if v is not None)
            if any(vals.values()):
                return LatencySamples(vals, "requests file")
        except Exception:  # an unreadable requests file: fall back to the stored percentiles
            pass
    return LatencySamples({}, "percentiles" if percentiles(rec) else "none")


def _client_metrics(rec: RunRecord) -> dict[str, Any]:
    """The block holding client-side latency/throughput: ``metrics`` itself (``llm`` runs) or
    ``metrics.client`` (``mlperf`` runs measured through LoadGen)."""
    m = metrics(rec)
    if any(k in m for k in LATENCY_METRICS):
        return m
    client = m.get("client")  # (a LoadGen run's top-level "throughput" is LoadGen's: the client's is here)
    return client if isinstance(client, dict) else m


def percentiles(rec: RunRecord) -> dict[str, dict[str, float]]:
    """``{"ttft_s": {"p50": ..., "p99": ...}, ...}`` from the record's metrics (only finite numbers). For an
    ``mlperf`` run these are benchmint's client-side figures (``metrics.client``); LoadGen's own are
    :func:`loadgen_percentiles`."""
    return _stat_blocks(_client_metrics(rec), LATENCY_METRICS)


def is_loadgen_run(rec: RunRecord) -> bool:
    """A run measured through MLPerf LoadGen, whose record holds LoadGen's figures and the client's."""
    return isinstance(metrics(rec).get("loadgen"), dict) and isinstance(metrics(rec).get("client"), dict)


def loadgen_percentiles(rec: RunRecord) -> dict[str, dict[str, float]]:
    """LoadGen's own TTFT / TPOT / latency percentiles of an ``mlperf`` run (``metrics.loadgen``, read from
    ``mlperf_log_detail.txt``); empty for other runs."""
    lg = metrics(rec).get("loadgen")
    return _stat_blocks(lg, ("ttft_s", "tpot_s", "latency_s")) if isinstance(lg, dict) else {}


def _stat_blocks(m: dict[str, Any], names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for metric in names:
        block = m.get(metric)
        if isinstance(block, dict):
            got = {k: num(block.get(k)) for k in ("mean", *PERCENTILES)}
            got = {k: v for k, v in got.items() if v is not None}
            if got:
                out[metric] = got
    return out


def throughput(rec: RunRecord) -> dict[str, float]:
    tp = _client_metrics(rec).get("throughput")
    if not isinstance(tp, dict):
        return {}
    return {k: v for k, v in ((k, num(v)) for k, v in tp.items()) if v is not None}


def offered_load(rec: RunRecord) -> tuple[float, str] | None:
    c = rec.config or {}
    for key, what in LOAD_KEYS:
        v = num(c.get(key))
        if v is not None:
            return v, what
    return None


def sweep(rec: RunRecord) -> dict[str, Any] | None:
    """The ``metrics.sweep`` block of a peak-search run (``benchmint llm sweep``), or ``None``."""
    sw = metrics(rec).get("sweep")
    return sw if isinstance(sw, dict) and isinstance(sw.get("curve"), list) else None


def result_kind(rec: RunRecord) -> str:
    """Which typed model the run's metrics are: capture, replay, llm, mlperf, sweep or imported."""
    rk = getattr(rec, "result_kind", None)
    if isinstance(rk, str):
        return rk
    return "sweep" if sweep(rec) is not None else rec.kind


def is_sweep(rec: RunRecord) -> bool:
    """A peak search's own record: the curve of its trials and the peak, no per-request metrics (each trial
    is a run of its own)."""
    return sweep(rec) is not None


def is_llm(rec: RunRecord) -> bool:
    if is_sweep(rec):
        return False
    return rec.kind in ("llm", "mlperf") or bool(percentiles(rec)) or "requests" in (rec.artifacts or {})


def is_replay(rec: RunRecord) -> bool:
    return rec.kind == "replay" or "per_op_type" in metrics(rec)


# ------------------------------------------------------------------------------------------ accessors
# Everything below is what the headline and the side-by-side table read out of a record. They read the record
# only here, so that a change in how runs are stored (typed metrics per kind) is met in this module alone.


def flat(rec: RunRecord) -> dict[str, Any]:
    """The record as the flattened columns of table ``runs`` (see docs/results.md)."""
    from benchmint.results.flatten import flatten_record

    return flatten_record(rec.to_dict())


def model_name(rec: RunRecord) -> str | None:
    w = rec.workload or {}
    return _short_name(w.get("model_name")) or _short_name(w.get("model")) or _short_name(w.get("name"))


def parameter_count(rec: RunRecord) -> float | None:
    return num((rec.workload or {}).get("parameter_count"))


def architecture(rec: RunRecord) -> str | None:
    return _short_name((rec.workload or {}).get("architecture"))


def config_value(rec: RunRecord, *keys: str) -> Any:
    """The first of ``keys`` that the run's config holds (not None or empty)."""
    c = rec.config or {}
    for k in keys:
        v = c.get(k)
        if v not in (None, "", {}, []):
            return v
    return None


def backend(rec: RunRecord) -> str | None:
    b = config_value(rec, "backend", "engine")
    if isinstance(b, dict):  # mlperf: {"kind": ..., "options": ...}
        b = b.get("kind") or b.get("name")
    return _short_name(b)


def scenario(rec: RunRecord) -> str | None:
    return _short_name(config_value(rec, "scenario") or (rec.workload or {}).get("scenario"))


@dataclass
class Host:
    """Where a run ran: the host's name and CPU, its accelerator and how many (an imported result: the
    submitter's system name and organization)."""

    name: str | None
    cpu: str | None
    accelerator: str | None
    accelerator_count: int | None
    organization: str | None = None


def host(rec: RunRecord) -> Host:
    s = rec.system or {}
    acc = s.get("accelerator") if isinstance(s.get("accelerator"), dict) else {}
    name = acc.get("name")
    gpus = s.get("gpus") if isinstance(s.get("gpus"), list) else []
    if not name and gpus and isinstance(gpus[0], dict):
        name = gpus[0].get("name")
    n = num(acc.get("count"))
    if n is None and gpus:
        n = float(len(gpus))
    return Host(name=_short_name(s.get("hostname")) or _short_name(s.get("name")),
                cpu=_short_name(s.get("cpu_model")),
                accelerator=str(name) if name else None,
                accelerator_count=int(n) if n is not None else None,
                organization=_short_name(s.get("organization")))


@dataclass
class Timing:
    """A timing loop's summary (replay iteration, captured step): median, spread and whether it was noisy
    (IQR over 10% of the median, see core/stats.py); ``noisy`` is None for records written before the flag."""

    median_s: float | None
    p10_s: float | None
    p90_s: float | None
    n: int | None
    iqr_s: float | None
    noisy: bool | None

    @property
    def iqr_ratio(self) -> float | None:
        if self.iqr_s is None or not self.median_s:
            return None
        return self.iqr_s / self.median_s


def timing(rec: RunRecord) -> Timing | None:
    """The replay's iteration time (``metrics.iter_time_s``) or the capture's step time
    (``metrics.step_time_s``); None when the run has neither."""
    m = metrics(rec)
    block = m.get("iter_time_s", m.get("step_time_s"))
    if isinstance(block, int | float) and not isinstance(block, bool):
        return Timing(num(block), None, None, None, None, None)
    if not isinstance(block, dict):
        return None
    noisy = block.get("noisy")
    n = num(block.get("n"))
    return Timing(num(block.get("median")), num(block.get("p10")), num(block.get("p90")),
                  int(n) if n is not None else None, num(block.get("iqr")),
                  noisy if isinstance(noisy, bool) else None)


def replay_error(rec: RunRecord) -> float | None:
    """The replay's error as measured: against the live step timed alternately where the run had one (the demo;
    ``metrics.error`` is then against capture.json, minutes earlier), else ``metrics.error``."""
    fid = replay_fidelity(rec)
    if fid.get("reference") == "live step" and num(fid.get("error")) is not None:
        return num(fid["error"])
    return num(metrics(rec).get("error"))


def replay_fidelity(rec: RunRecord) -> dict[str, Any]:
    """The replay's fidelity verdict (``replay/headline.judge``: reference, error, verdict, drift ...), {} when
    the record has none."""
    f = metrics(rec).get("fidelity")
    return f if isinstance(f, dict) else {}


def trace_damage(rec: RunRecord) -> str | None:
    """What the recording lost of the step (``trace/damage.py``), None when nothing was lost."""
    v = metrics(rec).get("trace_damage")
    return v if isinstance(v, str) and v else None


def original_time(rec: RunRecord) -> float | None:
    m = metrics(rec)
    return num(m.get("original_iter_time_s")) if num(m.get("original_iter_time_s")) is not None \
        else num(m.get("original_s"))


def replay_time(rec: RunRecord) -> float | None:
    t = timing(rec)
    if t is not None and t.median_s is not None:
        return t.median_s
    return num(metrics(rec).get("replay_s"))


def notes(rec: RunRecord) -> list[str]:
    """The run's own sentences worth reading next to its figures (notes the measuring code left)."""
    m = metrics(rec)
    out = [str(m[k]) for k in ("error_note", "estimate_note", "note") if isinstance(m.get(k), str) and m[k]]
    return out


@dataclass
class Validity:
    """MLPerf LoadGen's verdict on a run (``VALID`` / ``INVALID``) and the reasons in plain words."""

    verdict: str | None
    reasons: list[str]


def loadgen_validity(rec: RunRecord) -> Validity | None:
    lg = metrics(rec).get("loadgen")
    if not isinstance(lg, dict):
        return None
    reasons = lg.get("invalid_reasons") if isinstance(lg.get("invalid_reasons"), list) else []
    if not reasons and lg.get("loadgen_invalid_reason"):
        reasons = [lg["loadgen_invalid_reason"]]
    v = lg.get("validity")
    return Validity(str(v) if v else None, [str(r) for r in reasons])


def result_value(rec: RunRecord) -> tuple[float, str] | None:
    """``metrics.result`` of an MLPerf run or an imported official result: (value, unit)."""
    r = metrics(rec).get("result")
    if isinstance(r, dict) and num(r.get("value")) is not None:
        return num(r["value"]), str(r.get("unit") or "")
    return None


def mlperf_source(rec: RunRecord) -> dict[str, Any]:
    """Where an imported result comes from: round, division, scenario, submitter."""
    c = rec.config or {}
    return {"version": c.get("mlperf_version"), "division": c.get("division"), "scenario": c.get("scenario"),
            "organization": (rec.system or {}).get("organization"), "source": c.get("source")}


def requests_failed(rec: RunRecord) -> tuple[int, int] | None:
    """(failed, completed) requests of an LLM run, from its own block or its client block (mlperf)."""
    blocks = [metrics(rec).get("requests"), (_client_metrics(rec) or {}).get("requests")]
    for b in blocks:
        if isinstance(b, dict) and num(b.get("failed")) is not None:
            return int(num(b["failed"])), int(num(b.get("completed")) or 0)
    return None


def client_bound(rec: RunRecord) -> tuple[bool, list[str]] | None:
    cb = metrics(rec).get("client_bound")
    if isinstance(cb, dict) and isinstance(cb.get("client_bound"), bool):
        return cb["client_bound"], [str(x) for x in cb.get("reasons") or []]
    return None


def goodput(rec: RunRecord) -> float | None:
    return num(_client_metrics(rec).get("goodput_requests_per_s"))


def duration_s(rec: RunRecord) -> float | None:
    return num(_client_metrics(rec).get("duration_s"))


def trace_name(rec: RunRecord) -> str | None:
    w = rec.workload or {}
    t = w.get("trace") or metrics(rec).get("trace")
    return Path(str(t)).name if t else None


def ops_total(rec: RunRecord) -> int | None:
    v = num((rec.workload or {}).get("ops")) or num(metrics(rec).get("ops_total"))
    return int(v) if v is not None else None


def device(rec: RunRecord) -> str | None:
    return _short_name(metrics(rec).get("device") or (rec.config or {}).get("device"))


def threads(rec: RunRecord) -> int | None:
    v = num(metrics(rec).get("threads"))
    return int(v) if v is not None else None


def capture_target(rec: RunRecord) -> str | None:
    """What a capture recorded: the built-in workload's name or the user's command line."""
    c, w = rec.config or {}, rec.workload or {}
    if c.get("workload") or w.get("model_name"):
        return str(c.get("workload") or w.get("model_name"))
    cmd = c.get("command_line") or w.get("command_line")
    if isinstance(cmd, list):
        cmd = " ".join(str(x) for x in cmd)
    return str(cmd) if cmd else None


def command_line(rec: RunRecord) -> str | None:
    cmd = (rec.provenance or {}).get("command_line")
    if isinstance(cmd, list) and cmd:
        return " ".join(str(x) for x in cmd)
    return str(cmd) if cmd else None


def how_measured(rec: RunRecord) -> str | None:
    lines = how_measured_lines(rec)
    return " ".join(lines) if lines else None


def how_measured_lines(rec: RunRecord) -> list[str]:
    """How the run's figures were measured, one line per source. An ``mlperf`` run has two: LoadGen's figures
    (from ``mlperf_log_detail.txt``) and benchmint's client-side figures of the same requests."""
    m = metrics(rec)
    lg = m.get("loadgen") if isinstance(m.get("loadgen"), dict) else {}
    if is_loadgen_run(rec):
        client = m["client"]
        anchor = client.get("anchored_to") or client.get("latency_anchor")
        lines = [f"LoadGen figures: {lg.get('measured_by') or 'MLPerf LoadGen (mlperf_log_detail.txt)'}"]
        lines.append("client figures: benchmint's own measurement of the same requests (its monotonic clock"
                     + (f"; latency anchored to the {anchor})" if anchor else ")"))
        return lines
    how = m.get("how_measured") or lg.get("measured_by")
    meas = (rec.config or {}).get("measurement")
    if not how and isinstance(meas, dict) and meas.get("clock"):
        how = f"clock {meas['clock']}; latency anchored to the {m.get('latency_anchor') or 'scheduled'} send time"
    return [str(how)] if how else []


def request_errors(rec: RunRecord) -> dict[str, int]:
    """Failed requests by error kind."""
    for b in (metrics(rec).get("requests"), _client_metrics(rec).get("requests")):
        if isinstance(b, dict) and isinstance(b.get("errors"), dict) and b["errors"]:
            return {str(k): int(num(v) or 0) for k, v in b["errors"].items()}
    return {}


def token_flags(rec: RunRecord) -> tuple[int, list[str]]:
    """Requests flagged for token counts that disagree, with examples."""
    tc = _client_metrics(rec).get("token_counts")
    if not isinstance(tc, dict):
        return 0, []
    return int(num(tc.get("flagged")) or 0), [str(x) for x in tc.get("flag_examples") or []]


def artifacts(rec: RunRecord) -> dict[str, str]:
    return {str(k): str(v) for k, v in (rec.artifacts or {}).items() if not str(k).endswith("_abs")
            and isinstance(v, str | Path)}
