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
