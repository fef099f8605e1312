"""fbgemm_gpu ops replayed without fbgemm_gpu: each substitute against a hand-computed example, and PARAM's DLRM
trace (captured on CUDA, 8 ranks) planned on CPU with them."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch

from benchmint.replay import substitutes as S
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.trace import load

DLRM = Path(__file__).parent / "data" / "param" / "dlrm_pytorch_et.tar.gz"
FBGEMM_OPS = {
    "fbgemm::permute_2D_sparse_data": 2,
    "fbgemm::asynchronous_complete_cumsum": 2,
    "fbgemm::bounds_check_indices": 1,
    "fbgemm::split_embedding_codegen_lookup_adagrad_function": 1,
    "fbgemm::dense_embedding_codegen_lookup_function": 1,
}


def i32(*v):
    return torch.tensor(v, dtype=torch.int32)


def i64(*v):
    return torch.tensor(v, dtype=torch.int64)


# -- the substitutes, by hand ---------------------------------------------------------------------------------

def test_complete_cumsum_has_a_leading_zero_and_keeps_the_dtype():
    out = S._fbgemm_complete_cumsum(i32(3, 0, 2, 5))
    assert out.dtype == torch.int32 and out.tolist() == [0, 3, 3, 5, 10]
    assert S._fbgemm_complete_cumsum(i64()).tolist() == [0]
    assert S._fbgemm_complete_cumsum(i64(1, 2, 3, 4).view(2, 2)).tolist() == [[0, 1, 3], [0, 3, 7]]


def test_permute_2d_sparse_data_moves_rows_with_their_value_segments():
    lengths = i32(1, 2, 0, 1, 2, 0).view(3, 2)  # 3 features x batch 2: row t's values are one segment
    values = i64(10, 11, 12, 13, 14, 15)  # row 0: 10 11 12, row 1: 13, row 2: 14 15
    weights = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    lens, vals, w = S._fbgemm_permute_2d_sparse_data(i32(2, 0, 1), lengths, values, weights)
    assert lens.tolist() == [[2, 0], [1, 2], [0, 1]]
    assert vals.tolist() == [14, 15, 10, 11, 12, 13]
    assert w.tolist() == pytest.approx([0.4, 0.5, 0.0, 0.1, 0.2, 0.3])
    # fewer rows than there are, with repetition; no weights; the output size given up front
    lens, vals, w = S._fbgemm_permute_2d_sparse_data(i32(1, 1), lengths, values, None, 2)
    assert lens.tolist() == [[0, 1], [0, 1]] and vals.tolist() == [13, 13] and w is None


def test_bounds_check_indices_fixes_bad_indices_in_place_and_counts_them():
    rows = i64(3, 5)  # two tables, batch 2
    indices = i64(0, 4, 2, 7, -1, 1)  # table 0: bags [0 4] [2]; table 1: bags [7 -1] [1]
    offsets = i64(0, 2, 3, 5, 6)
    warning = i64(0)
    assert S._fbgemm_bounds_check_indices(rows, indices, offsets, 1, warning) is None
    assert indices.tolist() == [0, 0, 2, 0, 0, 1]  # 4 >= 3 rows of table 0; 7 and -1 outside table 1's 5 rows
    assert offsets.tolist() == [0, 2, 3, 5, 6] and warning.tolist() == [3]
    # offsets out of order or past the end are clamped into [0, len(indices)] and made non-decreasing
    indices, offsets = i64(0, 1, 2, 0, 1, 2), i64(0, 4, 3, 5, 9)
    S._fbgemm_bounds_check_indices(rows, indices, offsets, 2, warning)  # IGNORE: fixed, not counted
    assert offsets.tolist() == [0, 4, 4, 5, 6] and indices.tolist() == [0, 1, 2, 0, 1, 2] and warning.tolist() == [3]
    with pytest.raises(IndexError):  # FATAL
        S._fbgemm_bounds_check_indices(rows, i64(0, 5), i64(0, 1, 1, 2, 2), 0, warning)


def _two_tables():
    """Table 0: 2 rows x D 2 = [[1, 2], [3, 4]]; table 1: 3 rows x D 1 = [[10], [20], [30]], packed."""
    dev_weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0])
    geometry = dict(weights_offsets=i64(0, 4), D_offsets=i32(0, 2, 3), total_D=3, max_D=2,
                    hash_size_cumsum=i64(0, 2, 5), total_hash_size_bits=3)
    # batch 2: table 0 bags [0 1] [1]; table 1 bags [] [2 0 2]
    bags = dict(indices=i64(0, 1, 1, 2, 0, 2), offsets=i64(0, 2, 3, 3, 6))
    return dev_weights, geometry, bags


def test_dense_lookup_pools_each_table_into_its_columns():
    w, geo, bags = _two_tables()
    out = S._fbgemm_dense_lookup(w, **geo, **bags, pooling_mode=0)
    assert out.shape == (2, 3) and out.tolist() == [[4.0, 6.0, 0.0], [3.0, 4.0, 70.0]]
    out = S._fbgemm_dense_lookup(w, **geo, **bags, pooling_mode=1)  # mean; an empty bag gives 0
    assert out.flatten().tolist() == pytest.approx([2.0, 3.0, 0.0, 3.0, 4.0, 70.0 / 3])
    weighted = S._fbgemm_dense_lookup(w, **geo, **bags, pooling_mode=0,
                                      indice_weights=torch.tensor([1.0, 2.0, 1.0, 1.0, 0.5, 1.0]))
    assert weighted.tolist() == [[7.0, 10.0, 0.0], [3.0, 4.0, 65.0]]
    half = S._fbgemm_dense_lookup(w, **geo, **bags, pooling_mode=0, output_dtype=1)
    assert half.dtype == torch.float16 and half.float().tolist() == [[4.0, 6.0, 0.0], [3.0, 4.0, 70.0]]


def test_unpooled_lookup_gives_one_row_per_index():
    w = torch.arange(1.0, 11.0)  # table 0: 2 rows x 2 = [[1, 2], [3, 4]]; table 1: 3 rows x 2 = [[5, 6] ...]
    out = S._fbgemm_dense_lookup(w, i64(0, 4), i32(0, 2, 4), 4, 2, i64(0, 2, 5), 3, i64(1, 2, 0), i64(0, 1, 3),
                                 pooling_mode=2)
    assert out.tolist() == [[3.0, 4.0], [9.0, 10.0], [5.0, 6.0]]


def test_split_lookup_forward_is_the_same_lookup_from_device_or_managed_memory():
    w, geo, bags = _two_tables()
    empty = torch.empty(0)
    common = dict(placeholder_autograd_tensor=empty, lxu_cache_weights=torch.empty(0, 0), **geo, **bags,
                  pooling_mode=0, indice_weights=None, feature_requires_grad=None, lxu_cache_locations=i32(),
                  gradient_clipping=False, max_gradient=1.0, stochastic_rounding=True,
                  momentum1_dev=torch.full((7,), float("nan")), momentum1_uvm=empty, momentum1_placements=i32(0, 0),
                  momentum1_offsets=i64(0, 2), eps=1e-8, learning_rate=0.01, output_dtype=0)
    on_device = S._fbgemm_split_lookup(dev_weights=w, uvm_weights=empty, weights_placements=i32(0, 0), **common)
    managed = S._fbgemm_split_lookup(dev_weights=empty, uvm_weights=w, weights_placements=i32(1, 1), **common)
    assert on_device.tolist() == managed.tolist() == [[4.0, 6.0, 0.0], [3.0, 4.0, 70.0]]
    fn, reason = S.SUBSTITUTES["fbgemm::split_embedding_codegen_lookup_adagrad_function"]
    assert fn is S._fbgemm_split_lookup and "backward" in reason and "not replayed" in reason
    assert "momentum1_dev" in S.UNREAD["fbgemm::split_embedding_codegen_lookup_adagrad_function"]


# -- PARAM's DLRM trace ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rank", [0, 7])
def test_dlrm_trace_replays_fbgemm_ops_with_valid_inputs(rank, monkeypatch):
    seen: dict[str, list[dict]] = {}

    def spy(name):
        fn = S.SUBSTITUTES[name][0]

        def call(**kw):
            before = {k: v.clone() for k, v in kw.items() if isinstance(v, torch.Tensor) and v.numel() < 1 << 20}
            out = fn(**kw)
            seen.setdefault(name, []).append({"in": before, "out": out})
            return out
        return call

    for name in FBGEMM_OPS:
        monkeypatch.setitem(S.SUBSTITUTES, name, (spy(name), S.SUBSTITUTES[name][1]))
    view = view_from_trace(load(DLRM, rank=rank))
    plan = build_plan(view, "cpu")
    try:
        n = len(plan.steps)
        skipped = {s["op"]: s["count"] for s in plan.skipped()}
        # only the collectives stay skipped: they need the process group of the 8 ranks
        assert skipped == {"c10d::alltoall_base_": 5, "c10d::allreduce_": 3}
        assert len(plan.replayed) == n - 8 and len(plan.replayed) / n >= 0.987
        subs = {s["op"]: s["count"] for s in plan.substituted()}
        assert {k: subs.get(k) for k in FBGEMM_OPS} == FBGEMM_OPS
        # the synthesized integer inputs are valid: bounds_check finds nothing to fix, bags cover the indices
        for call in seen["fbgemm::bounds_check_indices"]:
            a = call["in"]
            assert a["warning"].tolist() == [0]
            assert int(a["offsets"][0]) == 0 and int(a["offsets"][-1]) == a["indices"].numel()
        for name in ("fbgemm::split_embedding_codegen_lookup_adagrad_function",
                     "fbgemm::dense_embedding_codegen_lookup_function"):
            for call in seen[name]:
                a = call["in"]
                off, idx, hs = a["offsets"], a["indices"], a["hash_size_cumsum"]
                assert int(off[0]) == 0 and int(off[-1]) == idx.numel() and bool((off[1:] >= off[:-1]).all())
                assert int(idx.min()) >= 0 and int(idx.max()) < int((hs[1:] - hs[:-1]).min())
                assert a["D_offsets"].tolist()[-1] == call["out"].shape[1]
                assert call["out"].abs().sum() > 0
        for call in seen["fbgemm::permute_2D_sparse_data"]:
            a = call["in"]
            assert sorted(a["permute"].tolist()) == list(range(a["lengths"].shape[0]))
            assert int(a["lengths"].sum()) == a["values"].numel() == call["out"][1].numel()
    finally:
        del plan
        gc.collect()


def test_dlrm_memory_estimate_leaves_out_the_optimizer_state_the_replay_never_fills():
    from benchmint.replay import memory

    view = view_from_trace(load(DLRM, rank=0))
    est = memory.tensor_bytes(view)
    # the adagrad momentum the lookup's stand-in never reads is allocated and never filled: half of the tables
    assert est["total_bytes"] > 4.5 * 2**30
    assert 0.45 < est["unfilled_inputs_bytes"] / est["inputs_bytes"] < 0.55
    host = memory.resident_bytes(est, torch.device("cpu"))
    assert host == est["total_bytes"] - est["unfilled_inputs_bytes"]
    assert memory.resident_bytes(est, torch.device("cuda")) == est["total_bytes"]  # a GPU commits it all
