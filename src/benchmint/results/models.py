"""The typed result of every kind of run: what ``RunRecord.metrics`` holds (msgspec Structs).

One model per kind of run, filled by the measuring code (through :class:`~benchmint.results.record.RunRecord`)
and read by ``run.json``, the results store and the report:

=============  =====================  ==================================================================
kind           model                  what it holds
=============  =====================  ==================================================================
``capture``    :class:`CaptureMetrics`  the step time without observers (``step_time_s``: :class:`Timing`)
``replay``     :class:`ReplayMetrics`   the replay's fidelity figures (coverage, ``iter_time_s``, error...)
``llm``        :class:`LlmMetrics`      TTFT, TPOT, ITL, E2E (:class:`Stats`), throughput, goodput...
``mlperf``     :class:`MlperfMetrics`   LoadGen's figures (:class:`LoadgenFigures`) beside the client's
``llm``/       :class:`SweepMetrics`    a peak search (``llm sweep``): :class:`SweepSummary` with every
``mlperf``                              trial; chosen when the metrics hold a ``sweep`` block
``imported``   :class:`ImportedMetrics` an official MLPerf result: typed figures, open ``accuracy_scores``
=============  =====================  ==================================================================

The LLM models are derived from the one declaration of the LLM metrics
(:data:`benchmint.results.metric_table.LLM_METRICS`): a field per result block, statistics blocks are
:class:`Stats` (keys :data:`~benchmint.results.metric_table.STAT_KEYS`), the figures of ``requests``,
``throughput`` and ``token_counts`` are fields of their own Structs. The workload-shape blocks (``sessions``,
``windows``, ``prefix_cache``, ``client_bound``, ``goodput``) and a few documented detail blocks (per-op-type
rows, calibration, system metrics, LoadGen's effective settings) stay JSON objects inside the typed model.

A field that a run did not produce is :data:`msgspec.UNSET`: it is left out of ``run.json`` and the store (so
a record keeps exactly the keys it was given), and ``"x" in metrics`` is False. Attribute access is the way
to read a model (``rec.metrics.ttft_s.p99``); for code written against the old dicts every model also reads
like a read-only mapping (``metrics.get("ttft_s", {}).get("p99")``, ``metrics["coverage"]``, ``"sweep" in
metrics``). :func:`metrics_from_dict` builds the model of a kind from a dict: it refuses a key the model does
not declare (``strict=True``, the default, for producers) or drops it (``strict=False``, for stored records
of another minor version).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from benchmint.results.metric_table import LLM_METRICS, STAT_KEYS, TIMING_KEYS, llm_result_blocks

JSONObject = dict[str, Any]


class Model(msgspec.Struct, kw_only=True):
    """Base of every result model: a typed Struct that also reads like a read-only mapping of its set fields."""

    def __getitem__(self, key: str) -> Any:
        v = getattr(self, key, UNSET) if key in self.__struct_fields__ else UNSET
        if v is UNSET:
            raise KeyError(key)
        return v

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.__struct_fields__ and getattr(self, key) is not UNSET

    def keys(self) -> list[str]:
        return [k for k in self.__struct_fields__ if getattr(self, k) is not UNSET]

    def items(self) -> list[tuple[str, Any]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def values(self) -> list[Any]:
        return [getattr(self, k) for k in self.keys()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        """Equal to a model of the same type with the same fields, or to the dict it encodes to."""
        if isinstance(other, dict):
            return self.to_dict() == other
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> JSONObject:
        """Plain JSON-ready builtins (fields left UNSET are left out)."""
        return msgspec.to_builtins(self, enc_hook=_enc_hook)


def _enc_hook(obj: Any) -> Any:
    from benchmint.results.flatten import _default

    return _default(obj)


# ------------------------------------------------------------------------------------------ statistics
def _stats_fields(keys: tuple[str, ...], types: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(k, types.get(k, float | None), 0 if types.get(k) is int else None) for k in keys]


#: Statistics of an LLM metric over the measured requests (or chunk gaps): ``mean, p50, p90, p99, max, min,
#: std`` in the metric's unit (None when no request had the figure) and ``count``.
Stats = msgspec.defstruct("Stats", _stats_fields(STAT_KEYS, {"count": int}), bases=(Model,), kw_only=True,
                          module=__name__)
Stats.__doc__ = "Statistics of an LLM metric: mean, p50, p90, p99, max, min, std (None without values), count."

#: A timing loop's summary (``benchmint.core.stats.timing_summary``): ``median, p10, p90`` seconds, ``n``
#: samples, interquartile range ``iqr`` and ``noisy`` (IQR over 10% of the median).
Timing = msgspec.defstruct("Timing", _stats_fields(TIMING_KEYS, {"n": int, "noisy": bool | None}), bases=(Model,),
                           kw_only=True, module=__name__)
Timing.__doc__ = "A timing loop's summary: median, p10, p90 (s), n samples, iqr (s), noisy (IQR > 10% median)."


# ------------------------------------------------------------------------------------------ LLM (derived)
_SHAPE_TYPES: dict[str, Any] = {
    "stats": Stats, "timing": Timing, "float": float | None, "int": int | None, "bool": bool | None,
    "str": str | None, "object": JSONObject | None, "list": list[Any] | None,
}


def _camel(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def _llm_fields() -> list[tuple[str, Any, Any]]:
    fields: list[tuple[str, Any, Any]] = []
    for block in llm_result_blocks():
        members = [m for m in LLM_METRICS if m.block == block]
        if len(members) == 1 and members[0].key == block:
            typ = _SHAPE_TYPES[members[0].shape]
        else:  # a block of figures (requests.completed, throughput.requests_per_s, ...): a Struct of its own
            sub = [(m.path[1], _SHAPE_TYPES[m.shape] | UnsetType, UNSET) for m in members]
            typ = msgspec.defstruct(f"Llm{_camel(block)}", sub, bases=(Model,), kw_only=True, module=__name__)
            typ.__doc__ = f"The ``{block}`` block of an LLM result: " + ", ".join(
                f"``{m.path[1]}`` ({m.name}{', ' + m.unit if m.unit else ''})" for m in members) + "."
            globals()[typ.__name__] = typ
        fields.append((block, typ | UnsetType, UNSET))
    return fields


#: The metrics of an ``llm bench`` run, one field per result block of
#: :data:`~benchmint.results.metric_table.LLM_METRICS` (in its order): ``requests`` (:class:`LlmRequests`),
#: ``ttft_s``, ``ttft_from_send_s``, ``tpot_s``, ``itl_s``, ``e2e_s``, ``e2e_from_send_s``, ``send_lag_s``
#: (:class:`Stats`), ``throughput`` (:class:`LlmThroughput`), ``goodput_requests_per_s``, ``duration_s``,
#: ``output_tokens_total``, ``input_tokens_total``, ``input_tokens_known``, ``token_counts``
#: (:class:`LlmTokenCounts`), ``latency_anchor``, ``goodput``, ``client_bound``, ``sessions``, ``windows``,
#: ``prefix_cache``.
LlmMetrics = msgspec.defstruct("LlmMetrics", _llm_fields(), bases=(Model,), kw_only=True, module=__name__)
LlmMetrics.__doc__ = ("The metrics of an llm bench run: one field per result block declared in "
                      "benchmint.results.metric_table.LLM_METRICS (TTFT, TPOT, ITL, E2E as Stats, throughput, ...).")
LlmRequests: type = globals()["LlmRequests"]
LlmThroughput: type = globals()["LlmThroughput"]
LlmTokenCounts: type = globals()["LlmTokenCounts"]

#: An MLPerf run's client-side figures: the same as ``llm bench``'s, plus what they are anchored to.
MlperfClientMetrics = msgspec.defstruct(
    "MlperfClientMetrics",
    [("anchored_to", str | None | UnsetType, UNSET), ("unavailable", str | None | UnsetType, UNSET)],
    bases=(LlmMetrics,), kw_only=True, module=__name__)
MlperfClientMetrics.__doc__ = ("benchmint's llm bench metrics of the requests LoadGen issued (LlmMetrics) plus "
                               "anchored_to (LoadGen's issue time) or unavailable (why there are none).")


# ------------------------------------------------------------------------------------------ capture
class CaptureMetrics(Model):
    """``benchmint capture``: the captured loop's step time measured without observers."""

    step_time_s: Timing | UnsetType = UNSET  # median, p10, p90, n, iqr, noisy of the un-observed steps
    recorded_step_time_s: list[float] | UnsetType = UNSET  # each recorded step's time with observers on
    how_measured: str | UnsetType = UNSET
    threads: int | None | UnsetType = UNSET
    device: str | None | UnsetType = UNSET
    recording_cost: JSONObject | None | UnsetType = UNSET  # the recorded and the idle-recorder steps' cost
    every: int | None | UnsetType = UNSET  # --every N: one step recorded in every N
    iterations: list[str] | None | UnsetType = UNSET  # with --every: the folder of each recorded step


# ------------------------------------------------------------------------------------------ replay
class ReplayMetrics(Model):
    """``benchmint replay``: fidelity figures of one replay (one rank, or several with ``--ranks``).

    The figures of :data:`benchmint.results.metric_table.REPLAY_FIGURES` are fields here under the same names
    (a test checks it); the rest say what was replayed and how.
    """

    schema_version: str | UnsetType = UNSET  # the replay result's own version
    # what was replayed
    trace: str | None | UnsetType = UNSET
    kineto: str | None | UnsetType = UNSET
    capture_json: str | None | UnsetType = UNSET
    trace_schema: str | None | UnsetType = UNSET
    trace_damage: str | None | UnsetType = UNSET  # what the recording lost (trace/damage.py): not the step
    ranks: int | None | UnsetType = UNSET  # --ranks N: the number of ranks
    rank: int | None | UnsetType = UNSET
    backend: str | None | UnsetType = UNSET  # --ranks: the process group's backend (gloo, nccl)
    ops_total: int | None | UnsetType = UNSET
    ops_replayed: int | None | UnsetType = UNSET
    coverage: float | None | UnsetType = UNSET  # replayed top-level ops / all (count)
    coverage_rank: int | None | UnsetType = UNSET
    coverage_time: float | None | UnsetType = UNSET  # recorded duration of replayed ops / all ops
    slowest_rank: int | None | UnsetType = UNSET
    # timings
    iter_time_s: Timing | UnsetType = UNSET  # one replayed iteration
    original_iter_time_s: float | None | UnsetType = UNSET  # the captured step (capture.json)
    original_iter_time_estimated_s: float | None | UnsetType = UNSET
    estimate_note: str | None | UnsetType = UNSET
    recorded_step_span_s: float | None | UnsetType = UNSET
    error: float | None | UnsetType = UNSET  # (replay - original) / original
    error_note: str | None | UnsetType = UNSET
    skipped: list[JSONObject] | UnsetType = UNSET  # ops not replayed: op, reason, count
    substituted: list[JSONObject] | UnsetType = UNSET
    retyped: list[JSONObject] | UnsetType = UNSET  # ops whose replayed output dtype is not the recorded one
    # ops replayed in place of a composite, by its name: the original called them from C++ inside it
    opened_composites: JSONObject | None | UnsetType = UNSET
    peak_memory_bytes: int | None | UnsetType = UNSET
    peak_memory_how: str | None | UnsetType = UNSET
    peak_rss_bytes: int | None | UnsetType = UNSET
    peak_rss_sum_bytes: int | None | UnsetType = UNSET
    input_bytes: int | None | UnsetType = UNSET
    wall_time_s: float | None | UnsetType = UNSET
    device: str | None | UnsetType = UNSET
    trace_devices: list[str] | UnsetType = UNSET
    threads: int | None | UnsetType = UNSET
    gaps: str | None | UnsetType = UNSET
    gap_target: str | None | UnsetType = UNSET
    gap_time_s: float | None | UnsetType = UNSET
    replay_ops_only_s: float | None | UnsetType = UNSET
    kineto_matched: float | bool | None | UnsetType = UNSET
    compiled_regions: JSONObject | None | UnsetType = UNSET  # torch.compile'd regions: share, time outside ops
    standins: JSONObject | None | UnsetType = UNSET  # skipped ops' stand-ins: recorded and spent time (replay/standins)
    warmup: int | None | UnsetType = UNSET
    iters: int | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
    allocator: str | None | UnsetType = UNSET  # replay/allocator.settle_malloc: what the host allocator ran under
    # replay/conditions.snapshot: threads, allocator, grad mode, collector around the timed loop
    timing_conditions: JSONObject | None | UnsetType = UNSET
    plan_time_s: float | None | UnsetType = UNSET
    plan_check_time_s: float | None | UnsetType = UNSET  # the real pass over the compiled iteration ending planning
    plan_dry_run: JSONObject | None | UnsetType = UNSET  # how each op was tried: meta, or for real (and why)
    autograd_graph: JSONObject | None | UnsetType = UNSET  # a training step's forward graph (replay/phases.py)
    calibration: JSONObject | None | UnsetType = UNSET  # the observer-cost calibration (replay/fidelity.py)
    index_distribution: JSONObject | None | UnsetType = UNSET  # made-up lookup indices' spread (replay/index_skew)
    how_measured: str | None | UnsetType = UNSET
    largest_contributors: list[JSONObject] | UnsetType = UNSET
    system_metrics: JSONObject | None | UnsetType = UNSET  # core/sysmetrics.side_by_side
    pace: JSONObject | None | UnsetType = UNSET  # core/pace: the host's pace beside the capture and the timed run
    iteration: int | None | UnsetType = UNSET  # the trace's iteration that was replayed
    tensor_memory_estimate: JSONObject | None | UnsetType = UNSET
    selection: JSONObject | None | UnsetType = UNSET  # --select
    what_if: JSONObject | None | UnsetType = UNSET  # --what-if
    scale: JSONObject | None | UnsetType = UNSET  # --scale batch=F|seq=F: recorded and scaled sizes, what changed
    collectives: JSONObject | None | UnsetType = UNSET  # --ranks: collectives replayed, bytes, time per rank
    per_rank: list[JSONObject] | UnsetType = UNSET
    hosts: list[str] | UnsetType = UNSET  # --ranks / torchrun: the hosts the ranks ran on
    errors_per_rank: list[float | None] | UnsetType = UNSET  # each rank's error (gaps settled with collectives)
    gaps_settled_with_collectives: bool | None | UnsetType = UNSET  # a rank's gaps were settled with them live
    gaps_aimed_without_communication: bool | None | UnsetType = UNSET  # gaps aimed at the CPU estimate, comm live
    gap_settling: str | None | UnsetType = UNSET  # alone, live (ranks, collectives running) or together (ranks)
    gaps_from: JSONObject | None | UnsetType = UNSET  # --gaps-from: the gaps file and the replay that settled them
    cpu_time_per_iter_s: float | None | UnsetType = UNSET  # the process's CPU seconds per timed iteration
    original_cpu_time_per_step_s: float | None | UnsetType = UNSET  # capture.json's, per un-observed step
    original_threads: int | None | UnsetType = UNSET  # capture.json's intra-op threads
    mode: str | None | UnsetType = UNSET  # --mode: full, compute (no collectives) or comm (collectives alone)
    compared_alternately: JSONObject | None | UnsetType = UNSET  # demo: original and replay timed in turns
    original_iter_time_iqr_ratio: float | None | UnsetType = UNSET  # capture.json's step times: IQR / median
    fidelity: JSONObject | None | UnsetType = UNSET  # headline: the measurement, noise, ops alone past it
    per_op_original_how: str | None | UnsetType = UNSET  # per_op_type's original_s: corrected or as recorded
    exported: JSONObject | None | UnsetType = UNSET  # a replay package's origin
    runner: JSONObject | None | UnsetType = UNSET
    per_op_type: list[JSONObject] | UnsetType = UNSET  # op type, count, original and replay time, error


# ------------------------------------------------------------------------------------------ mlperf
Percentiles = dict[str, float | None]  # LoadGen's latency percentiles: p50, p90, p95, p97, p99, p99_9, mean, min, max


class LoadgenFigures(Model):
    """What MLPerf LoadGen measured and judged (parsed from ``mlperf_log_detail.txt``)."""

    validity: str | None | UnsetType = UNSET  # VALID / INVALID
    scenario: str | None | UnsetType = UNSET
    mode: str | None | UnsetType = UNSET
    samples_per_s: float | None | UnsetType = UNSET
    tokens_per_s: float | None | UnsetType = UNSET
    scheduled_samples_per_s: float | None | UnsetType = UNSET
    ttft_s: Percentiles | None | UnsetType = UNSET
    tpot_s: Percentiles | None | UnsetType = UNSET
    latency_s: Percentiles | None | UnsetType = UNSET
    limits: JSONObject | None | UnsetType = UNSET  # ttft_s, tpot_s, latency_s, percentile, use_token_latencies
    query_count: int | None | UnsetType = UNSET
    overlatency_query_count: int | None | UnsetType = UNSET
    constraints: JSONObject | None | UnsetType = UNSET  # perf_constraints_met, min_duration_met, ...
    loadgen_invalid_reason: str | None | UnsetType = UNSET
    early_stopping: JSONObject | None | UnsetType = UNSET
    effective: JSONObject | None | UnsetType = UNSET  # LoadGen's effective settings
    generated_query_count: int | None | UnsetType = UNSET
    generated_query_duration_s: float | None | UnsetType = UNSET
    num_errors: int | None | UnsetType = UNSET
    errors: list[Any] | UnsetType = UNSET
    warnings: list[Any] | UnsetType = UNSET
    loadgen_version: str | None | UnsetType = UNSET
    measured_by: str | None | UnsetType = UNSET
    invalid_reasons: list[str] | UnsetType = UNSET  # why INVALID, in plain words
    log_dir: str | None | UnsetType = UNSET
    logs: list[str] | UnsetType = UNSET


class RequestCount(Model):
    """Requests of a run: completed, failed, and the failures by kind."""

    completed: int | None | UnsetType = UNSET
    failed: int | None | UnsetType = UNSET
    errors: dict[str, int] | None | UnsetType = UNSET


class Throughput(Model):
    """Throughput in the names official MLPerf results use (ours and imported ones sit in the same columns)."""

    output_tokens_per_s: float | None | UnsetType = UNSET
    output_tokens_per_s_per_accelerator: float | None | UnsetType = UNSET
    samples_per_s: float | None | UnsetType = UNSET
    samples_per_s_per_accelerator: float | None | UnsetType = UNSET
    source: str | None | UnsetType = UNSET  # e.g. "LoadGen"


class ResultValue(Model):
    """An MLPerf result as stated: the value and its unit (``Tokens/s``, ``Samples/s``, ``Latency (ms)``)."""

    value: float | None | UnsetType = UNSET
    unit: str | None | UnsetType = UNSET


class MlperfMetrics(Model):
    """``benchmint llm mlperf``: LoadGen's figures and verdict beside the client's, accuracy, energy, cost."""

    loadgen: LoadgenFigures | UnsetType = UNSET
    client: MlperfClientMetrics | UnsetType = UNSET  # type: ignore[valid-type]
    accuracy: JSONObject | None | UnsetType = UNSET  # ROUGE against the official targets (llm/accuracy.py)
    energy: JSONObject | None | UnsetType = UNSET  # NVML / RAPL around the performance test
    cost: JSONObject | None | UnsetType = UNSET  # $ per million tokens at --price
    requests: RequestCount | UnsetType = UNSET
    throughput: Throughput | UnsetType = UNSET
    result: ResultValue | UnsetType = UNSET
    interrupted: JSONObject | None | UnsetType = UNSET  # Ctrl-C: what was completed before the stop


# ------------------------------------------------------------------------------------------ sweep
class SweepTrial(Model):
    """One trial of a peak search: the rate it ran at, passed or not and why, and its figures."""

    rate: float | None | UnsetType = UNSET
    passed: bool | None | UnsetType = UNSET
    metrics: JSONObject | UnsetType = UNSET  # ttft_p99_s, tpot_p99_s, achieved rate, ...
    reason: str | None | UnsetType = UNSET
    run_dir: str | None | UnsetType = UNSET


class SweepSummary(Model):
    """A peak search (``benchmint llm sweep``): the peak, every trial, why it stopped."""

    peak_rate: float | None | UnsetType = UNSET
    trials_used: int | None | UnsetType = UNSET
    bracket: JSONObject | None | UnsetType = UNSET  # passed, failed: the rates around the peak
    stopped_because: str | None | UnsetType = UNSET
    curve: list[SweepTrial] | UnsetType = UNSET  # trials sorted by rate
    order: list[float] | UnsetType = UNSET  # the rates in the order they ran
    interrupted: bool | None | UnsetType = UNSET
    unit: str | None | UnsetType = UNSET
    criterion: str | None | UnsetType = UNSET


class SweepMetrics(Model):
    """A peak search's record (kind ``llm`` or ``mlperf``): the search; each trial stored its own run."""

    sweep: SweepSummary | UnsetType = UNSET


# ------------------------------------------------------------------------------------------ imported
class ImportedMetrics(Model):
    """An official MLPerf result (``benchmint results import``): typed figures; ``accuracy_scores`` is open
    (one score per metric the submission names: ``ROUGE1``, ``TOKENS_PER_SAMPLE``...)."""

    result: ResultValue | UnsetType = UNSET
    result_per_accelerator: float | None | UnsetType = UNSET
    throughput: Throughput | UnsetType = UNSET
    latency_s: Percentiles | None | UnsetType = UNSET  # p90 (SingleStream) or p99 (MultiStream)
    power_w: float | None | UnsetType = UNSET
    energy_per_sample_j: float | None | UnsetType = UNSET
    accuracy: float | str | None | UnsetType = UNSET
    accuracy_scores: dict[str, Any] | None | UnsetType = UNSET
    errors: int | None | UnsetType = UNSET


# ------------------------------------------------------------------------------------------ by kind
MODELS: dict[str, type[Model]] = {
    "capture": CaptureMetrics, "replay": ReplayMetrics, "llm": LlmMetrics, "mlperf": MlperfMetrics,
    "sweep": SweepMetrics, "imported": ImportedMetrics,
}
RunMetrics = Model  # what RunRecord.metrics holds: one of MODELS' values


def result_kind(kind: str, metrics: Any) -> str:
    """The kind of result a record of run kind ``kind`` holds: ``sweep`` for a peak search (metrics with a
    ``sweep`` block), else the run kind."""
    if kind in ("llm", "mlperf") and (isinstance(metrics, SweepMetrics)
                                      or (isinstance(metrics, dict) and "sweep" in metrics)):
        return "sweep"
    return kind


class UnknownField(ValueError):
    """A producer gave a figure that its kind's model does not declare."""


def metrics_from_dict(kind: str, d: Any, *, strict: bool = True) -> Model:
    """The typed model of a record's metrics. ``strict``: a key the model does not declare raises
    :class:`UnknownField` (declare it here); else such keys are dropped (a record of a newer minor version).
    A value of the wrong type raises :class:`msgspec.ValidationError` (a ``ValueError``)."""
    if isinstance(d, Model):
        return d
    model = MODELS[result_kind(kind, d)]
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"metrics of a {kind} run must be an object, not {type(d).__name__}")
    from benchmint.results.flatten import json_ready

    plain = json_ready(d)
    out = msgspec.convert(plain, model)
    if strict:
        missing = _dropped(plain, out.to_dict())
        if missing:
            raise UnknownField(f"{model.__name__} has no field {missing!r}: declare it in "
                               "benchmint/results/models.py (or benchmint/results/metric_table.py for LLM metrics)")
    return out


def _dropped(given: Any, kept: Any, path: str = "") -> str | None:
    """The first key path of ``given`` that ``kept`` lost (None when none)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for k, v in given.items():
            p = f"{path}.{k}" if path else str(k)
            if k not in kept:
                return p
            lost = _dropped(v, kept[k], p)
            if lost:
                return lost
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (a, b) in enumerate(zip(given, kept, strict=False)):
            lost = _dropped(a, b, f"{path}[{i}]")
            if lost:
                return lost
    return None


__all__ = [
    "Model", "Stats", "Timing", "LlmMetrics", "LlmRequests", "LlmThroughput", "LlmTokenCounts",
    "MlperfClientMetrics", "CaptureMetrics", "ReplayMetrics", "LoadgenFigures", "RequestCount", "Throughput",
    "ResultValue", "MlperfMetrics", "SweepTrial", "SweepSummary", "SweepMetrics", "ImportedMetrics", "MODELS",
    "result_kind", "metrics_from_dict", "UnknownField",
]
