"""How the made-up indices of a lookup are spread, chosen per index tensor against the op's recorded time.

The execution trace records an index tensor's shape, never its values, and the replay makes up values in
range (uniform). A lookup's time depends on them: an ``embedding_bag`` over skewed indices (a few hot rows,
as real categorical features are) stays in cache and ran 20-40% faster here than over uniform ones, so a
replay of a recommender fed skewed data ran its lookups slower than the original did.

Where the spread comes from, first match first: ``--index-spread uniform|zipf:E`` (the user's word, every
such tensor); capture.json's ``index_sketch`` (a ``benchmint capture`` counted, in a warm-up step, the distinct
rows each lookup touched: :func:`fit_skew` gives the exponent whose indices touch as many, per tensor it
describes); else the choice against the recorded lookup times below.

:func:`choose` picks, for each true input of the step that holds indices (values in ``[0, rows)`` and no
other need) read by a lookup (``embedding``, ``embedding_bag``, ``index_select``, ``gather``, ``index``,
``take``), one spread from a small family (uniform and Zipf-like skews scattered over the rows): each is
timed on the lookups that read the tensor and can be called on their own (every input a true input of the
step), interleaved over rounds (median), under the recorders the original ran under (ET + Kineto: their
cost on a lookup is no fixed cost per node), and compared with the lookups' recorded (Kineto) durations. Uniform
is kept unless it is off by more than ``KEEP_UNIFORM`` and another spread is clearly closer and changes the
lookups' time here at all (``FASTER`` than uniform in ``AGREE`` of the rounds: a table that stays in cache
runs as fast over any spread, and noise must not pick one), so that a step fed uniform indices
(``torch.randint``) replays as before. What was chosen goes into the result
(``index_distribution``); ``BENCHMINT_INDEX_SPREAD=uniform`` turns the choice off.

The recorded durations are absolute: a recording taken while the machine was busier than the replay's
makes every spread look fast (uniform, the slowest, is then kept), one taken while it was quieter can pick a
skew the original did not have. And they hold mostly the recorders' own cost (a 507-index ``embedding_bag``:
0.71 ms recorded, 0.056 ms in the replayed step), which dwarfs what the spread changes, so the choice rarely
moves off uniform.
The spread still moves a replay of a recommender by 8-20% (the table's rows compete for the cache with the
step's other lookups); a user who knows the data gives it (``--index-spread zipf:E`` or ``uniform``,
:func:`parse_spread`): every made-up lookup index is then filled so, nothing timed.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch.profiler import ProfilerActivity

from benchmint.core import clock
from benchmint.core.errors import UserError
from benchmint.replay.ops import OpUnavailable, resolve
from benchmint.replay.plan import Plan
from benchmint.replay.types import TENSOR, TENSOR_LIST, TRef
from benchmint.trace.lookups import index_arg

# (label, Zipf exponent; 0: uniform)
SPREADS: tuple[tuple[str, float], ...] = (("uniform", 0.0), ("zipf 0.8", 0.8), ("zipf 1.05", 1.05),
                                          ("zipf 1.3", 1.3))
KEEP_UNIFORM = math.log(1.15)  # uniform within 15% of the recorded time: kept (a recording's speed drifts)
MARGIN = math.log(1.05)  # another spread must be this much closer than uniform
ROUNDS = 5
FASTER = 0.9  # a skew must run the lookups at least 10% faster than uniform here ...
AGREE = 0.8  # ... in at least 80% of the rounds (paired with uniform's time in the same round)
SPREAD_ENV = "BENCHMINT_INDEX_SPREAD"  # "uniform": no choice, every made-up index uniform
MAX_SKEW = 3.0  # the largest exponent fitted to a capture's distinct rows
_PERM_MAX = 1 << 22  # rows scattered by a random permutation up to this many, by a multiplicative hash above


def spread_indices(shape: tuple[int, ...] | torch.Size, rows: int, skew: float, gen: torch.Generator,
                   dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Indices in ``[0, rows)``: uniform (``skew`` 0) or Zipf-like with exponent ``skew`` (rank r drawn with
    probability about r**-skew, by inverse transform), the ranks scattered over the rows."""
    n = int(torch.Size(shape).numel())
    if skew <= 0 or rows <= 1:
        return torch.randint(0, max(rows, 1), tuple(shape), generator=gen, dtype=torch.long).to(dtype)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    top = float(rows + 1)
    if abs(skew - 1.0) < 1e-9:
        x = torch.exp(u * math.log(top))
    else:
        e = 1.0 - skew
        x = ((top ** e - 1.0) * u + 1.0) ** (1.0 / e)
    rank = (x.floor().long() - 1).clamp_(0, rows - 1)
    if rows <= _PERM_MAX:
        idx = torch.randperm(rows, generator=gen)[rank]
    else:
        idx = (rank * 2654435761 + int(torch.randint(0, rows, (1,), generator=gen))) % rows
    return idx.reshape(tuple(shape)).to(dtype)


def _index_refs(op: Any, names: list[str] | None) -> list[TRef]:
    arg = index_arg(op.name)
    if arg is None or names is None or arg not in names:
        return []
    a = op.inputs[names.index(arg)] if names.index(arg) < len(op.inputs) else None
    if a is None:
        return []
    refs = [a.value] if a.kind == TENSOR else (a.value if a.kind == TENSOR_LIST else [])
    return [r for r in refs if isinstance(r, TRef)]


def _standalone(plan: Plan, idx: int) -> Callable[[list[Any]], Any] | None:
    """Step ``idx``'s op as a function of the register file, when it reads true inputs of the step only."""
    lines = [line for i, line in plan.lines if i == idx]
    if len(lines) != 1:
        return None
    line = lines[0]
    call = line[5:].split("; ")[0] if line.startswith("_r = ") else line.split(" = ", 1)[-1]
    reads = {int(s) for s in re.findall(r"R\[(\d+)\]", call)}
    if any(s >= len(plan.init) or plan.init[s] is None for s in reads):
        return None
    ns = dict(plan.namespace)
    exec(compile(f"def _op(R):\n    {call}\n", f"<benchmint lookup {idx}>", "exec"), ns)
    return ns["_op"]


def _time(f: Callable[[list[Any]], Any], R: list[Any]) -> float:
    """Best of two calls of a lookup, under the grad mode its caller set (the plan's)."""
    f(R)  # the first call after new values touches them
    best = math.inf
    for _ in range(2):
        t0 = clock.now_ns()
        f(R)
        best = min(best, (clock.now_ns() - t0) / 1e9)
    return best


def _arg_names(op: Any) -> list[str] | None:
    try:
        return [a.name for a in resolve(op.schema).args] if op.schema else None
    except OpUnavailable:
        return None


def parse_spread(text: str) -> float | None:
    """``--index-spread``: ``auto`` (None: chosen per tensor, :func:`choose`), ``uniform`` (0.0) or
    ``zipf:E`` (``zipf E``; the exponent E, 0 < E <= 3); anything else is a one-line error."""
    t = text.strip().lower()
    if t in ("", "auto"):
        return None
    if t == "uniform":
        return 0.0
    head, _, tail = t.replace(" ", ":", 1).partition(":")
    try:
        e = float(tail) if head == "zipf" else math.nan
    except ValueError:
        e = math.nan
    if not 0.0 < e <= 3.0:
        raise UserError(f"--index-spread {text}: choose auto, uniform or zipf:E with an exponent 0 < E <= 3 "
                        "(zipf:1.05: a few hot rows, as real categorical features and token ids are)")
    return e


def label_of(skew: float) -> str:
    return "uniform" if skew <= 0 else f"zipf {skew:g}"


def _cdf(x: torch.Tensor, rows: int, skew: float) -> torch.Tensor:
    """The share of :func:`spread_indices`' draws below rank position ``x`` (1 <= x <= rows + 1)."""
    top = float(rows + 1)
    if skew <= 0:
        return (x - 1.0) / rows
    if abs(skew - 1.0) < 1e-9:
        return torch.log(x) / math.log(top)
    e = 1.0 - skew
    return (x ** e - 1.0) / (top ** e - 1.0)


def expected_distinct(rows: int, n: int, skew: float) -> float:
    """How many distinct rows ``n`` indices of :func:`spread_indices` (exponent ``skew``) touch, on average:
    the sum over ranks of the chance that at least one index lands there (ranks past the first 65536 taken in
    bins 1% wide, each rank of a bin with the bin's mean share: a table of 10**9 rows costs about 2,000 terms)."""
    if rows <= 1 or n <= 0:
        return float(min(rows, n))
    head = min(rows, 1 << 16)
    edges = torch.arange(1, head + 2, dtype=torch.float64)
    if rows > head:
        k = math.ceil(math.log((rows + 1) / (head + 1)) / math.log(1.01))
        tail = (head + 1) * torch.pow(torch.tensor(1.01, dtype=torch.float64), torch.arange(1, k + 1))
        edges = torch.cat([edges, tail.clamp(max=rows + 1).floor().unique()])
        edges = torch.unique(torch.cat([edges, torch.tensor([rows + 1.0], dtype=torch.float64)]))
    mass = (_cdf(edges[1:], rows, skew) - _cdf(edges[:-1], rows, skew)).clamp(min=0.0)
    width = edges[1:] - edges[:-1]
    p = (mass / width).clamp(max=1 - 1e-15)
    return float((width * -torch.expm1(n * torch.log1p(-p))).sum())


def fit_skew(rows: int, n: int, distinct: int) -> float:
    """The exponent whose made-up indices touch ``distinct`` rows on average (0: uniform, when the data touch
    at least 97% of what uniform indices would; at most ``MAX_SKEW``)."""
    if distinct >= 0.97 * expected_distinct(rows, n, 0.0):
        return 0.0
    lo, hi = 0.0, MAX_SKEW
    if distinct <= expected_distinct(rows, n, hi):
        return hi
    for _ in range(30):  # the expected count falls as the exponent grows
        mid = (lo + hi) / 2
        if expected_distinct(rows, n, mid) > distinct:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 2)


def user_spread(option: str | None = None) -> str:
    """The spread the user gave for made-up lookup indices: ``--index-spread`` (``option``) unless it is auto,
    else ``BENCHMINT_INDEX_SPREAD``, else ``auto`` (:func:`parse_spread` reads it; a bad value is a one-line
    error)."""
    if parse_spread(option or "auto") is not None:
        return option  # type: ignore[return-value]
    return os.environ.get(SPREAD_ENV, "").strip() or "auto"


def choose(plan: Plan, seed: int = 0, timer: Callable[[Callable, list[Any]], float] | None = None,
           given: dict[tuple[int, int], str] | None = None, spread: str | None = None,
           sketch: dict[str, Any] | None = None, time_rest: bool = True) -> list[dict[str, Any]] | None:
    """Choose and fill the spread of each made-up index tensor read by a lookup (see the module); returns what
    was chosen per tensor, or None when the step has no such tensor with a recorded lookup time, or when
    ``BENCHMINT_INDEX_SPREAD=uniform`` (every made-up index uniform, as before). ``timer(f, R)``: seconds
    one call of the lookup ``f`` takes on the register file ``R`` (default: the best of two after one).
    ``spread``: ``--index-spread`` (:func:`parse_spread`; default ``BENCHMINT_INDEX_SPREAD``, else auto):
    ``uniform`` or ``zipf:E`` fills every such tensor so, nothing timed, whether or not a lookup time was
    recorded (the user knows the data; the recording cannot tell: see the module).
    ``sketch``: capture.json's ``index_sketch`` (the distinct rows each lookup of the original touched,
    :mod:`benchmint.trace.index_sketch`): the tensors it describes get the exponent whose indices touch as many
    rows (:func:`fit_skew`), nothing timed (:func:`_match` says which record is whose); the others are chosen
    as without it. ``time_rest``: False where the lookups cannot be timed against their recorded durations (a
    rank of a multi-rank replay, a trace replayed on another device): only the sketch's tensors are filled.
    ``given``: the spreads already chosen, by (``step``, ``tensor_id``) of what a choice returned: filled as
    they are, nothing timed (a scaled step keeps its unscaled replay's choice: its lookups' recorded times are
    those of the unscaled step, and would pick a skew to make up for the larger tables and batches)."""
    skew = parse_spread(user_spread(spread))
    by = "--index-spread" if parse_spread(spread or "auto") is not None else SPREAD_ENV
    if skew == 0.0 and by == SPREAD_ENV:
        return None  # BENCHMINT_INDEX_SPREAD=uniform: no choice, the made-up indices as the plan filled them
    with plan.grad_context():  # the plan's tensors are refilled in place, under the mode they were made in
        if skew is not None:
            return _choose(plan, seed, timer or _time, None, forced=skew, given_by=by)
        return _choose(plan, seed, timer or _time, given, sketch=sketch, time_rest=time_rest)


_Work = tuple[tuple, TRef, torch.Tensor, int, list[tuple[int, Callable | None]]]  # key, ref, tensor, rows, lookups


class Lookup(NamedTuple):
    """A made-up index tensor that replayed lookups read."""

    ref: TRef
    steps: list[int]  # the replayed steps that read it (the first names it: ``step`` in what the choice returns)
    tensor: torch.Tensor  # the plan's tensor, filled in place
    rows: int  # its values lie in [0, rows)


def lookup_tensors(plan: Plan) -> dict[tuple, Lookup]:
    """Every made-up index tensor a replayed lookup reads (values in ``[0, rows)``, no other need on them, held
    contiguous in the plan so that it can be refilled in place), by key. A tensor is known by the first step that
    reads it, the same in every replay of the step (``given``)."""
    cons = plan.cons
    if cons is None:
        return {}
    by_key: dict[tuple, tuple[TRef, list[int]]] = {}
    for st in plan.steps:
        if not st.replayed or st.substitute is not None:
            continue
        for ref in _index_refs(st.op, _arg_names(st.op)):
            c = cons.by_key.get(ref.key)
            s = plan.slots.get(ref.key)
            if (c is None or c.high is None or c.high < 2 or s is None or plan.init[s] is None
                    or c.forced is not None or c.values is not None or c.offsets_of is not None
                    or c.sums_to is not None or c.permutation or ref.dtype not in (torch.int64, torch.int32)):
                continue
            by_key.setdefault(ref.key, (ref, []))[1].append(st.index)
    out = {}
    for key, (ref, steps) in by_key.items():
        t = plan.init[plan.slots[key]]
        if isinstance(t, torch.Tensor) and t.is_contiguous():  # (any device: given, forced and sketched)
            out[key] = Lookup(ref, steps, t, cons.by_key[key].high)  # type: ignore[arg-type]
    return out


def _record(plan: Plan, work: _Work, chosen: str, steps: list[int], **more: Any) -> dict[str, Any]:
    """What the result says of one index tensor (``step``, ``tensor_id``: the key of ``given``)."""
    _key, ref, t, rows, fns = work
    ops = [plan.steps[i].op for i, _f in fns]
    return {"ops": sorted({o.name for o in ops}), "calls": len(ops), "rows": rows, "indices": int(t.numel()),
            "chosen": chosen, "step": steps[0], "tensor_id": ref.tensor_id, **more}


def _match(sketch: dict[str, Any], work: list[_Work]) -> dict[tuple, dict[str, Any]]:
    """The sketch's record of each tensor to fill it describes, by the tensor's key.

    The sketch holds every index tensor a lookup of the original step read, by first read; the tensors to fill
    are the true inputs among those of the replayed step (or of its selection), in the same order. So where the
    sketch holds as many records of a (shape, rows) as there are tensors of it to fill, they are the same
    tensors and are matched in order. Where it holds more (an index computed in the step, a lookup left out by
    ``--select``) or fewer, which is whose cannot be told: those tensors are chosen as without a sketch, never
    given another tensor's count. A partial sketch (``more``: the step read more tensors than were kept) is not
    used."""
    if sketch.get("more"):
        return {}
    recs: dict[tuple[tuple[int, ...], int], list[dict[str, Any]]] = {}
    for x in sketch.get("lookups") or []:
        try:
            key = (tuple(int(d) for d in x["shape"]), int(x["rows"]))
            n, dist = int(x["indices"]), int(x["distinct"])
        except (KeyError, TypeError, ValueError):
            return {}
        recs.setdefault(key, []).append({"indices": n, "distinct": dist})
    mine: dict[tuple[tuple[int, ...], int], list[tuple]] = {}
    for key, _ref, t, rows, _fns in work:
        mine.setdefault((tuple(t.shape), rows), []).append(key)
    out = {}
    for k, keys in mine.items():
        if len(recs.get(k, ())) == len(keys):
            out.update({key: r for key, r in zip(keys, recs[k], strict=True) if 0 < r["distinct"] <= r["indices"]})
    return out


def _choose(plan: Plan, seed: int, timer: Callable[[Callable, list[Any]], float],
            given: dict[tuple[int, int], str] | None = None, forced: float | None = None,
            sketch: dict[str, Any] | None = None, time_rest: bool = True,
            given_by: str = "--index-spread") -> list[dict[str, Any]] | None:
    by_key = lookup_tensors(plan)
    work: list[_Work] = [(key, lk.ref, lk.tensor, lk.rows, [(i, None) for i in lk.steps])
                         for key, lk in by_key.items()]
    if not work:
        return None
    gen = torch.Generator().manual_seed(seed + 7919)
    if forced is not None or given is not None:
        kept = []
        for w in work:
            key, ref, t, rows, _fns = w
            label = label_of(forced) if forced is not None else given.get((by_key[key].steps[0], ref.tensor_id))  # type: ignore[union-attr]
            try:  # given: the unscaled step's label ("zipf 1.07": an exponent fitted to capture.json)
                skew = forced if forced is not None else parse_spread(label or "")
            except UserError:
                continue
            if skew is None:
                continue
            t.copy_(spread_indices(t.shape, rows, skew, gen, t.dtype))
            kept.append(_record(plan, w, label_of(skew), by_key[key].steps,
                                **{"as": f"given by {given_by}" if forced is not None
                                   else "the unscaled step's choice"}))
        # (not in a multi-rank replay: a whole step there runs collectives that the other ranks would not meet;
        # a spread its step cannot run over fails in its first iteration instead)
        if forced is not None and kept and plan.comm is None and not step_runs(plan):
            raise UserError(f"{given_by} {label_of(forced)}: the step does not run over such indices (another "
                            "op reads them with a shape that follows their values); use auto or uniform")
        return kept or None
    fitted: list[dict[str, Any]] = []
    matched = _match(sketch, work) if sketch else {}
    for w in work:
        key, _ref, t, rows, _fns = w
        if key in matched:
            rec = matched[key]
            skew = fit_skew(rows, rec["indices"], rec["distinct"])
            t.copy_(spread_indices(t.shape, rows, skew, gen, t.dtype))
            fitted.append(_record(plan, w, label_of(skew), by_key[key].steps, distinct_original=rec["distinct"],
                                  distinct_replay=int(torch.unique(t).numel()),
                                  **{"as": "capture.json: the distinct rows the original's indices touched"}))
    if fitted and plan.comm is None and not step_runs(plan):
        for w, o in zip([w for w in work if w[0] in matched], fitted, strict=True):
            t, rows = w[2], w[3]  # the step cannot run over them: back to uniform
            t.copy_(spread_indices(t.shape, rows, 0.0, gen, t.dtype))
            o.update(chosen="uniform", fallback="the step does not run over the fitted indices",
                     distinct_replay=int(torch.unique(t).numel()))
    # the rest is timed on the lookups that read only true inputs, against their recorded durations (CPU only)
    work = [] if not time_rest else [
        (key, ref, t, rows, timed) for key, ref, t, rows, fns in work
        if key not in matched and t.device.type == "cpu"
        and (timed := [(i, f) for i, _f in fns if plan.steps[i].op.dur_s is not None
                       and (f := _standalone(plan, i)) is not None])]
    if not work:
        return fitted or None
    values = {(key, label): spread_indices(t.shape, rows, skew, gen, t.dtype)
              for key, _ref, t, rows, _f in work for label, skew in SPREADS}
    times: dict[tuple, list[float]] = {}
    R = plan.registers()
    # timed under the recorders the original ran under (their cost on a lookup is not a fixed cost per node:
    # 30-40% of a max-pooled embedding_bag here), so that the times compare with the recorded durations
    from benchmint.replay.fidelity import _observed
    from benchmint.trace.capture import scratch_dir

    with tempfile.TemporaryDirectory(prefix="benchmint-spread-", dir=scratch_dir()) as tmp:
        with _observed([ProfilerActivity.CPU], os.path.join(tmp, "et.json")):
            for r in range(ROUNDS):
                order = SPREADS[r % len(SPREADS):] + SPREADS[: r % len(SPREADS)]  # each spread first in turn
                for label, _skew in order:
                    for key, _ref, t, _rows, _f in work:
                        t.copy_(values[(key, label)])
                    for key, _ref, _t, _rows, fns in work:
                        times.setdefault((key, label), []).append(sum(timer(f, R) for _i, f in fns))
    out: list[dict[str, Any]] = []
    for w in work:
        key, _ref, t, _rows, fns = w
        target = sum(plan.steps[i].op.dur_s for i, _f in fns)  # type: ignore[misc]
        med = {label: statistics.median(times[(key, label)]) for label, _s in SPREADS}
        off = {label: abs(math.log(m / target)) if m > 0 and target > 0 else math.inf for label, m in med.items()}
        # a skew counts only where it changes the lookup's time here, in (nearly) every round: a table that
        # stays in cache runs as fast over any spread, and noise must not pick one
        uni = times[(key, "uniform")]
        apart = {label for label, _s in SPREADS if label != "uniform"
                 and med[label] <= FASTER * med["uniform"]
                 and sum(a < b for a, b in zip(times[(key, label)], uni, strict=True)) >= AGREE * len(uni)}
        best = min(apart | {"uniform"}, key=lambda x: off[x])
        if off["uniform"] <= KEEP_UNIFORM or off["uniform"] - off[best] < MARGIN:
            best = "uniform"
        t.copy_(values[(key, best)])
        out.append(_record(plan, w, best, by_key[key].steps, original_s=target, times_s=med))
    if any(o["chosen"] != "uniform" for o in out) and not step_runs(plan):
        # another op reads the same indices with a shape that follows their values (unique, coalesce, ...): the
        # plan's check pass ran them uniform; a spread it cannot run is given up, never replayed half-way
        for (_key, _ref, t, _rows, _f), o in zip(work, out, strict=True):
            if o["chosen"] != "uniform":
                t.copy_(values[(_key, "uniform")])
                o["chosen"], o["fallback"] = "uniform", f"the step does not run over {o['chosen']} indices"
    return fitted + out


def step_runs(plan: Plan) -> bool:
    """Whether one whole step runs over the indices now filled in (a real pass, as the plan's check)."""
    try:
        plan.compile()(plan.registers())
    except Exception:  # noqa: BLE001 - any failure of the step means the spread cannot stay
        return False
    return True


HOW = ("per made-up index tensor read by a lookup: uniform or Zipf-like (exponent 0.8, 1.05, 1.3) indices, "
       "each timed on the lookups that read it under ET + Kineto (median of interleaved rounds) against their "
       "recorded durations; uniform kept unless more than 15% off and another is at least 5% closer and runs "
       "the lookups at least 10% faster than uniform in 80% of the rounds")
