"""Synthetic float inputs of a replay: finite values of magnitude in [0.05, 0.95] times a scale (no NaN,
infinity or denormal that would slow a kernel down), centred on zero at torch's weight-initialisation scale
unless a consumer needs positive values, whatever the size, layout and dtype, and the same ones for the same
seed; a replayed training step's made-up weights stay finite over many iterations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from benchmint.replay.ops import resolve
from benchmint.replay.plan import build_plan
from benchmint.replay.source import view_from_trace
from benchmint.replay.tensors import _BLOCK, Constraints, collect_constraints, fill, float_scale
from benchmint.replay.types import TRef
from benchmint.trace import load
from benchmint.trace.capture import capture_steps

_MAKERS = (lambda: torch.empty(3, 5),  # small
           lambda: torch.empty(70_000, dtype=torch.float16),  # large: the repeated block
           lambda: torch.empty(2 * _BLOCK + 12_345, dtype=torch.bfloat16),  # rows of the block and a tail
           lambda: torch.empty(1500, 1000).t(),  # large and not contiguous
           lambda: torch.empty(2, 3, dtype=torch.complex64))


def _filled(seed: int, cons: Constraints | None = None, refs: list | None = None) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k, make in enumerate(_MAKERS):
        t = make()
        fill(t, refs[k] if refs else None, cons or Constraints(), g)
        out.append(t)
    return out


def _ref(t: torch.Tensor, k: int) -> TRef:
    return TRef(k + 1, k + 1, 0, t.numel(), t.element_size(), "cpu", tuple(t.shape), tuple(t.stride()), t.dtype)


@pytest.mark.parametrize("k", range(5))
def test_float_inputs_are_finite_centred_and_scaled_by_fan_in(k):
    t = _filled(0)[k]
    v = (t.real if t.is_complex() else t).float()  # a complex one: real values (imaginary parts 0)
    b = float_scale(tuple(t.shape), False)
    assert b == pytest.approx(1 / (t[0].numel() ** 0.5 if t.dim() > 1 else 1))
    assert torch.isfinite(v).all()
    m = v.abs()
    assert m.min() >= 0.049 * b * 0.99 and m.max() <= 0.951 * b * 1.01  # never near zero: no denormal
    assert (v < 0).any() and (v > 0).any()  # centred
    assert v.numel() < 100 or abs(float(v.mean())) < 0.1 * b
    assert v.unique().numel() > min(10, v.numel() // 2)  # not a constant


@pytest.mark.parametrize("k", range(5))
def test_float_inputs_a_consumer_needs_positive_are_in_range(k):
    refs = [_ref(make(), j) for j, make in enumerate(_MAKERS)]
    cons = Constraints()
    cons.want_positive(refs[k])
    v = _filled(0, cons, refs)[k]
    v = (v.real if v.is_complex() else v).float()
    assert v.min() >= 0.049 and v.max() <= 0.951


def test_a_normal_draws_standard_deviation_is_made_up_positive():
    from benchmint.replay.tensors import _note_positive

    mean, std = (_ref(torch.empty(4, 8), k) for k in range(2))
    cons = Constraints()
    _note_positive(cons, None, "normal", {"mean": mean, "std": std})
    assert cons.needs_positive(std) and not cons.needs_positive(mean)
    v = _filled(0, cons, [std] * len(_MAKERS))[0]
    torch.normal(torch.zeros_like(v), v)  # raises on a negative std


def test_float_inputs_depend_on_the_seed_only():
    a, b, c = _filled(0), _filled(0), _filled(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_large_input_repeats_the_block_from_one_start():
    """The rows of a large input are one window of the block: the fill is one memory copy per row."""
    t = _filled(0)[2].float()
    assert torch.equal(t[:_BLOCK], t[_BLOCK : 2 * _BLOCK])
    assert torch.equal(t[2 * _BLOCK :], t[: t.numel() - 2 * _BLOCK])


def _bce_step(model, x, y, o):
    """A training step of ``model`` on (x, y) with a binary cross-entropy loss and optimizer ``o``."""

    def step():
        o.zero_grad(set_to_none=True)
        nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y).backward()
        o.step()

    return step


def _replayed_floats_after(step, tmp_path, iters: int) -> tuple[list[torch.Tensor], object]:
    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    plan = build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")
    assert all(s.replayed for s in plan.steps)
    fn, regs = plan.compile(), plan.registers()
    for _ in range(iters):
        with plan.grad_context():
            fn(regs)
    return [t for t in regs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()], plan


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("opt", ["sgd", "adamw"])
def test_replayed_training_state_stays_finite(tmp_path, opt, one_thread):
    """A plain MLP trained with SGD (all-positive made-up weights grew each layer's output with its width and
    reached infinity within a few replayed iterations) or AdamW (its second moment must stay positive: sqrt),
    its BCE target kept in [0, 1] (a negative one makes the loss unbounded below)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1))
    x, y = torch.randn(8, 64), torch.rand(8)
    o = torch.optim.SGD(model.parameters(), lr=0.05) if opt == "sgd" else torch.optim.AdamW(model.parameters())

    floats, plan = _replayed_floats_after(_bce_step(model, x, y, o), tmp_path, 30)
    # made up positive where a consumer needs it: the loss's target, Adam's second moment (read by sqrt)
    cons = collect_constraints(plan.view.ops, lambda op: [a.name for a in resolve(op.schema).args])
    needs = {"aten::binary_cross_entropy_with_logits": 1, "aten::sqrt": 0}
    seen = [s.op.name for s in plan.steps if s.op.name in needs
            and cons.needs_positive(s.op.inputs[needs[s.op.name]].value)]
    assert seen.count("aten::binary_cross_entropy_with_logits") == 1
    assert seen.count("aten::sqrt") == (6 if opt == "adamw" else 0)  # one per parameter
    bad = [tuple(t.shape) for t in floats if not torch.isfinite(t).all()]
    assert not bad, bad
    assert max(float(t.abs().max()) for t in floats) < 1e3


@pytest.mark.parametrize("opt", ["adamw", "sgd_momentum"])
def test_replayed_optimizer_state_keeps_its_scale_over_many_iterations(tmp_path, opt, one_thread):
    """AdamW scales its weights by ``1 - lr * wd`` in place, a Python float that reaches ``mul_`` as a 0-dim
    tensor without a recorded value: a made-up factor in [0.05, 0.95] shrank them once per replayed iteration,
    to denormals within a hundred (the replay's sqrt then ran 11x slower than the original's); it is made up as
    1.0. A moving average scaled and then added to keeps a factor below one (at 1.0 SGD's momentum buffer
    summed every gradient and the replayed step diverged to inf): Adam's ``exp_avg_sq.mul_(beta2).addcmul_(g,
    g, value=0.001)`` gets 1 - 0.001, SGD's ``buf.mul_(momentum).add_(grad)`` any made-up scalar's. Every
    weight and state stays finite and normal."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    x, y = torch.randn(8, 32), torch.rand(8)
    if opt == "adamw":
        o = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    else:
        o = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    floats, plan = _replayed_floats_after(_bce_step(model, x, y, o), tmp_path, 300)
    cons = collect_constraints(plan.view.ops, lambda op: [a.name for a in resolve(op.schema).args])
    steps = plan.steps
    factors = [(steps[k + 1].op.name, cons.factor(s.op.inputs[1].value)) for k, s in enumerate(steps[:-1])
               if s.op.name == "aten::mul_" and s.op.inputs[1].kind == "tensor" and s.op.inputs[1].value.numel == 1
               and steps[k + 1].op.name in ("aten::lerp_", "aten::addcmul_", "aten::add_")]
    if opt == "adamw":  # 4 weights: the decay, then beta2 of the second moment
        assert sorted(factors) == [("aten::addcmul_", pytest.approx(0.999))] * 4 + [("aten::lerp_", 1.0)] * 4
    else:  # the momentum buffers
        assert factors == [("aten::add_", None)] * 4
    assert all(bool(torch.isfinite(t).all()) for t in floats)
    big = [t for t in floats if t.numel() >= 64]
    # (a second moment is small, as the original's: gradients squared, times 1 - beta2)
    assert all(1e-20 < float(t.abs().max()) < 1e3 for t in big), [float(t.abs().max()) for t in big]
    tiny = [t for t in big if bool(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).any())]
    assert not tiny  # no denormal


def test_a_replay_flushes_denormals_so_decaying_state_does_not_slow_it(tmp_path, one_thread):
    """A momentum buffer whose gradient rows are exactly zero (ReLU units dead for the one replayed batch) is
    scaled by a made-up factor every iteration: it went denormal within about 100 iterations and its mul_ and
    add_ then ran 15x slower (a new user's MLP with SGD and momentum replayed at 2.6x its step). A replay
    flushes denormals to zero, says so in its timing conditions, and its state holds none after 300 iterations."""
    from benchmint.replay import conditions, replay_trace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    o = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(32, 128), torch.randint(0, 10, (32,))

    def step():
        o.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        o.step()

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    res = replay_trace(tmp_path, gaps="none", warmup=0, iters=1)
    assert res.result["timing_conditions"]["settings"]["denormals"] == "flushed to zero"
    plan, fn = res.plan, res.compiled()
    regs = plan.registers()

    @conditions.as_replay  # (outside replay_trace, run as it runs the iterations)
    def iteration() -> None:
        with plan.grad_context():
            fn(regs)

    for _ in range(300):
        iteration()
    assert not conditions.flushing_denormals()  # the process's own setting is back (hypothesis checks it)
    floats = [t for t in regs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    tiny = sum(int(((t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)).sum()) for t in floats)
    assert tiny == 0


def _first_inputs_in_replay(step, tmp_path, wants: dict) -> dict[str, torch.Tensor]:
    """Capture ``step``, replay it once and return, per name of ``wants`` (name -> (op name prefix or prefixes, picker of
    the input from (args, kwargs))), a copy of that input where the replay first called such an op."""
    from torch.utils._python_dispatch import TorchDispatchMode

    capture_steps(step, tmp_path, warmup=1, measure=5, record=1)
    plan = build_plan(view_from_trace(load(tmp_path / "et.json")), "cpu")
    seen: dict[str, torch.Tensor] = {}

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for name, (prefix, pick) in wants.items():
                if name not in seen and str(func).startswith(prefix):
                    seen[name] = pick(args, kwargs or {}).clone()
            return func(*args, **(kwargs or {}))

    with Spy():
        plan.compile()(plan.registers())
    return seen


def test_an_integer_mask_cast_to_bool_is_made_up_as_every_position_present(tmp_path, one_thread):
    """A tokenizer's ``attention_mask`` (ones, zeros where padded) reaches the attention as ``mask.bool()``.
    Made up as zeros, like any integer nothing constrains, it masked every position: the replayed BERT step's
    attention took the fully-masked path, 25% faster than the original's, and a --scale seq=2 replay grew 1.40x
    where the model grew 1.66x."""
    q = torch.randn(2, 4, 16, 8)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    ids = torch.randint(0, 50, (2, 16))
    table = torch.randn(50, 8)

    def step():
        m = mask.bool()[:, None, None, :]
        torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=m)
        return table[ids]  # an index: still made up in its range, not as ones

    seen = _first_inputs_in_replay(step, tmp_path, {
        "mask": (("aten.scaled_dot_product", "aten._scaled_dot_product"), lambda a, kw: a[3] if len(a) > 3 else kw["attn_mask"]),
        "idx": ("aten.index.", lambda a, kw: a[1][0])})
    m = seen["mask"]  # the composite's bool mask, or its float form (0 where present, -inf where masked)
    assert bool((m if m.dtype == torch.bool else m == 0).all())
    idx = seen["idx"]
    assert int(idx.min()) >= 0 and int(idx.max()) < 50 and idx.unique().numel() > 1


def test_a_buffer_read_through_a_slice_gets_the_range_of_the_lookup_that_reads_the_slice(tmp_path, one_thread):
    """A model's position-ids buffer (``arange(max_positions)``) is sliced to the sequence and read by the
    position embedding: made up as zeros, every token read the table's first row."""
    positions = torch.arange(128).expand(1, -1)
    table = torch.randn(128, 8)

    def step():
        return torch.nn.functional.embedding(positions[:, :48], table)

    idx = _first_inputs_in_replay(step, tmp_path, {"idx": ("aten.embedding.", lambda a, kw: a[1])})["idx"]
    assert tuple(idx.shape) == (1, 48) and int(idx.min()) >= 0 and int(idx.max()) < 128
    assert idx.unique().numel() > 10


def test_a_mask_whose_nonzero_count_a_consumer_recorded_is_made_up_with_that_many(tmp_path, one_thread):
    """A made-up mask selected another number of elements than the original did: random halves for a boolean
    leaf, all ones for an integer attention mask (HF's unpadding runs ``nonzero(attention_mask.flatten())``).
    The recorded output sizes of nonzero, a boolean index and masked_select say how many were non-zero."""
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0  # 26 tokens present
    keep = torch.zeros(2, 16, dtype=torch.bool)
    keep[0, :4], keep[1, 5:8] = True, True  # 7 rows kept
    pick = torch.zeros(32, dtype=torch.bool)
    pick[[1, 7, 9, 20, 31]] = True
    h, v = torch.randn(2, 16, 8), torch.randn(32)

    def step():
        idx = torch.nonzero(mask.flatten(), as_tuple=False).flatten()
        return idx, h[keep], v.masked_select(pick)

    seen = _first_inputs_in_replay(step, tmp_path, {
        "nonzero": ("aten.nonzero.", lambda a, kw: a[0]),
        "index": ("aten.index.", lambda a, kw: a[1][0]),
        "select": ("aten.masked_select.", lambda a, kw: a[1])})
    assert int(seen["nonzero"].count_nonzero()) == 26
    assert seen["index"].dtype == torch.bool and int(seen["index"].sum()) == 7
    assert int(seen["select"].sum()) == 5
    # rows of a mask hold a leading run of present positions, as a right-padded batch has them
    rows = seen["nonzero"].reshape(2, 16) != 0
    assert all(bool(r[: int(r.sum())].all()) for r in rows)
