"""Synthetic float inputs of a replay: finite values in [0.05, 0.95] (no NaN, infinity or denormal that would
slow a kernel down), whatever the size, layout and dtype, and the same ones for the same seed."""

from __future__ import annotations

import pytest
import torch

from benchmint.replay.tensors import _BLOCK, Constraints, fill


def _filled(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for make in (lambda: torch.empty(3, 5),  # small
                 lambda: torch.empty(70_000, dtype=torch.float16),  # large: the repeated block
                 lambda: torch.empty(2 * _BLOCK + 12_345, dtype=torch.bfloat16),  # rows of the block and a tail
                 lambda: torch.empty(1500, 1000).t(),  # large and not contiguous
                 lambda: torch.empty(2, 3, dtype=torch.complex64)):
        t = make()
        fill(t, None, Constraints(), g)
        out.append(t)
    return out


@pytest.mark.parametrize("k", range(5))
def test_float_inputs_are_finite_and_in_range(k):
    t = _filled(0)[k]
    v = (t.real if t.is_complex() else t).float()  # a complex one: real values (imaginary parts 0)
    assert torch.isfinite(v).all()
    assert v.min() >= 0.049 and v.max() <= 0.951
    assert v.unique().numel() > min(10, v.numel() // 2)  # not a constant


def test_float_inputs_depend_on_the_seed_only():
    a, b, c = _filled(0), _filled(0), _filled(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_large_input_repeats_the_block_from_one_start():
    """The rows of a large input are one window of the block: the fill is one memory copy per row."""
    t = _filled(0)[2].float()
    assert torch.equal(t[:_BLOCK], t[_BLOCK : 2 * _BLOCK])
    assert torch.equal(t[2 * _BLOCK :], t[: t.numel() - 2 * _BLOCK])
