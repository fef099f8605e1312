"""A roofline prior for LLM serving throughput, from the model's architecture, the task's token lengths and the
accelerator's specs.

One replica of the model spans ``k`` accelerators (powers of two up to the count; the ``k`` with the highest
ceiling is taken). 90% of their memory less the weights holds the KV cache, which bounds the batch ``B`` (at most
``MAX_BATCH`` sequences). Per decode step (``B`` output tokens):

- decode, memory-bound: the weights the step touches (all of a dense model; for a mixture of experts the shared
  part plus the experts the batch's tokens route to, ``1 - (1 - active/experts)^B`` of them) plus the batch's KV
  cache at the mean context (input + output / 2), read at the memory bandwidth: ``t_mem``;
- decode, compute-bound: ``2 x active parameters`` FLOPs per token plus attention over the context
  (``4 x layers x heads x head_dim x context``) at the dense FLOP/s of the precision the run uses: ``t_dec``;
- prefill, compute-bound: each sequence's prompt (``2 x active x input`` plus causal attention
  ``2 x layers x heads x head_dim x input^2``), spread over the ``output`` tokens it yields: ``t_pre``;
- tensor parallelism (``k > 1``): two all-reduces of the step's activations per layer over the accelerator link
  (ring: ``2 (k - 1) / k`` of the data each way): ``t_comm`` (0 when the table has no link figure).

A model whose layers and hidden size are not known gets the shape of a dense decoder of its size
(:func:`guessed_shape`). Step time = ``max(t_mem, t_dec) + t_pre + t_comm``; tokens/s per accelerator =
``B / step / k``. This is a ceiling, not a forecast: the learner models the ratio of the measured figure to it,
with the shares of the step each part takes (which regime the run is in) as features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_BATCH = 512
DEFAULT_INPUT = 1024.0  # tokens, when neither the row nor its task gives lengths
DEFAULT_OUTPUT = 256.0
MEMORY_FOR_MODEL = 0.9  # share of the accelerators' memory that weights and KV cache may use
KV_BYTES = {"fp4": 1.0, "int4": 1.0, "fp8": 1.0, "int8": 1.0}  # KV cache element size; 2 bytes otherwise
BYTES = {"fp4": 0.5, "int4": 0.5, "fp8": 1.0, "int8": 1.0, "fp16": 2.0, "bf16": 2.0, "fp32": 4.0}
ACTIVATION_BYTES = 2.0  # tensor-parallel all-reduces move 16-bit activations


@dataclass(frozen=True)
class Roofline:
    tokens_per_s: float  # ceiling on output tokens/s per accelerator
    batch: float  # sequences in flight per replica
    replica: float  # accelerators per replica
    memory_share: float  # share of the step spent reading weights and KV cache (when memory-bound)
    prefill_share: float  # share of the step spent on prefill compute
    comm_share: float  # share of the step spent in tensor-parallel all-reduces
    decode_intensity: float  # t_dec / t_mem: above 1 the decode is compute-bound


def _f(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or f <= 0 else f


ASPECT = 128.0  # hidden size per layer of a dense decoder (Llama 2 7B and 13B: 128; 70B: 102; Mixtral: 128)
GUESSED_KV_HEADS, GUESSED_HEAD_DIM = 8.0, 128.0  # grouped-query attention, as most models since 2023 have


def guessed_shape(params_b: float) -> tuple[float, float, float, float]:
    """(layers, hidden, heads, kv_heads) of a dense decoder of ``params_b`` billion parameters, for a model whose
    architecture is not known: about ``12 layers hidden^2`` parameters with ``hidden = ASPECT x layers``, and
    grouped-query attention with ``GUESSED_KV_HEADS`` heads of ``GUESSED_HEAD_DIM`` (a 70B model: 71 layers of
    9,080, a KV cache of 290 kB per token at 16 bits, against Llama 2 70B's 80 of 8,192 and 328 kB). Without it the
    cache per token was taken as 0.1% of the weights (140 MB for a 70B model), and the ceiling was 100 times too
    low."""
    layers = max(1.0, (max(params_b, 1e-6) * 1e9 / (12 * ASPECT**2)) ** (1 / 3))
    hidden = ASPECT * layers
    heads = max(1.0, hidden / GUESSED_HEAD_DIM)
    return layers, hidden, heads, min(GUESSED_KV_HEADS, heads)


def roofline(row: dict[str, Any]) -> Roofline | None:
    """The roofline of one canonical feature row; None when the model size or the accelerator's memory bandwidth
    is unknown."""
    params = _f(row.get("params_b"))
    bw = _f(row.get("acc_mem_bw_gbs"))
    if params is None or bw is None:
        return None
    active = min(_f(row.get("active_params_b")) or params, params)
    mem = _f(row.get("acc_mem_gb"))
    prec = row.get("precision") or "fp16"
    bpp = BYTES.get(prec, 2.0)
    count = _f(row.get("accelerator_count")) or 1.0
    inp = _f(row.get("input_len")) or DEFAULT_INPUT
    out = _f(row.get("output_len")) or DEFAULT_OUTPUT
    ctx = inp + out / 2
    layers, hidden = _f(row.get("layers")), _f(row.get("hidden"))
    heads, kv_heads = _f(row.get("heads")), _f(row.get("kv_heads"))
    weights = params * 1e9 * bpp
    if not (layers and hidden):  # a model the table does not know: the shape a dense decoder of its size has
        layers, hidden, heads, kv_heads = guessed_shape(active)
    head_dim = _f(row.get("head_dim")) or (hidden / heads if heads else hidden)
    kv_elems = _f(row.get("kv_elems")) or 2 * (kv_heads or heads or 1.0) * head_dim
    kv_tok = layers * kv_elems * KV_BYTES.get(prec, 2.0)
    attn = layers * (heads or 1.0) * head_dim  # attention width summed over layers
    # a mixture of experts: the shared part always, each expert when a token of the batch routes to it
    experts, k_act = _f(row.get("experts")), _f(row.get("active_experts"))
    expert_part = 0.0
    if experts and k_act and k_act < experts and active < params:
        expert_part = min(params, (params - active) / (1 - k_act / experts))
    flops = _f(row.get("acc_peak_tflops"))
    link = _f(row.get("acc_interconnect_gbs"))
    dec_flops = 2 * active * 1e9 + 4 * attn * ctx  # per output token
    pre_flops = 2 * active * 1e9 * inp + 2 * attn * inp * inp  # per sequence
    best: Roofline | None = None
    k = 1.0
    while True:
        free = (MEMORY_FOR_MODEL * k * mem * 1e9 - weights) if mem else 0.0
        batch = max(1.0, min(MAX_BATCH, free / (kv_tok * ctx))) if free > 0 else 1.0
        touched = expert_part * (1 - (1 - k_act / experts) ** batch) if expert_part else 0.0
        read = (params - expert_part + touched) * 1e9 * bpp + batch * kv_tok * ctx
        t_mem = read / (k * bw * 1e9)
        t_dec = batch * dec_flops / (k * flops * 1e12) if flops else 0.0
        t_pre = batch * pre_flops / out / (k * flops * 1e12) if flops else 0.0
        t_comm = 0.0
        if k > 1 and link and hidden:
            moved = 2 * layers * batch * (1 + inp / out) * hidden * ACTIVATION_BYTES * 2 * (k - 1) / k
            t_comm = moved / (link / 2 * 1e9)  # the sheets quote both directions
        step = max(t_mem, t_dec) + t_pre + t_comm
        cand = Roofline(batch / step / k, batch, k, (t_mem if t_mem >= t_dec else 0.0) / step, t_pre / step,
                        t_comm / step, t_dec / t_mem)
        if best is None or cand.tokens_per_s > best.tokens_per_s:
            best = cand
        if k >= count:
            return best
        k = min(k * 2, count)


def roofline_tokens_per_s(row: dict[str, Any]) -> float:
    """Ceiling on output tokens/s per accelerator for one canonical feature row; NaN when the model size or the
    accelerator's memory bandwidth is unknown."""
    r = roofline(row)
    return r.tokens_per_s if r else float("nan")
