"""One headline per run, for a reader who wants the answer at a glance: what ran, on what, the main figure(s),
whether the run is valid, and whether its timing was noisy.

Main figures per kind of run: replay -> error against the original and the iteration time; llm -> output
throughput and TTFT / TPOT p99; mlperf -> LoadGen's result and VALID / INVALID; peak search -> the peak rate;
capture -> the step time; imported official result -> its result. Everything is read through
:mod:`benchmint.report.data`."""

from __future__ import annotations

from dataclasses import dataclass, field

from benchmint.report import data, fmt
from benchmint.results.record import RunRecord


@dataclass
class Figure:
    name: str
    value: str
    hint: str = ""


@dataclass
class Badge:
    text: str
    tone: str = "plain"  # good | bad | warn | plain
    hint: str = ""


@dataclass
class Headline:
    run_id: str
    anchor: str
    label: str
    kind: str
    what: str
    on: str
    figures: list[Figure] = field(default_factory=list)
    badges: list[Badge] = field(default_factory=list)


def anchor(rec: RunRecord) -> str:
    """The id of the run's own section on the page."""
    return "run-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in rec.id)


def on_what(rec: RunRecord) -> str:
    """"vm · AMD EPYC · no accelerator" or "DGX-H100 (NVIDIA) · 8 × NVIDIA H100"."""
    h = data.host(rec)
    bits = [b for b in (h.name, h.cpu if rec.kind != "imported" else None) if b]
    acc = h.accelerator
    if acc and acc.lower() != "cpu" and (h.accelerator_count or 1) > 0:
        bits.append(f"{h.accelerator_count} × {acc}" if (h.accelerator_count or 1) > 1 else acc)
    elif rec.kind != "imported":
        bits.append("no accelerator (CPU)")
    if h.organization:
        bits[0:1] = [f"{bits[0]} ({h.organization})"] if bits else [h.organization]
    return " · ".join(bits) or "unknown system"


def _threads(rec: RunRecord) -> str:
    n = data.threads(rec)
    return "" if not n else f", {n} thread" + ("s" if n > 1 else "")


def _status_badge(rec: RunRecord) -> Badge:
    tone = {"ok": "good", "partial": "warn", "failed": "bad", "invalid": "bad"}.get(rec.status, "plain")
    return Badge(f"status {rec.status}", tone, "the run's status in its record")


def _noise_badge(rec: RunRecord) -> Badge | None:
    t = data.timing(rec)
    if t is None:
        return None
    ratio = t.iqr_ratio
    spread = f"IQR {fmt.percent(ratio, decimals=0)} of the median" if ratio is not None else ""
    over = f" over {t.n} samples" if t.n else ""
    if t.noisy is None:
        return Badge("noise not recorded", "plain", "a record written before timings carried their IQR")
    if t.noisy:
        return Badge("noisy", "warn", f"{spread}{over}: over the 10% that torch.utils.benchmark flags")
    return Badge("steady", "good", f"{spread}{over}")


def _replay(rec: RunRecord) -> Headline:
    h = _base(rec, "replay")
    w = [x for x in (data.architecture(rec), data.parameter_count(rec) and
                     f"{fmt.count(data.parameter_count(rec))} parameters") if x]
    ops = data.ops_total(rec)
    cov_n, cov_t = data.coverage(rec)
    h.what = (f"replay of {data.trace_name(rec) or 'a trace'}" + (f" ({', '.join(w)})" if w else "")
              + (f", {ops} ops" if ops else "")
              + (f" on {data.device(rec)}" if data.device(rec) else "")
              + _threads(rec))
    err, fid = data.replay_error(rec), data.replay_fidelity(rec)
    if fid.get("reference") == "live step" and data.num(fid.get("error")) is not None:
        # the demo's measurement: the original step timed alternately with the replay, in the same run
        h.figures.append(Figure("error vs live step", fmt.percent(fid["error"], signed=True),
                                "median over rounds of replay / original - 1, the original step timed "
                                "alternately with the replay in the same run"))
    elif err is not None:
        h.figures.append(Figure("error vs original", fmt.percent(err, signed=True),
                                "(replay iteration - original iteration) / original iteration"
                                + ("; the original is capture.json's step time, measured at capture time"
                                   if fid.get("reference") == "capture.json" else "")))
    _fidelity_badges(fid, h)
    lost = data.trace_damage(rec)
    if lost:  # the error above is of what was recorded, not of the step
        h.badges.append(Badge("not the whole step", "warn", lost))
    rt, ot = data.replay_time(rec), data.original_time(rec)
    live = fid.get("reference") == "live step"
    if live and data.num(fid.get("replay_s")) is not None and data.num(fid.get("original_s")) is not None:
        # the two times the error above is of: a card that set -28.2% beside the replay's own timed run (60.9 ms)
        # and capture.json's step (8.85 ms) contradicted itself
        h.figures.append(Figure("replay iteration", fmt.duration(data.num(fid["replay_s"])),
                                "the replay timed alternately with the live step, same rounds"))
        h.figures.append(Figure("live step", fmt.duration(data.num(fid["original_s"])),
                                "the original step timed alternately with the replay, same rounds"))
        return _coverage(h, cov_n, cov_t)
    if rt is not None:
        h.figures.append(Figure("iteration time", fmt.duration(rt), "median wall time of one replayed iteration"))
    if ot is not None:
        h.figures.append(Figure("original step", fmt.duration(ot), "the captured step's time, same machine"))
    return _coverage(h, cov_n, cov_t)


def _coverage(h: Headline, cov_n: float | None, cov_t: float | None) -> Headline:
    if cov_n is not None:
        complete = cov_n >= 1.0
        text = "complete" if complete else f"coverage {fmt.percent(cov_n)}"
        hint = "replayed top-level ops / all" + (f"; by time {fmt.percent(cov_t)}" if cov_t is not None else "")
        h.badges.append(Badge(text, "good" if complete else "warn", hint))
    return h


def _fidelity_badges(fid: dict, h: Headline) -> None:
    """What the replay's fidelity verdict (``replay/headline.judge``) says about its error, as badges."""
    spread = max((x for x in (data.num(fid.get("reference_spread")), data.num(fid.get("replay_spread")))
                  if x is not None), default=None)
    if fid.get("verdict") == "noisy" and spread is not None:
        h.badges.append(Badge("error within noise", "warn", f"the measurement moved {fmt.percent(spread)} between "
                              "its own samples, more than the error: noise, not a measured error of the replay"))
    drift = data.num(fid.get("drift"))
    if fid.get("capture_error_is_drift") and drift is not None:
        h.badges.append(Badge("capture.json drifted", "warn", f"the live original ran {fmt.percent(drift, signed=True)}"
                              " against capture.json's step: an error against capture.json is the machine's drift"))
    over = data.num(fid.get("ops_alone_over_reference"))
    if fid.get("ops_alone_exceed_reference") and over is not None:
        h.badges.append(Badge("ops alone exceed the aim", "warn", f"the replayed ops alone take {over:.3g}x what "
                              "they are compared with: the error is the aim's or the ops', not the gaps'"))


def _llm(rec: RunRecord) -> Headline:
    h = _base(rec, "LLM bench")
    load = data.offered_load(rec)
    bits = [f"{data.model_name(rec) or 'a model'} via {data.backend(rec) or 'a backend'}"]
    if data.scenario(rec):
        bits.append(f"{data.scenario(rec)} scenario")
    if load is not None:
        bits.append(f"at {fmt.rate(load[0], 'req/s')}" if "rate" in load[1] else f"concurrency {fmt.number(load[0])}")
    n = data.config_value(rec, "num_requests")
    if n:
        bits.append(f"{fmt.number(n)} requests")
    h.what = ", ".join(bits)
    _latency_figures(rec, h)
    _request_badges(rec, h)
    return h


def _latency_figures(rec: RunRecord, h: Headline, throughput: bool = True, source: str = "") -> None:
    """Throughput and TTFT / TPOT p99; ``source`` names where they come from (``client`` beside LoadGen's)."""
    tp = data.throughput(rec) if throughput else {}
    if "output_tokens_per_s" in tp:
        h.figures.append(Figure("output throughput" + _src(source), fmt.rate(tp["output_tokens_per_s"], "tok/s"),
                                f"requests: {fmt.rate(tp.get('requests_per_s'), 'req/s')}"
                                if "requests_per_s" in tp else ""))
    elif "requests_per_s" in tp:
        h.figures.append(Figure("throughput" + _src(source), fmt.rate(tp["requests_per_s"], "req/s")))
    _p99_figures(h, data.percentiles(rec), source, CLIENT_HINT if source == "client" else "")


LOADGEN_HINT = "LoadGen's own figure, from mlperf_log_detail.txt"
CLIENT_HINT = "benchmint's client-side measurement of the same requests"


def _src(source: str) -> str:
    return f" ({source})" if source else ""


def _p99_figures(h: Headline, pct: dict[str, dict[str, float]], source: str, hint: str) -> None:
    for metric, name in (("ttft_s", "TTFT p99"), ("tpot_s", "TPOT p99")):
        p = pct.get(metric, {})
        if "p99" in p:
            extra = f"p50 {fmt.duration(p['p50'])}" if "p50" in p else ""
            h.figures.append(Figure(name + _src(source), fmt.duration(p["p99"]),
                                    "; ".join(x for x in (hint, extra) if x)))


def _request_badges(rec: RunRecord, h: Headline) -> None:
    fr = data.requests_failed(rec)
    if fr is not None:
        failed, done = fr
        h.badges.append(Badge(f"{failed} failed" if failed else f"{done} ok", "bad" if failed else "good",
                              f"{done} requests completed, {failed} failed"))
    cb = data.client_bound(rec)
    if cb is not None and cb[0]:
        h.badges.append(Badge("client-bound", "warn", "; ".join(cb[1])))


def _mlperf(rec: RunRecord) -> Headline:
    h = _base(rec, "MLPerf LoadGen")
    mode = data.config_value(rec, "mode")
    ml = (rec.workload or {}).get("mlperf_model")
    h.what = (f"{data.model_name(rec) or 'a model'}" + (f" as {ml}" if ml else "")
              + f" via {data.backend(rec) or 'a backend'}, LoadGen {data.scenario(rec) or ''}"
              + (f" ({mode})" if mode else ""))
    res = data.result_value(rec)
    if res is not None:
        h.figures.append(Figure("LoadGen result", f"{fmt.number(res[0])} {res[1]}".strip(), LOADGEN_HINT))
    # LoadGen's own p99s first, then the client's of the same requests, each named by its source
    _p99_figures(h, data.loadgen_percentiles(rec), "LoadGen", LOADGEN_HINT)
    # LoadGen's result is the throughput said once
    _latency_figures(rec, h, throughput=res is None, source="client" if data.is_loadgen_run(rec) else "")
    v = data.loadgen_validity(rec)
    if v is not None and v.verdict:
        h.badges = [b for b in h.badges if not b.text.startswith("status ")] if rec.status in ("ok", "invalid") \
            else h.badges
        h.badges.insert(0, Badge(v.verdict, "good" if v.verdict == "VALID" else "bad", " ".join(v.reasons)))
    _request_badges(rec, h)
    return h


def _sweep(rec: RunRecord) -> Headline:
    h = _base(rec, "peak search")
    sw = data.sweep(rec) or {}
    unit = str(sw.get("unit") or "rate")
    h.what = f"{data.model_name(rec) or 'a model'}: the highest {unit} that passes"
    criterion = f"{unit}; passes: {sw.get('criterion') or 'the latency limits'}"
    peak = data.num(sw.get("peak_rate"))
    so_far = bool(sw.get("interrupted"))
    if peak is not None:
        h.figures.append(Figure("highest passing so far" if so_far else "peak rate", fmt.number(peak, 4),
                                criterion))
    else:
        h.figures.append(Figure("peak rate", "none passed", criterion))
    trials = sw.get("trials_used", len(sw.get("curve") or []))
    h.figures.append(Figure("trials", fmt.number(trials), str(sw.get("stopped_because") or "")))
    if so_far:
        h.badges.append(Badge("interrupted", "warn", "Ctrl-C: the peak may lie higher"))
    return h


def _capture(rec: RunRecord) -> Headline:
    h = _base(rec, "capture")
    h.what = f"capture of {data.capture_target(rec) or 'a training step'}" + (
        f" on {data.device(rec)}" if data.device(rec) else "") + _threads(rec)
    t = data.timing(rec)
    if t is not None and t.median_s is not None:
        h.figures.append(Figure("step time", fmt.duration(t.median_s),
                                f"median over {t.n} steps without observers" if t.n else "median"))
    return h


def _imported(rec: RunRecord) -> Headline:
    h = _base(rec, "official MLPerf")
    src = data.mlperf_source(rec)
    round_ = f"v{src['version']}" if src.get("version") else ""
    h.what = " ".join(x for x in (f"MLPerf {round_}".strip(), src.get("division") or "", "result:",
                                  data.model_name(rec) or "?", src.get("scenario") or "") if x)
    res = data.result_value(rec)
    if res is not None:
        h.figures.append(Figure("result", f"{fmt.number(res[0])} {res[1]}".strip(), "as submitted"))
    tp = data.throughput(rec)
    for key, unit in (("output_tokens_per_s_per_accelerator", "tok/s"), ("samples_per_s_per_accelerator",
                                                                        "samples/s")):
        if key in tp:
            h.figures.append(Figure("per accelerator", fmt.rate(tp[key], unit)))
            break
    return h


def _base(rec: RunRecord, kind: str) -> Headline:
    h = Headline(run_id=rec.id, anchor=anchor(rec), label=data.label(rec), kind=kind, what="", on=on_what(rec))
    h.badges.append(_status_badge(rec))
    noise = _noise_badge(rec)
    if noise is not None:
        h.badges.append(noise)
    return h


def headline(rec: RunRecord) -> Headline:
    """The headline of one run."""
    build = {"sweep": _sweep, "imported": _imported, "capture": _capture, "replay": _replay, "mlperf": _mlperf,
             "llm": _llm}.get(data.result_kind(rec))
    if build is not None:
        return build(rec)
    h = _base(rec, rec.kind)
    h.what = data.model_name(rec) or rec.kind
    return h
