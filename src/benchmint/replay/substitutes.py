"""Portable stand-ins for device-specific ops, used when a trace replays on another device.

A trace captured on CUDA names cuDNN kernels (``aten::cudnn_batch_norm``, ``aten::cudnn_convolution`` ...)
that the CPU backend lacks. Each entry here calls the portable op that does the same work on any device, with
the recorded arguments; the replay reports every substitution (op, replacement) next to its coverage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

aten = torch.ops.aten


def _cudnn_batch_norm(input: Any, weight: Any, bias: Any, running_mean: Any, running_var: Any, training: bool,
                      exponential_average_factor: float, epsilon: float) -> tuple:
    out, mean, invstd = aten.native_batch_norm.default(input, weight, bias, running_mean, running_var, training,
                                                       exponential_average_factor, epsilon)
    return out, mean, invstd, input.new_empty((0,), dtype=torch.uint8)


def _cudnn_batch_norm_backward(input: Any, grad_output: Any, weight: Any, running_mean: Any, running_var: Any,
                               save_mean: Any, save_var: Any, epsilon: float, reserve: Any = None) -> tuple:
    return aten.native_batch_norm_backward.default(grad_output, input, weight, running_mean, running_var,
                                                   save_mean, save_var, True, epsilon, [True, True, True])


def _cudnn_convolution(self: Any, weight: Any, padding: Any, stride: Any, dilation: Any, groups: int,
                       benchmark: bool = False, deterministic: bool = False, allow_tf32: bool = False) -> Any:
    return aten.convolution.default(self, weight, None, stride, padding, dilation, False,
                                    [0] * len(padding), groups)


def _cudnn_convolution_transpose(self: Any, weight: Any, padding: Any, output_padding: Any, stride: Any,
                                 dilation: Any, groups: int, benchmark: bool = False, deterministic: bool = False,
                                 allow_tf32: bool = False) -> Any:
    return aten.convolution.default(self, weight, None, stride, padding, dilation, True, output_padding, groups)


def _pin_memory(self: Any, device: Any = None) -> Any:
    return self.clone()


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


# op name -> (replacement callable, what it does instead); applied when the op cannot run on the replay device
SUBSTITUTES: dict[str, tuple[Callable[..., Any], str]] = {
    "aten::cudnn_batch_norm": (_cudnn_batch_norm, "aten::native_batch_norm"),
    "aten::cudnn_batch_norm_backward": (_cudnn_batch_norm_backward, "aten::native_batch_norm_backward"),
    "aten::miopen_batch_norm": (_cudnn_batch_norm, "aten::native_batch_norm"),
    "aten::miopen_batch_norm_backward": (_cudnn_batch_norm_backward, "aten::native_batch_norm_backward"),
    "aten::cudnn_convolution": (_cudnn_convolution, "aten::convolution"),
    "aten::cudnn_convolution_transpose": (_cudnn_convolution_transpose, "aten::convolution (transposed)"),
    "aten::pin_memory": (_pin_memory, "a copy (no accelerator to pin host memory for)"),
    "aten::_pin_memory": (_pin_memory, "a copy (no accelerator to pin host memory for)"),
}

# ops that do no work of their own on a device without streams: replayed as nothing, and reported
NO_OPS: dict[str, str] = {
    "aten::record_stream": "stream bookkeeping for the caching allocator; nothing to do without CUDA streams",
}


# -- fbgemm_gpu (recommendation models: TorchRec, DLRM) -------------------------------------------------------
# Written from fbgemm_gpu's documented semantics with plain torch ops, so a trace that used them replays where
# fbgemm_gpu is not installed (or has no kernel for the device). Arguments are passed by name: fbgemm's
# schemas grow new trailing arguments between versions, which these ignore.

_SPARSE_DTYPES = {0: torch.float32, 1: torch.float16, 5: torch.bfloat16}  # fbgemm SparseType: FP32, FP16, BF16
_POOLING = {0: "sum", 1: "mean"}  # fbgemm PoolingMode: SUM, MEAN (2: NONE, no pooling)


def _fbgemm_complete_cumsum(t_in: Any, **_: Any) -> Any:
    """asynchronous_complete_cumsum: the inclusive cumsum with a leading 0 (n + 1 values; per row for 2D)."""
    if t_in.dim() == 1:
        out = t_in.new_zeros(t_in.numel() + 1)
        torch.cumsum(t_in, 0, dtype=t_in.dtype, out=out[1:])
        return out
    out = t_in.new_zeros(*t_in.shape[:-1], t_in.shape[-1] + 1)
    out[..., 1:] = torch.cumsum(t_in, -1, dtype=t_in.dtype)
    return out


def _fbgemm_permute_2d_sparse_data(permute: Any, lengths: Any, values: Any, weights: Any = None,
                                   permuted_lengths_sum: Any = None, **_: Any) -> tuple:
    """permute_2D_sparse_data: row ``i`` of the result is row ``permute[i]`` of ``lengths`` (T x B), and the
    values (and weights) of that row, a contiguous segment of ``values``, are moved along with it."""
    perm = permute.long()
    row_len = lengths.sum(1)  # values per row of lengths
    row_start = torch.cumsum(row_len, 0) - row_len
    out_lengths = lengths.index_select(0, perm)
    out_len = row_len.index_select(0, perm)
    total = int(out_len.sum()) if permuted_lengths_sum is None else int(permuted_lengths_sum)
    # source position of each output element: its row's start in values + its place within the row
    out_start = torch.cumsum(out_len, 0) - out_len
    shift = torch.repeat_interleave(row_start.index_select(0, perm) - out_start, out_len, output_size=total)
    src = shift + torch.arange(total, device=values.device, dtype=shift.dtype)
    out_values = values.index_select(0, src)
    out_weights = weights.index_select(0, src) if weights is not None else None
    return out_lengths, out_values, out_weights


def _fbgemm_bounds_check_indices(rows_per_table: Any, indices: Any, offsets: Any, bounds_check_mode: int,
                                 warning: Any, weights: Any = None, **_: Any) -> None:
    """bounds_check_indices, in place: offsets are clamped into [0, len(indices)] and made non-decreasing
    (the last one is len(indices)); an index outside its table's rows becomes 0. Mode 0 (FATAL) raises on
    a bad index instead, 1 (WARNING) also counts them in ``warning[0]``, 2 (IGNORE) only fixes them; any other
    mode checks nothing."""
    if bounds_check_mode not in (0, 1, 2):
        return None
    n = indices.numel()
    T = rows_per_table.numel()
    if T == 0 or offsets.numel() == 0:
        return None
    B = (offsets.numel() - 1) // T
    fixed = torch.cummax(offsets.clamp(0, n), 0).values
    fixed[-1] = n
    bad_offsets = int((fixed != offsets).sum())
    if bad_offsets and bounds_check_mode == 0:
        raise IndexError(f"bounds_check_indices: {bad_offsets} offsets out of order or out of [0, {n}]")
    offsets.copy_(fixed)
    # the table of each index: its bag's position (searchsorted over the bag starts) divided by B
    bag = torch.searchsorted(offsets[1:], torch.arange(n, device=indices.device, dtype=offsets.dtype), right=True)
    table = torch.div(bag, max(B, 1), rounding_mode="floor").clamp_(max=T - 1)
    rows = rows_per_table.to(indices.dtype).index_select(0, table)
    bad = (indices < 0) | (indices >= rows)
    nbad = int(bad.sum())
    if nbad and bounds_check_mode == 0:
        raise IndexError(f"bounds_check_indices: {nbad} indices out of their table's rows")
    if nbad:
        indices.masked_fill_(bad, 0)
        if bounds_check_mode == 1:
            warning.add_(nbad + bad_offsets)
    elif bad_offsets and bounds_check_mode == 1:
        warning.add_(bad_offsets)
    return None


def _tbe_lookup(tables: list, D_offsets: Any, total_D: int, indices: Any, offsets: Any, pooling_mode: int,
                indice_weights: Any, output_dtype: int) -> Any:
    """The forward of a table-batched embedding (TBE): feature ``t`` looks up ``tables[t]`` (rows x D_t) with the
    bags ``offsets[t*B : (t+1)*B + 1]``; pooled features are laid side by side (B x total_D), un-pooled
    ones are stacked (one row per index)."""
    d_off = D_offsets.tolist()
    T = len(d_off) - 1
    B = (offsets.numel() - 1) // T if T > 0 else 0
    dtype = _SPARSE_DTYPES.get(int(output_dtype), torch.float32)
    bounds = offsets[:: B].tolist() if B > 0 else [0] * (T + 1)  # where each feature's indices start
    if pooling_mode not in _POOLING:
        D = d_off[1] - d_off[0] if T else 0
        out = torch.empty(indices.numel(), D, dtype=dtype, device=indices.device)
        for t in range(T):
            lo, hi = bounds[t], bounds[t + 1]
            out[lo:hi] = torch.nn.functional.embedding(indices[lo:hi], tables[t]).to(dtype)
        return out
    out = torch.empty(B, int(total_D), dtype=dtype, device=indices.device)
    mode = _POOLING[pooling_mode]
    for t in range(T):
        lo = bounds[t]
        bag_offsets = offsets[t * B : (t + 1) * B + 1]
        hi = bounds[t + 1]
        psw = indice_weights[lo:hi].to(tables[t].dtype) if indice_weights is not None and mode == "sum" else None
        pooled = torch.nn.functional.embedding_bag(indices[lo:hi], tables[t], bag_offsets - lo, mode=mode,
                                                   per_sample_weights=psw, include_last_offset=True)
        out[:, d_off[t] : d_off[t + 1]] = pooled
    return out


def _tables(weights_of: Callable[[int], Any], weights_offsets: Any, D_offsets: Any) -> list:
    """Each feature's table as a (rows x D) view of the packed weights at its offset; rows run to the end of
    the packed weights (fbgemm's forward does no bounds check of its own: bounds_check_indices does)."""
    w_off = weights_offsets.tolist()
    d_off = D_offsets.tolist()
    out = []
    for t, off in enumerate(w_off):
        w = weights_of(t)
        D = max(d_off[t + 1] - d_off[t], 1)
        rows = max((w.numel() - off) // D, 0)
        out.append(w.view(-1)[off : off + rows * D].view(rows, D))
    return out


def _fbgemm_dense_lookup(dev_weights: Any, weights_offsets: Any, D_offsets: Any, total_D: int, max_D: int,
                         hash_size_cumsum: Any, total_hash_size_bits: int, indices: Any, offsets: Any,
                         pooling_mode: int, indice_weights: Any = None, feature_requires_grad: Any = None,
                         output_dtype: int = 0, **_: Any) -> Any:
    """dense_embedding_codegen_lookup_function: TBE lookup over the tables packed in ``dev_weights``."""
    tables = _tables(lambda t: dev_weights, weights_offsets, D_offsets)
    return _tbe_lookup(tables, D_offsets, total_D, indices, offsets, pooling_mode, indice_weights, output_dtype)


def _fbgemm_split_lookup(placeholder_autograd_tensor: Any = None, dev_weights: Any = None, uvm_weights: Any = None,
                         lxu_cache_weights: Any = None, weights_placements: Any = None, weights_offsets: Any = None,
                         D_offsets: Any = None, total_D: int = 0, max_D: int = 0, hash_size_cumsum: Any = None,
                         total_hash_size_bits: int = 0, indices: Any = None, offsets: Any = None,
                         pooling_mode: int = 0, indice_weights: Any = None, output_dtype: int = 0,
                         **_: Any) -> Any:
    """split_embedding_codegen_lookup_<optimizer>_function, forward: TBE lookup over the tables packed in
    ``dev_weights``, or in ``uvm_weights`` for tables placed in managed memory (placement 1 or 2); the cache
    (``lxu_cache_*``) holds copies of rows and is not consulted. The optimizer's state is not read."""
    placements = weights_placements.tolist() if weights_placements is not None else []

    def weights_of(t: int) -> Any:
        managed = t < len(placements) and placements[t] in (1, 2) and uvm_weights is not None
        return uvm_weights if managed and uvm_weights.numel() > 0 else dev_weights

    tables = _tables(weights_of, weights_offsets, D_offsets)
    return _tbe_lookup(tables, D_offsets, total_D, indices, offsets, pooling_mode, indice_weights, output_dtype)


_SPLIT_LOOKUP_REASON = ("a pooled embedding-bag lookup per table (aten::embedding_bag over the tables packed in "
                        "dev_weights): the forward only; fbgemm fuses the {opt} update into this op's backward, "
                        "which the forward call cannot reproduce, so the optimizer update is not replayed")

FBGEMM_SUBSTITUTES: dict[str, tuple[Callable[..., Any], str]] = {
    "fbgemm::asynchronous_complete_cumsum": (_fbgemm_complete_cumsum, "aten::cumsum with a leading 0"),
    "fbgemm::permute_2D_sparse_data": (_fbgemm_permute_2d_sparse_data,
                                       "aten::index_select of the rows of lengths and of their value segments"),
    "fbgemm::bounds_check_indices": (_fbgemm_bounds_check_indices,
                                     "clamping of the indices and offsets in place with aten ops"),
    "fbgemm::dense_embedding_codegen_lookup_function": (
        _fbgemm_dense_lookup, "a pooled embedding-bag lookup per table (aten::embedding_bag over the tables "
        "packed in dev_weights)"),
}
for _opt in ("adagrad", "rowwise_adagrad", "sgd", "adam", "lamb", "partial_rowwise_adam", "partial_rowwise_lamb",
             "lars_sgd", "rowwise_weighted_adagrad", "approx_sgd", "approx_rowwise_adagrad"):
    FBGEMM_SUBSTITUTES[f"fbgemm::split_embedding_codegen_lookup_{_opt}_function"] = (
        _fbgemm_split_lookup, _SPLIT_LOOKUP_REASON.format(opt=_opt.replace("_", " ")))
SUBSTITUTES.update(FBGEMM_SUBSTITUTES)

# arguments a substitute never reads (the optimizer's state, the cache): bound to tensors of the recorded shape
# that are allocated but not filled, so a multi-GB state costs neither the time to fill it nor resident memory
UNREAD: dict[str, frozenset[str]] = {
    name: frozenset({"momentum1_dev", "momentum1_uvm", "momentum2_dev", "momentum2_uvm", "lxu_cache_weights"})
    for name in FBGEMM_SUBSTITUTES if name.startswith("fbgemm::split_embedding_codegen_lookup_")
}
