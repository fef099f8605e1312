"""A measurement space for ``benchmint next``: what to run (an LLM backend or a trace replay), the axes to
vary with their values, the target to learn and where it matters (an SLO on it, or its optimum).

SPACE.yaml::

    name: tiny-cpu               # optional (default: the file's stem); tags the runs this space makes
    kind: llm                    # llm (default) or replay
    backend: transformers        # transformers (in-process), builtin-server (started on 127.0.0.1) or
                                 # openai-http (a server you run, at url:); any backend of the registry
    model: tiny                  # a local folder, a hub name, or tiny (built locally)
    url: http://127.0.0.1:8000/v1  # openai-http only
    trace: capture-dir/          # replay only: an execution trace or capture folder
    target: output_tokens_per_s  # the figure to learn (see TARGETS)
    slo: {tpot_p99_s: 0.02}      # optional: a limit on the target; next looks near that frontier
    goal: max                    # optional (max or min): next looks near the target's optimum
    fixed: {scenario: concurrency, num_requests: 16, dataset: synthetic}   # settings every run shares
    axes:
      concurrency: [1, 2, 4, 8]
      max_batch_size: [1, 4, 8]
      output_tokens: [8, 16, 32]

Every axis value is a positive number. Unknown keys, axes or targets are user errors naming the file.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core.errors import UserError

# axes a space may vary, per kind of run
LLM_AXES = ("rate", "concurrency", "max_batch_size", "input_tokens", "output_tokens", "num_requests",
            "burstiness", "threads")
REPLAY_AXES = ("threads", "iters")
AXES = {"llm": LLM_AXES, "replay": REPLAY_AXES}
#: a space's own backend: `benchmint llm serve` started on 127.0.0.1 for each configuration (one per batch size);
#: any other value is a backend of the registry (llm/backends/registry.py), asked what it can do
BUILTIN_SERVER = "builtin-server"


def space_backend(name: str) -> Any:
    """The registry entry of a space's backend (None for ``builtin-server``); one line for an unknown one."""
    if name == BUILTIN_SERVER:
        return None
    from benchmint.llm.backends.registry import backend_entry

    return backend_entry(name)
SPACE_KEYS = ("name", "kind", "backend", "model", "url", "trace", "device", "target", "slo", "goal", "fixed",
              "axes", "seed")
# settings `fixed:` may give (llm: the BenchConfig fields a space run uses; replay: replay_trace's)
LLM_FIXED = ("scenario", "rate", "concurrency", "num_requests", "duration_s", "warmup", "dataset",
             "input_tokens", "output_tokens", "max_batch_size", "burstiness", "api", "stream", "seed",
             "ignore_eos", "timeout_s", "threads", "api_key")
REPLAY_FIXED = ("threads", "iters", "warmup", "seed", "gaps", "kineto")


@dataclass(frozen=True)
class Target:
    """A figure a space run yields: where it is in the RunRecord's metrics, its unit, and which way is good."""

    name: str
    kind: str  # llm | replay
    path: tuple[str, ...]  # keys into RunRecord.metrics
    unit: str
    better: str  # higher | lower

    per_cpu_s: bool = False  # divided by the CPU seconds this process spent on the run (config.measurement)

    def value(self, rec: Any) -> float | None:
        """The target's value in a RunRecord (None when the run has none)."""
        v = _dig(rec.metrics.to_dict(), self.path)
        if v is None or not self.per_cpu_s:
            return v
        cpu = _dig(rec.config or {}, ("measurement", "process_cpu_s"))
        return v / cpu if cpu else None


def _dig(d: dict[str, Any], path: tuple[str, ...]) -> float | None:
    v: Any = d
    for k in path:
        if not isinstance(v, dict):
            return None
        v = v.get(k)
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and v > 0 else None


TARGETS = {t.name: t for t in (
    Target("output_tokens_per_s", "llm", ("throughput", "output_tokens_per_s"), "tokens/s", "higher"),
    Target("requests_per_s", "llm", ("throughput", "requests_per_s"), "requests/s", "higher"),
    Target("ttft_p99_s", "llm", ("ttft_s", "p99"), "s", "lower"),
    Target("tpot_p99_s", "llm", ("tpot_s", "p99"), "s", "lower"),
    Target("e2e_p50_s", "llm", ("e2e_s", "p50"), "s", "lower"),
    Target("e2e_p99_s", "llm", ("e2e_s", "p99"), "s", "lower"),
    # tokens per CPU second of this process (client and engine): the cost of a token on this host, which
    # other work on a shared machine disturbs far less than tokens per wall-clock second (in-process engine
    # and built-in server only: a server you run spends CPU this process does not see)
    Target("output_tokens_per_cpu_s", "llm", ("output_tokens_total",), "tokens/CPU-s", "higher", per_cpu_s=True),
    Target("iteration_s", "replay", ("iter_time_s", "median"), "s", "lower"),
)}
DEFAULT_TARGET = {"llm": "output_tokens_per_s", "replay": "iteration_s"}


@dataclass
class Space:
    name: str
    kind: str
    axes: dict[str, list[float]]
    target: str
    backend: str = "transformers"
    model: str | None = "tiny"  # None: the first model an openai-http server lists
    url: str | None = None
    trace: str | None = None
    device: str = "cpu"
    fixed: dict[str, Any] = field(default_factory=dict)
    slo: float | None = None  # a limit on the target (the frontier)
    slos: dict[str, float] = field(default_factory=dict)  # every limit the space sets, per target
    goal: str | None = None  # max | min: the optimum of the target
    seed: int = 0
    source: str = ""

    @property
    def axis_names(self) -> list[str]:
        return list(self.axes)

    def grid(self) -> list[dict[str, float]]:
        """Every configuration of the space (the product of the axes' values), in a fixed order."""
        names = self.axis_names
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*self.axes.values())]

    def with_target(self, target: str | None) -> Space:
        if target is None:
            return self
        check_target(target, self.kind, "--target")
        return Space(**{**self.__dict__, "target": target, "slo": self.slos.get(target)})

    def mode(self) -> str:
        """What `next` looks for: the SLO frontier, the optimum, or uncertainty everywhere."""
        if self.slo is not None:
            return "frontier"
        if self.goal is not None:
            return "optimum"
        return "uncertainty"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "backend": self.backend if self.kind == "llm" else "replay",
                "model": self.model if self.kind == "llm" else None, "trace": self.trace, "target": self.target,
                "slo": self.slo, "goal": self.goal, "axes": self.axes, "fixed": self.fixed,
                "configurations": len(self.grid())}


def check_target(target: str, kind: str, where: str) -> None:
    if target not in TARGETS or TARGETS[target].kind != kind:
        ok = ", ".join(n for n, t in TARGETS.items() if t.kind == kind)
        raise UserError(f"{where}: unknown target {target!r} for a {kind} space; choose one of {ok}")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_space(data: Any, where: str, name: str = "space") -> Space:
    """A :class:`Space` from the parsed YAML; every problem is a UserError naming ``where``."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a space is a YAML mapping with at least `axes:`; see docs/next.md")
    unknown = sorted(set(map(str, data)) - set(SPACE_KEYS))
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; a space has {', '.join(SPACE_KEYS)}")
    kind = data.get("kind", "llm")
    if kind not in AXES:
        raise UserError(f"{where}: kind {kind!r}: choose llm or replay")
    axes_in = data.get("axes")
    if not isinstance(axes_in, dict) or not axes_in:
        raise UserError(f"{where}: `axes:` must map at least one axis to a list of values "
                        f"({', '.join(AXES[kind])})")
    axes: dict[str, list[float]] = {}
    for axis, values in axes_in.items():
        if axis not in AXES[kind]:
            raise UserError(f"{where}: unknown axis {axis!r} for a {kind} space; choose from {', '.join(AXES[kind])}")
        if not isinstance(values, list) or not values or not all(_number(v) and v > 0 for v in values):
            raise UserError(f"{where}: axis {axis!r} needs a non-empty list of positive numbers, e.g. [1, 2, 4]")
        if len(set(values)) != len(values):
            raise UserError(f"{where}: axis {axis!r} lists a value twice")
        axes[str(axis)] = sorted(values)
    target = data.get("target", DEFAULT_TARGET[kind])
    check_target(target, kind, where)
    slo_in = data.get("slo")
    slo = None
    if slo_in is not None:
        if not isinstance(slo_in, dict) or not all(_number(v) and v > 0 for v in slo_in.values()):
            raise UserError(f"{where}: `slo:` maps a target to a positive limit, e.g. {{tpot_p99_s: 0.02}}")
        for k in slo_in:
            check_target(str(k), kind, f"{where}: slo")
        slo = slo_in.get(target)
    goal = data.get("goal")
    if goal not in (None, "max", "min"):
        raise UserError(f"{where}: goal {goal!r}: choose max or min (or leave it out)")
    fixed = data.get("fixed") or {}
    allowed = LLM_FIXED if kind == "llm" else REPLAY_FIXED
    if not isinstance(fixed, dict) or any(k not in allowed for k in fixed):
        bad = next((k for k in fixed if k not in allowed), None) if isinstance(fixed, dict) else None
        raise UserError(f"{where}: `fixed:` {'key ' + repr(bad) if bad else 'must be a mapping'}; "
                        f"a {kind} space fixes {', '.join(allowed)}")
    clash = sorted(set(fixed) & set(axes))
    if clash:
        raise UserError(f"{where}: {clash[0]!r} is both an axis and fixed; keep one")
    backend = data.get("backend", "transformers")
    url = data.get("url")
    trace = data.get("trace")
    if kind == "llm":
        try:
            entry = space_backend(str(backend))
        except UserError as e:
            raise UserError(f"{where}: {e}; or {BUILTIN_SERVER}") from None
        external = entry is not None and entry.server  # a server the user runs, at url:
        if external and not url:
            raise UserError(f"{where}: backend {backend} needs `url:` (the server's base URL)")
        if external and any(a in axes for a in ("max_batch_size", "threads")):
            raise UserError(f"{where}: a server you run cannot change max_batch_size or threads per run; use "
                            "backend builtin-server or transformers, or drop those axes")
        if external and TARGETS[target].per_cpu_s:
            raise UserError(f"{where}: target {target} counts this process's CPU time, which misses a server "
                            "you run; use backend builtin-server or transformers")
    elif not trace:
        raise UserError(f"{where}: a replay space needs `trace:` (an execution trace or capture folder)")
    seed = data.get("seed", 0)
    if not isinstance(seed, int):
        raise UserError(f"{where}: seed must be an integer")
    n = 1
    for v in axes.values():
        n *= len(v)
    if n > 100_000:
        raise UserError(f"{where}: the axes make {n} configurations; keep a space under 100000")
    entry = space_backend(str(backend)) if kind == "llm" else None
    model = str(data["model"]) if data.get("model") else None if entry is not None and entry.server else "tiny"
    return Space(name=str(data.get("name") or name), kind=kind, axes=axes, target=target, backend=backend,
                 model=model, url=url, trace=str(trace) if trace else None, device=str(data.get("device") or "cpu"),
                 fixed=dict(fixed), slo=slo, slos=dict(slo_in or {}), goal=goal, seed=seed, source=where)


def load_space(path: str | os.PathLike) -> Space:
    """Read and check SPACE.yaml (a user error names the file and the problem)."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{p}: no such space file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read the space file ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{p}: not valid YAML ({first})") from None
    space = parse_space(data, str(p), name=p.stem)
    if space.kind == "replay" and space.trace and not Path(space.trace).is_absolute():
        space.trace = str((p.parent / space.trace).resolve()) if (p.parent / space.trace).exists() else space.trace
    return space


def point_key(point: dict[str, float]) -> tuple:
    return tuple(sorted((k, float(v)) for k, v in point.items()))
