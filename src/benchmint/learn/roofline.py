"""A roofline prior for LLM serving throughput, from the model's parameters and the accelerator's specs.

Per accelerator, at the largest batch the memory holds (capped at ``MAX_BATCH`` sequences):

- a replica of the model spans ``k`` accelerators (powers of two up to the count; the best ``k`` is taken); 90% of
  their memory less the weights holds the KV cache, which bounds the batch ``B``;
- one decode step reads the weights once and the batch's KV cache (memory-bound): ``t_mem = (W + B * kv) /
  (k * BW)``; it also does ``2 * active_params * B`` FLOPs plus the prefill of the batch's input tokens
  (compute-bound): ``t_cmp = 2 * active * B * (1 + in/out) / (k * F * efficiency)``;
- tokens/s per accelerator = ``B / max(t_mem, t_cmp) / k``.

This is a ceiling, not a forecast: the learner models the ratio of the measured figure to it. When no measured
row is near a query, the roofline times the training set's median ratio answers alone, with a wide interval.
"""

from __future__ import annotations

import math
from typing import Any

MAX_BATCH = 512
DEFAULT_INPUT = 1024.0  # tokens, when a row gives no lengths
DEFAULT_OUTPUT = 256.0
KV_BYTES = {"fp4": 1.0, "int4": 1.0, "fp8": 1.0, "int8": 1.0}  # KV cache element size; 2 bytes otherwise
BYTES = {"fp4": 0.5, "int4": 0.5, "fp8": 1.0, "int8": 1.0, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}


def _f(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or f <= 0 else f


def roofline_tokens_per_s(row: dict[str, Any]) -> float:
    """Ceiling on output tokens/s per accelerator for one canonical feature row; NaN when the model size or the
    accelerator's memory bandwidth is unknown."""
    params = _f(row.get("params_b"))
    active = _f(row.get("active_params_b")) or params
    bw = _f(row.get("acc_mem_bw_gbs"))
    mem = _f(row.get("acc_mem_gb"))
    if params is None or bw is None:
        return float("nan")
    prec = row.get("precision") or "fp16"
    weights = params * 1e9 * BYTES.get(prec, 2.0)
    count = _f(row.get("accelerator_count")) or 1.0
    inp = _f(row.get("input_len")) or DEFAULT_INPUT
    out = _f(row.get("output_len")) or DEFAULT_OUTPUT
    layers, hidden = _f(row.get("layers")), _f(row.get("hidden"))
    heads, kv_heads = _f(row.get("heads")), _f(row.get("kv_heads"))
    if layers and hidden:
        kv_dim = hidden * (kv_heads / heads if kv_heads and heads else 1.0)
        kv_per_token = 2 * layers * kv_dim * KV_BYTES.get(prec, 2.0)
    else:  # about 0.1% of the weights per token of context
        kv_per_token = weights * 1e-3
    kv_seq = kv_per_token * (inp + out / 2)
    flops = _f(row.get("acc_peak_tflops"))
    best = 0.0
    k = 1.0
    while True:  # the best replica size: powers of two up to the count
        free = (0.9 * k * mem * 1e9 - weights) if mem else 0.0
        batch = max(1.0, min(MAX_BATCH, free / kv_seq)) if free > 0 else 1.0
        t_mem = (weights + batch * kv_seq) / (k * bw * 1e9)
        t_cmp = 2 * active * 1e9 * batch * (1 + inp / out) / (k * flops * 1e12) if flops else 0.0
        best = max(best, batch / max(t_mem, t_cmp) / k)
        if k >= count:
            return best
        k = min(k * 2, count)
