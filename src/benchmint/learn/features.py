"""Features for the predictors, from RunRecord columns (never free text beyond names matched to tables).

Input rows come in one of two layouts, detected by their column names:

- the flattened ``runs`` table of the results store (``workload__model_name``, ``system__accelerator__name``, ...),
  which holds our own runs and imported official results alike;
- the Open MLPerf dataset's column names (``model.name``, ``system.accelerator.name``, ...).

:func:`canonical_frame` maps both to one set of canonical columns; :func:`build_features` joins the accelerator
spec table (``specs.py``) and the model table (``models.py``) and adds the roofline prior (``roofline.py``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmint.core.errors import UserError
from benchmint.learn.models import find_model, model_family
from benchmint.learn.roofline import guessed_shape, roofline
from benchmint.learn.specs import find_accelerator, normalize_precision
from benchmint.learn.tasks import find_task


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    description: str
    columns: tuple[str, ...]  # where the value is, first found wins (flattened runs, then Open MLPerf names)
    higher_is_better: bool = True


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("tokens_per_s_per_accelerator", "tokens/s per accelerator",
           "output tokens per second divided by the number of accelerators (official and own LLM runs)",
           ("metrics__throughput__output_tokens_per_s_per_accelerator", "metrics__result_per_accelerator",
            "metrics.result_per_accelerator", "tokens_per_s_per_accelerator")),
    Target("ttft_p99_s", "s", "99th percentile time to first token (own LLM runs)",
           ("metrics__ttft_s__p99", "ttft_p99_s"), higher_is_better=False),
    Target("tpot_p99_s", "s", "99th percentile time per output token (own LLM runs)",
           ("metrics__tpot_s__p99", "tpot_p99_s"), higher_is_better=False),
    Target("requests_per_s", "requests/s", "completed requests per second (own LLM runs)",
           ("metrics__throughput__requests_per_s", "requests_per_s")),
    Target("iteration_s", "s", "replayed iteration time (replay runs)",
           ("metrics__iter_time_s__median", "metrics__replay__iteration_s", "metrics__iteration_s", "metrics__replay_s",
            "iteration_s"),
           higher_is_better=False),
)}

CATEGORICAL = ("model_family", "task", "precision", "math_precision", "accelerator", "acc_vendor", "engine", "scenario", "latency_class",
               "cpu_vendor", "division")
# the engine's version is a number (a release never seen in training sorts next to its neighbours, where a
# category would be unknown): major + minor / 100
NUMERIC = ("engine_version", "params_b", "active_params_b", "layers", "hidden", "kv_heads", "experts", "accelerator_count", "nodes",
           "input_len", "output_len", "concurrency", "rate", "bytes_per_param", "acc_peak_tflops",
           "acc_mem_bw_gbs", "acc_mem_gb", "acc_interconnect_gbs", "acc_tdp_w", "acc_launch_year",
           "log_roofline", "mem_fill", "precision_adjusted", "acc_flops_per_byte", "roof_batch", "roof_replica",
           "roof_memory_share", "roof_prefill_share", "roof_comm_share", "roof_decode_intensity")
# the accelerator's raw magnitudes: the power-law (linear on logs) part of the learner uses them, so that an
# accelerator never seen in training sits between its neighbours; the trees do not (each accelerator is one point
# in this space, so splits on them would memorize accelerators), they see the roofline's dimensionless shares and
# the power limit (TDP) and generation (launch date)
RAW_SPECS = ("acc_peak_tflops", "acc_mem_bw_gbs", "acc_mem_gb", "acc_interconnect_gbs", "acc_flops_per_byte")
# what the default feature list holds: physically meaningful columns; ids and names of submitters/systems are
# used for grouping and reports only (a model must not memorize who submitted). The raw spec magnitudes reach the
# learner through the roofline only (its ceiling and the shares of its step): as features of their own, the linear
# part fit a power law through a dozen accelerators that put a held-out one (L40S, PCIe-linked) at a fifth of its
# measured figure
DEFAULT_FEATURES = CATEGORICAL + tuple(c for c in NUMERIC if c not in RAW_SPECS)
# the columns a row needs for a throughput prediction to mean anything
REQUIRED = {"tokens_per_s_per_accelerator": ("model_family", "accelerator")}

# canonical column -> source columns (flattened runs first, then Open MLPerf), first non-null wins
SOURCES: dict[str, tuple[str, ...]] = {
    "id": ("id", "submission.debug_uid"),
    "model_name": ("workload__model_name", "model.name", "model_name", "model"),
    "task": ("workload__mlperf_model", "model.mlperf_name", "mlperf_model", "task"),
    "params": ("workload__parameter_count", "workload__parameters", "parameter_count"),
    "params_billion": ("model.number_of_parameters", "params_b"),
    "layers": ("workload__num_layers", "workload__layers", "workload__num_hidden_layers", "layers"),
    "hidden": ("workload__hidden_size", "hidden"),
    "kv_heads": ("workload__num_key_value_heads", "kv_heads"),
    "experts": ("workload__num_experts", "experts"),
    "precision": ("workload__dtype", "model.weight_data_types", "precision", "dtype"),
    "accelerator_name": ("system__accelerator__name", "system.accelerator.name", "accelerator"),
    "accelerator_count": ("system__accelerator__count", "system.accelerator.total_count", "accelerator_count"),
    "nodes": ("system__number_of_nodes", "system.number_of_nodes", "nodes"),
    "cpu_model": ("system__cpu_model", "system.cpu.model", "cpu_model"),
    "cpu_vendor": ("system__cpu_vendor", "system.cpu.vendor", "cpu_vendor"),
    "framework": ("system__framework", "software.framework", "system__engine", "config__backend", "engine"),
    "scenario": ("config__scenario", "workload__scenario", "submission.scenario", "scenario"),
    "input_len": ("workload__input_tokens_mean", "input_len", "input_tokens"),
    "output_len": ("workload__max_tokens_mean", "output_len", "output_tokens"),
    "concurrency": ("config__concurrency", "concurrency", "batch_size", "config__max_batch_size"),
    "rate": ("config__rate", "rate"),
    "round": ("config__mlperf_version", "benchmark.version", "round"),
    "division": ("config__division", "submission.division", "division"),
    "submitter": ("system__organization", "submission.organization", "submitter"),
    "system_name": ("system__name", "system.name", "system_name", "system__hostname"),
    "kind": ("kind",),
}

_ENGINES = (("tensorrt", "tensorrt"), ("trt", "tensorrt"), ("vllm", "vllm"), ("sglang", "sglang"),
            ("nim", "nim"), ("tgi", "tgi"), ("llama.cpp", "llama.cpp"), ("transformers", "transformers"),
            ("openai-http", "http"), ("rocm", "rocm"), ("jetpack", "tensorrt"), ("cuda", "cuda"))


def layout(df: pd.DataFrame) -> str:
    cols = set(df.columns)
    if any("." in c for c in cols) and "system.accelerator.name" in cols | {c for c in cols if c.startswith("model.")}:
        return "openmlperf"
    if any("__" in c for c in cols):
        return "runs"
    return "canonical"


def _first(df: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for n in names:
        if n in df.columns:
            col = df[n].astype(object).where(df[n].notna(), None)
            out = out.where(out.notna(), col)
    return out


def usable_columns(df: pd.DataFrame) -> list[str]:
    """The input columns the feature builder reads (to tell a file with none of them from a file with some)."""
    known = {n for names in SOURCES.values() for n in names} | {n for t in TARGETS.values() for n in t.columns}
    return [c for c in df.columns if c in known and c not in ("id", "kind")]


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype(float)


def parse_engine(text: Any) -> tuple[str | None, str | None]:
    """``"TensorRT 10.8, CUDA 12.8"`` -> ``("tensorrt", "tensorrt 10.8")``; ``"vLLM v0.7.3"`` -> ``("vllm",
    "vllm 0.7")``."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None, None
    t = str(text).lower()
    for key, name in _ENGINES:
        i = t.find(key)
        if i >= 0:
            m = re.search(r"v?(\d+)\.(\d+)", t[i + len(key):])
            return name, f"{name} {m.group(1)}.{m.group(2)}" if m else name
    return t.split()[0] if t.split() else None, None


def _version_number(release: str | None) -> float:
    m = re.search(r"(\d+)\.(\d+)$", release or "")
    return float(m.group(1)) + float(m.group(2)) / 100 if m else float("nan")


def _scenario(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    t = str(v).lower().replace("-", "").replace("_", "").replace(" ", "")
    return {"offline": "offline", "server": "server", "singlestream": "singlestream",
            "multistream": "multistream", "interactive": "interactive"}.get(t, t)


def _name_precision(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    m = re.search(r"(?<![a-z0-9])(fp8|fp4|nvfp4|mxfp4|int4|int8|w4a16|w8a8)(?![0-9])", name.lower())
    return normalize_precision(m.group(1)) if m else None


def canonical_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The canonical columns (see :data:`SOURCES`) of rows in either input layout, index preserved."""
    src = {k: _first(df, v) for k, v in SOURCES.items()}
    out = pd.DataFrame(index=df.index)
    out["id"] = src["id"].astype(object)
    out["kind"] = src["kind"]
    out["model_name"] = src["model_name"]
    out["model_family"] = [model_family(n) for n in src["model_name"]]
    facts = [find_model(n) for n in src["model_name"]]
    params_b = _num(src["params"]) / 1e9
    params_b = params_b.where(params_b.notna(), _num(src["params_billion"]))
    table = pd.DataFrame([f.facts if f else {} for f in facts], index=df.index)
    for col in ("params_b", "active_params_b", "layers", "hidden", "heads", "kv_heads", "head_dim", "kv_elems",
                "experts", "active_experts"):
        table_col = _num(table[col]) if col in table else pd.Series(np.nan, index=df.index)
        own = params_b if col == "params_b" else (_num(src[col]) if col in src else None)
        out[col] = own.where(own.notna(), table_col) if own is not None else table_col
    # a model whose layers and hidden size neither the record nor the table gives: the shape of a dense decoder of
    # its size (learn/roofline.py), so that its roofline and its features are those of a model, not of nothing
    # (a count of 0 or less is no model: learn predict gives that row an error)
    guess = (out["params_b"] > 0) & (out["layers"].isna() | out["hidden"].isna())
    out["shape_guessed"] = guess
    if guess.any():
        shapes = [guessed_shape(p) for p in out.loc[guess, "params_b"]]
        for k, col in enumerate(("layers", "hidden", "heads", "kv_heads")):  # what the record gives is kept
            out.loc[guess, col] = out.loc[guess, col].fillna(pd.Series([sh[k] for sh in shapes],
                                                                       index=out.index[guess]))
        out.loc[guess, "head_dim"] = out.loc[guess, "head_dim"].fillna(out.loc[guess, "hidden"]
                                                                       / out.loc[guess, "heads"])
    # the record's own parameter count, with the table's active share for mixture-of-experts models
    share = (table["active_params_b"] / table["params_b"]) if "params_b" in table else None
    out["active_params_b"] = out["active_params_b"].where(
        out["active_params_b"].notna(), out["params_b"] * (share if share is not None else 1.0))
    if share is not None:
        out["active_params_b"] = np.where(share.notna(), out["params_b"] * share.fillna(1.0), out["params_b"])
    else:
        out["active_params_b"] = out["params_b"]
    out["architecture"] = [f.architecture if f else None for f in facts]
    # a quantization the model's name states (``...-fp8_dyn``, ``...-FP8-dynamic``) wins over the weight data type
    # field, which submissions fill in inconsistently
    out["precision"] = [_name_precision(n) or normalize_precision(p)
                        for n, p in zip(src["model_name"], src["precision"], strict=True)]
    out["accelerator_raw"] = src["accelerator_name"]
    out["accelerator_count"] = _num(src["accelerator_count"])
    out["nodes"] = _num(src["nodes"]).fillna(1.0)
    out["cpu_model"] = src["cpu_model"]
    out["cpu_vendor"] = [(str(v).strip().lower() or None) if v is not None else
                         (("amd" if "amd" in str(m).lower() or "epyc" in str(m).lower() else
                           "intel" if "intel" in str(m).lower() or "xeon" in str(m).lower() else
                           "arm" if any(k in str(m).lower() for k in ("grace", "neoverse", "arm")) else None)
                          if m is not None else None)
                         for v, m in zip(src["cpu_vendor"], src["cpu_model"], strict=True)]
    engines = [parse_engine(f) for f in src["framework"]]
    out["engine"] = [e[0] for e in engines]
    out["engine_release"] = [e[1] for e in engines]
    out["engine_version"] = [_version_number(e[1]) for e in engines]
    out["scenario"] = [_scenario(s) for s in src["scenario"]]
    out["latency_class"] = ["interactive" if n is not None and "interactive" in str(n).lower() else "standard"
                            for n in src["model_name"]]
    for col in ("input_len", "output_len", "concurrency", "rate"):
        out[col] = _num(src[col])
    # the task's lengths where the run does not record its own (official results): the benchmark name first, the
    # model name for records without one
    tasks = [find_task(t) or find_task(m) for t, m in zip(src["task"], src["model_name"], strict=True)]
    out["task"] = [t.task if t else None for t in tasks]
    for col, attr in (("input_len", "input_tokens"), ("output_len", "output_tokens")):
        table_len = pd.Series([getattr(t, attr) if t else None for t in tasks], index=df.index, dtype=float)
        out[col] = out[col].where(out[col].notna(), table_len)
    out["round"] = src["round"].map(lambda v: None if v is None else str(v).lstrip("v"))
    out["division"] = src["division"].map(lambda v: None if v is None else str(v).lower())
    out["submitter"] = src["submitter"]
    out["system_name"] = src["system_name"]
    return out


def add_specs(frame: pd.DataFrame) -> pd.DataFrame:
    """Join the accelerator spec table by normalized name and add the roofline prior."""
    out = frame.copy()
    accs = [find_accelerator(n) for n in out["accelerator_raw"]]
    # own CPU-only runs: the accelerator is the host ("cpu"); keep that as its own category
    out["accelerator"] = [a.name if a else (None if n is None else str(n).strip().lower() or None)
                          for a, n in zip(accs, out["accelerator_raw"], strict=True)]
    out["acc_known"] = [a is not None for a in accs]
    out["acc_vendor"] = [a.vendor if a else None for a in accs]
    out["acc_peak_tflops"] = [a.peak_tflops(p) if a else None for a, p in zip(accs, out["precision"], strict=True)]
    for col, key in (("acc_mem_bw_gbs", "memory_bw_gbs"), ("acc_mem_gb", "memory_gb"),
                     ("acc_interconnect_gbs", "interconnect_gbs"), ("acc_tdp_w", "tdp_w")):
        out[col] = [a.specs.get(key) if a else None for a in accs]
    out["acc_launch_year"] = [float(a.launch_date[:4]) + (int(a.launch_date[5:7]) - 1) / 12 if a and a.launch_date
                              else None for a in accs]
    for col in ("acc_peak_tflops", "acc_mem_bw_gbs", "acc_mem_gb", "acc_interconnect_gbs", "acc_tdp_w",
                "acc_launch_year"):
        out[col] = _num(out[col])
    out["bytes_per_param"] = out["precision"].map(BYTES_PER_PARAM).astype(float)
    weights_gb = out["params_b"] * out["bytes_per_param"].fillna(2.0)
    out["mem_fill"] = weights_gb / (out["acc_mem_gb"] * out["accelerator_count"].fillna(1.0))
    # the precision the run must have used: the stated one unless its weights leave no room for a KV cache in all
    # the system's accelerators together (submissions state "fp16" for models quantized to fp8), then the widest
    # that does; an MLPerf submission (a division is set) may quantize to any numerics that meet its accuracy
    # target, and its weight data type field does not tell the math (rows stated "fp16" and "fp8" on one
    # accelerator measure the same), so a 16/32-bit one is taken as fp8 where the accelerator has fp8 math. The
    # roofline and its FLOP/s use it (``math_precision``), the stated one stays a feature
    named = [_name_precision(n) is not None for n in out["model_name"]]
    roof_prec = [_fitting_precision(p, b, m * (c if c == c else 1.0), a, submission=isinstance(d, str) and bool(d),
                                    named=k)
                 for p, b, m, c, a, d, k in zip(out["precision"], out["params_b"], out["acc_mem_gb"],
                                                out["accelerator_count"], accs, out["division"], named, strict=True)]
    out["precision_adjusted"] = [float(r != p) for r, p in zip(roof_prec, out["precision"], strict=True)]
    out["math_precision"] = roof_prec
    out["acc_peak_tflops"] = _num(pd.Series([a.peak_tflops(p) if a else None for a, p in zip(accs, roof_prec, strict=True)],
                                            index=out.index, dtype=object))
    rows = out.to_dict("records")
    for r, prec in zip(rows, roof_prec, strict=True):
        r["precision"] = prec
    roofs = [roofline(r) for r in rows]
    out["roofline_tokens_per_s"] = pd.Series([r.tokens_per_s if r else np.nan for r in roofs], index=out.index,
                                             dtype=float)
    out["log_roofline"] = np.log(out["roofline_tokens_per_s"])
    # where the ceiling comes from (which regime the run is in): dimensionless, so they carry over to accelerators
    # and models never seen in training
    for col, attr in (("roof_batch", "batch"), ("roof_replica", "replica"), ("roof_memory_share", "memory_share"),
                      ("roof_prefill_share", "prefill_share"), ("roof_comm_share", "comm_share"),
                      ("roof_decode_intensity", "decode_intensity")):
        out[col] = pd.Series([getattr(r, attr) if r else np.nan for r in roofs], index=out.index, dtype=float)
    # the accelerator's ridge point (FLOP per byte of memory traffic at the run's precision)
    out["acc_flops_per_byte"] = out["acc_peak_tflops"] * 1e3 / out["acc_mem_bw_gbs"]
    return out


BYTES_PER_PARAM = {"fp4": 0.5, "int4": 0.5, "fp8": 1.0, "int8": 1.0, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}
WEIGHTS_SHARE = 0.75  # weights above this share of the memory leave too little for a KV cache to serve a batch


def _fitting_precision(prec: str | None, params_b: float, mem_gb: float, acc: Any, submission: bool = False,
                       named: bool = False) -> str:
    """The stated precision, or the widest narrower one (fp8, then fp4 where the accelerator has fp4 math, else
    int4) whose weights fit in ``WEIGHTS_SHARE`` of the memory. An unstated precision is fp8 where the accelerator
    has fp8 math (what LLM results use there), else fp16; so is a stated 16/32-bit one of a ``submission`` (an
    MLPerf result, which may quantize within its accuracy target). A precision the model's name states (a quantized
    checkpoint, ``...-FP8-dynamic``) is the one the run used, room for a KV cache or not."""
    has_fp8 = acc is not None and bool(acc.specs.get("fp8_tflops"))
    if not prec or (submission and has_fp8 and BYTES_PER_PARAM.get(prec, 2.0) > 1.0):
        prec = "fp8" if has_fp8 else (prec or "fp16")
    if named or not (params_b == params_b and mem_gb == mem_gb and mem_gb > 0):
        return prec
    steps = [prec] + [p for p in ("fp8", "fp4" if acc and acc.specs.get("fp4_tflops") else "int4")
                      if BYTES_PER_PARAM[p] < BYTES_PER_PARAM.get(prec, 2.0)]
    for p in steps:
        if params_b * BYTES_PER_PARAM.get(p, 2.0) <= WEIGHTS_SHARE * mem_gb:
            return p
    return steps[-1]


def build_features(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns plus spec-table and roofline columns for rows in either input layout."""
    if len(df.columns) and layout(df) != "canonical" and not usable_columns(df):
        raise UserError("the rows have no column benchmint can use: expected flattened `runs` columns "
                        "(workload__model_name, system__accelerator__name, ...) or Open MLPerf names "
                        "(model.name, system.accelerator.name, ...)")
    return add_specs(canonical_frame(df))


def target_values(df: pd.DataFrame, target: str) -> pd.Series:
    """The target's values (float, NaN where absent); :class:`UserError` for an unknown target."""
    t = get_target(target)
    vals = _num(_first(df, t.columns))
    if target == "tokens_per_s_per_accelerator":  # own runs: the run's rate over its accelerators (1 for a host)
        total = _num(_first(df, ("metrics__throughput__output_tokens_per_s",)))
        count = _num(_first(df, SOURCES["accelerator_count"])).fillna(1.0).clip(lower=1.0)
        vals = vals.where(vals.notna(), total / count)
    return vals.where(vals > 0)


def get_target(target: str) -> Target:
    if target not in TARGETS:
        raise UserError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    return TARGETS[target]


def as_text(s: pd.Series) -> pd.Series:
    """Values as strings, missing ones as ``"none"`` (pandas' ``astype(str)`` keeps NaN as NaN)."""
    return s.map(lambda v: "none" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)).astype(object)


def duplicate_groups(frame: pd.DataFrame) -> pd.Series:
    """Near-duplicate groups: one system and model family in one round by one submitter (the 99% and 99.9%
    accuracy variants, Server and Offline of one submission, interactive and not) share a group, so that
    evaluation folds never split them. Own runs (no submitter: measured here, not submitted) are
    grouped by their configuration (every feature value), so that repeats of one configuration stay together while
    runs of different settings on one host are separate groups: grouped by host, all of a user's runs were one
    group, which left no out-of-fold residual to calibrate an interval with."""
    parts = [as_text(frame[c]) for c in ("round", "submitter", "system_name", "model_family", "accelerator",
                                            "accelerator_count")]
    key = parts[0].str.cat(parts[1:], sep="|")
    own = frame["submitter"].isna()
    cfg_cols = [c for c in DEFAULT_FEATURES if c in frame.columns]
    config = pd.Series("own", index=frame.index, dtype=object)
    for c in cfg_cols:
        # numbers to two significant digits: a workload's mean lengths move a little with --seed or the request
        # count, and repeats of one setup must stay one group (else they sit in train and test folds alike)
        col = frame[c].map(lambda v: float(f"{v:.2g}") if isinstance(v, int | float) and not isinstance(v, bool)
                           and math.isfinite(v) else v)
        config = config + "|" + as_text(col)
    return key.where(~own, config)
