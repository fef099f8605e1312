"""Measure one configuration of a :class:`~benchmint.learn.space.Space` on this machine and store the run.

LLM spaces run ``llm bench`` through its Python API (:func:`benchmint.llm.bench.run_bench`): the in-process
engine, a built-in server this module starts on 127.0.0.1 (one per max batch size, stopped by
:meth:`Measurer.close`), or a server the user runs. Replay spaces run :func:`benchmint.replay.api.replay_trace`.
Each run is written like the command that makes it writes its runs (run.json in an output folder, one
RunRecord appended to the results store); its config carries ``space`` = {name, point} so that a later
``benchmint next`` finds the runs it already has.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from benchmint.learn.space import TARGETS, Space, point_key, space_backend

INT_AXES = {"concurrency", "max_batch_size", "num_requests", "threads", "iters"}


def _value(axis: str, v: float) -> Any:
    """An axis value as the run takes it: whole numbers as int (counts always), others as float."""
    return int(v) if axis in INT_AXES or float(v).is_integer() else float(v)


@contextlib.contextmanager
def _threads(n: int | None):
    import torch

    if n is None:
        yield
        return
    prev = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


class Measurer:
    """Runs points of one space; ``store`` None keeps the runs out of the results store (benchmarks)."""

    def __init__(self, space: Space, results_dir: str | os.PathLike | None = None, out_dir: str | os.PathLike | None = None,
                 store: bool = True):
        self.space = space
        self.results_dir = results_dir
        self.out_dir = Path(out_dir) if out_dir else Path("benchmint-runs") / f"next-{space.name}"
        self.store = store
        self._servers: dict[int, Any] = {}
        self.interrupted = False  # the last run was stopped by Ctrl-C (its partial record is stored all the same)

    # ---------------------------------------------------------------- llm
    def _server_url(self, batch: int) -> str:
        """A built-in server with this max batch size, started once on 127.0.0.1 (port chosen by the OS)."""
        if batch not in self._servers:
            from benchmint.llm.engine import AsyncEngine
            from benchmint.llm.server import ServerThread

            engine = AsyncEngine.create(self.space.model, device=self.space.device, max_batch_size=batch)
            srv = ServerThread(engine, model_name=self.space.model, host="127.0.0.1", port=0).start()
            self._servers[batch] = (srv, engine)
        return self._servers[batch][0].url

    def _bench_config(self, point: dict[str, float], out: Path) -> Any:
        from benchmint.llm.bench import BenchConfig

        s = self.space
        opts: dict[str, Any] = {"scenario": "concurrency" if "concurrency" in point or "concurrency" in s.fixed
                                else "server" if "rate" in point or "rate" in s.fixed else "offline",
                                "num_requests": 16, "dataset": "synthetic", "input_tokens": "32", "output_tokens": "16",
                                "seed": s.seed}
        opts.update({k: v for k, v in s.fixed.items() if k != "threads"})
        for axis, v in point.items():
            if axis != "threads":
                opts[axis] = _value(axis, v)
        for k in ("input_tokens", "output_tokens"):  # BenchConfig takes lengths as text (N, MEAN:STD, LO-HI)
            if opts.get(k) is not None:
                opts[k] = str(int(opts[k]) if float(opts[k]).is_integer() else opts[k])
        entry = space_backend(s.backend)  # None: the built-in server, started here per batch size
        if entry is None:
            opts.update(backend="openai-http", url=self._server_url(int(opts.get("max_batch_size", 16))),
                        model=s.model)
        elif entry.server:
            opts.update(backend=entry.kind, url=s.url, model=s.model)
        else:
            opts.update(backend=entry.kind, model=s.model, device=s.device)
        return BenchConfig(**opts, progress=False, out=str(out))

    def _run_llm(self, point: dict[str, float], out: Path) -> Any:
        from benchmint.llm.bench import run_bench
        from benchmint.llm.output import write_outputs

        cfg = self._bench_config(point, out)
        threads = point.get("threads", self.space.fixed.get("threads"))
        with _threads(threads):
            cpu0 = time.process_time()
            res = run_bench(cfg, write=False)
            cpu = time.process_time() - cpu0
        # CPU seconds of this process (client, and the engine when it runs here) over the whole run
        res.result["measurement"]["process_cpu_s"] = cpu
        # llm bench keeps Ctrl-C's partial run and returns: the caller stops after storing it (run_next went on to
        # measure the next configuration and exited 0)
        self.interrupted = bool((res.result.get("requests") or {}).get("interrupted"))
        res.result["config"]["space"] = self._tag(point)
        if threads is not None:
            res.result["config"]["threads"] = int(threads)
        if self.store:
            write_outputs(res, cfg, results_dir=self.results_dir)
            return res.run_record
        from benchmint.llm.output import build_run_record

        return build_run_record(res, cfg, {})

    # ---------------------------------------------------------------- replay
    def _run_replay(self, point: dict[str, float], out: Path) -> Any:
        from benchmint.replay.api import replay_trace, run_record

        s = self.space
        opts = {"threads": None, "iters": 10, "warmup": 2, "seed": s.seed, "gaps": None, "kineto": None, **s.fixed}
        opts.update({a: _value(a, v) for a, v in point.items()})
        res = replay_trace(s.trace, opts["kineto"], device=s.device, threads=opts["threads"], warmup=opts["warmup"],
                           iters=opts["iters"], seed=opts["seed"], gaps=opts["gaps"])
        r = res.result
        config = {"trace": s.trace, "kineto": r.get("kineto"), "device": r["device"], "threads": r["threads"],
                  "warmup": opts["warmup"], "iters": opts["iters"], "seed": opts["seed"], "gaps": r["gaps"],
                  "space": self._tag(point)}
        rec = run_record(res, config)
        rec.artifacts = {"run": "run.json"}
        if self.store:
            from benchmint.results.save import save_run

            save_run(rec, out, store=self.results_dir)
        return rec

    # ---------------------------------------------------------------- common
    def _tag(self, point: dict[str, float]) -> dict[str, Any]:
        return {"name": self.space.name, "point": {a: _value(a, v) for a, v in point.items()}}

    def measure(self, point: dict[str, float]) -> tuple[Any, float | None]:
        """Run one configuration; returns (RunRecord, the target's value or None when the run gave none)."""
        from benchmint.results.record import _new_id

        out = self.out_dir / _new_id()
        rec = self._run_llm(point, out) if self.space.kind == "llm" else self._run_replay(point, out)
        return rec, TARGETS[self.space.target].value(rec)

    def close(self) -> None:
        for srv, engine in self._servers.values():
            srv.stop()
            with contextlib.suppress(Exception):
                engine.close()
        self._servers.clear()

    def __enter__(self) -> Measurer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def stored_points(space: Space, records: list[Any]) -> list[tuple[dict[str, float], float, str]]:
    """Runs of this space already in the store: (point, target value, run id), oldest first; a run of another
    space, of a point outside the grid, or without the target is left out, and so is a run that is not a complete,
    real measurement (partial, failed or invalid; the simulated backend unless the space's own backend is it:
    :mod:`benchmint.learn.quality`)."""
    from benchmint.learn.quality import SIM_BACKENDS, record_reason

    allow_sim = str(space.backend).lower() in SIM_BACKENDS
    grid = {point_key(p): p for p in space.grid()}
    target = TARGETS[space.target]
    out = []
    for rec in records:
        tag = (rec.config or {}).get("space") if isinstance(rec.config, dict) else None
        if not isinstance(tag, dict) or tag.get("name") != space.name or not isinstance(tag.get("point"), dict):
            continue
        pt = {k: float(v) for k, v in tag["point"].items() if isinstance(v, int | float)}
        key = point_key(pt)
        if key not in grid or record_reason(rec, allow_sim) is not None:
            continue
        v = target.value(rec)
        if v is not None:
            out.append((grid[key], v, rec.id))
    return out
