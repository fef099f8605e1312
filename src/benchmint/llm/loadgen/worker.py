"""One LoadGen test in its own process: ``python -m benchmint.llm.loadgen.worker SPEC.json``.

LoadGen keeps global state (settings, logger) for the life of a process, so every test (a performance run,
an accuracy run, each trial of a sweep) runs in a fresh worker. The spec names the backend, the samples
file, the :class:`~benchmint.llm.loadgen.settings.RunSettings` and the output folder; the worker writes the
LoadGen logs there and ``records.jsonl`` (one RequestRecord per completed query, with its QSL index).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import orjson

from benchmint.core.clock import ClockAnchor, now_ns
from benchmint.core.jsonio import read_json, write_json
from benchmint.core.redact import known_secrets, redact_text
from benchmint.llm.loadgen.backend_factory import make_backend
from benchmint.llm.loadgen.settings import RunSettings, build_test_settings
from benchmint.llm.loadgen.sut import AsyncSUT, LoopThread, Sample
from benchmint.llm.types import Backend, RequestRecord


def read_samples(path: Path) -> list[Sample]:
    out = []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                out.append(Sample(**orjson.loads(line)))
    return out


async def _warm_up(backend: Backend, samples: list[Sample], n: int) -> None:
    import asyncio

    from benchmint.llm.types import GenRequest

    picks = [samples[i % len(samples)] for i in range(n)]
    reqs = [GenRequest(id=-1 - i, prompt=p.prompt, max_tokens=p.max_tokens) for i, p in enumerate(picks)]
    await asyncio.gather(*(backend.generate(r) for r in reqs), return_exceptions=True)


def run_spec(spec: dict) -> dict:
    import mlperf_loadgen as lg

    out = Path(spec["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    samples = read_samples(Path(spec["samples_path"]))
    rs = RunSettings.from_dict(spec["settings"])
    settings = build_test_settings(rs)

    loop = LoopThread(spec.get("event_loop", "uvloop"))
    backend = make_backend(spec["backend"])
    loop.run(backend.start(), timeout=spec.get("start_timeout_s", 600))
    warmup = int(spec.get("warmup") or 0)
    if warmup:  # before LoadGen starts, outside every figure (engines that compile or fill caches)
        loop.run(_warm_up(backend, samples, warmup), timeout=spec.get("start_timeout_s", 600))
    # each completed query is on disk at once: a test stopped early (Ctrl-C) still leaves its requests
    records_file = open(out / "records.jsonl", "wb")  # noqa: SIM115 - closed below, after the test

    secrets = known_secrets()

    def sink(index: int, rec: RequestRecord) -> None:
        d = dataclasses.asdict(rec)
        d["qsl_index"] = index
        if d["error"]:  # records.jsonl is recorded: an error text may quote a URL's user:password
            d["error"] = redact_text(d["error"], secrets)
        records_file.write(orjson.dumps(d) + b"\n")
        records_file.flush()

    sut_impl = AsyncSUT(backend, samples, loop, max_concurrency=int(spec.get("max_concurrency") or 0), sink=sink)

    perf_count = rs.performance_sample_count or len(samples)
    sut = lg.ConstructSUT(sut_impl.issue_queries, sut_impl.flush_queries)
    qsl = lg.ConstructQSL(len(samples), min(perf_count, len(samples)), lambda idx: None, lambda idx: None)
    log = lg.LogSettings()
    log.log_output.outdir = str(out)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = bool(spec.get("trace", False))

    meter = None
    if spec.get("energy"):
        from benchmint.llm.energy import EnergyMeter

        meter = EnergyMeter()  # around the LoadGen test only: model loading is not counted
    anchor = ClockAnchor.take()
    t0 = now_ns()
    # what a parent needs to read the streamed records if the test never finishes (the final file replaces it)
    write_json(out / "worker.json", {"test_start_ns": t0, "clock": anchor.describe(), "finished": False})
    try:
        if meter is not None:
            with meter:
                lg.StartTestWithLogSettings(sut, qsl, settings, log)
        else:
            lg.StartTestWithLogSettings(sut, qsl, settings, log)
    finally:
        t1 = now_ns()
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
        try:
            loop.run(backend.close(), timeout=60)
        finally:
            loop.stop()
            records_file.close()

    out_tokens = sum(r.output_tokens or 0 for _, r in sut_impl.records if r.ok)
    info = {
        "warmup_requests": warmup,
        "energy": meter.result(out_tokens or None) if meter is not None else None,
        "issued": sut_impl.issued,
        "completed": sut_impl.completed,
        "test_start_ns": t0,
        "test_end_ns": t1,
        "test_wall_s": (t1 - t0) / 1e9,
        "event_loop": loop.kind,
        "clock": anchor.describe(),
        "finished_at_s": time.time(),
    }
    write_json(out / "worker.json", info)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m benchmint.llm.loadgen.worker SPEC.json", file=sys.stderr)
        return 2
    run_spec(read_json(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
