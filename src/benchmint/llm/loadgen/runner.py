"""Run one LoadGen test in a fresh subprocess and read back what it wrote.

The parent never imports ``mlperf_loadgen``: LoadGen keeps global settings and logging state per process,
so each test (performance, accuracy, each sweep trial) gets its own ``python -m
benchmint.llm.loadgen.worker``. The worker's stdout/stderr go to ``worker.log`` in the test's folder.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from benchmint.core.errors import UserError
from benchmint.core.jsonio import read_json, write_json
from benchmint.llm.loadgen.mllog import parse_detail, summarize
from benchmint.llm.loadgen.settings import RunSettings
from benchmint.llm.loadgen.sut import Sample
from benchmint.llm.types import RequestRecord

_RECORD_FIELDS = {f.name for f in dataclasses.fields(RequestRecord)}


def write_samples(samples: list[Sample], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for s in samples:
            f.write(orjson.dumps(dataclasses.asdict(s)) + b"\n")
    return path


@dataclass
class TestOutcome:
    """What one LoadGen test produced: its folder, the parsed log summary and the client-side records."""

    out_dir: Path
    loadgen: dict[str, Any]
    records: list[RequestRecord]
    qsl_index: list[int]
    worker: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy_log(self) -> Path:
        return self.out_dir / "mlperf_log_accuracy.json"


class TestInterrupted(KeyboardInterrupt):
    """Ctrl-C during a LoadGen test: the worker was stopped; ``outcome`` holds the requests it completed."""

    def __init__(self, outcome: TestOutcome):
        super().__init__("interrupted")
        self.outcome = outcome


def _stop(proc: subprocess.Popen) -> None:
    """Stop the worker and its process group (it leads its own session)."""
    import signal

    def group(sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    if proc.poll() is None:
        group(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            group(signal.SIGKILL)
            proc.wait()
    group(signal.SIGKILL)  # anything the worker started that outlived it


def read_records(path: Path) -> tuple[list[RequestRecord], list[int]]:
    recs, idx = [], []
    if not path.is_file():
        return recs, idx
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:  # the last line of a worker stopped while writing it
                continue
            idx.append(int(d.pop("qsl_index")))
            recs.append(RequestRecord(**{k: v for k, v in d.items() if k in _RECORD_FIELDS}))
    return recs, idx


API_KEY_ENV = "BENCHMINT_BACKEND_API_KEY"  # how a LoadGen worker gets the backend's API key


def _without_api_key(backend: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    opts = dict(backend.get("options") or {})
    key = opts.pop("api_key", None)
    return ({**backend, "options": opts} if key else backend), key


def _redact_log(path: Path) -> None:
    """The worker's log is a recorded file too: take out any credential it printed (a URL's user:password)."""
    from benchmint.core.jsonio import atomic_write_bytes
    from benchmint.core.redact import redact_text

    try:
        text = path.read_text(errors="replace")
    except OSError:
        return
    clean = redact_text(text)
    if clean != text:
        atomic_write_bytes(path, clean.encode())


def run_test(
    out_dir: str | Path,
    samples_path: str | Path,
    settings: RunSettings,
    backend: dict[str, Any],
    max_concurrency: int = 0,
    timeout_s: float | None = None,
    trace: bool = False,
    event_loop: str = "uvloop",
    energy: bool = False,
    warmup: int = 0,
) -> TestOutcome:
    """Run one LoadGen test in a subprocess; raise :class:`UserError` with the log's tail if it fails."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    backend, key = _without_api_key(backend)
    if key:  # the worker reads it from its environment: spec.json is a recorded file, and holds no secret
        env[API_KEY_ENV] = key
    spec = {
        "out_dir": str(out.resolve()),
        "samples_path": str(Path(samples_path).resolve()),
        "settings": settings.to_dict(),
        "backend": backend,
        "max_concurrency": max_concurrency,
        "trace": trace,
        "event_loop": event_loop,
        "energy": energy,
        "warmup": warmup,
    }
    spec_path = write_json(out / "spec.json", spec)
    src_root = str(Path(__file__).resolve().parents[3])  # src/ of this checkout, in case it is not installed
    env["PYTHONPATH"] = src_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log_path = out / "worker.log"
    for stale in ("records.jsonl", "worker.json"):  # an earlier run into the same folder must not be read back
        (out / stale).unlink(missing_ok=True)
    proc: subprocess.Popen | None = None
    with open(log_path, "wb") as log:
        try:
            # its own session: a terminal's Ctrl-C reaches the parent only, which stops the worker and what it
            # started (an engine's processes) together
            proc = subprocess.Popen([sys.executable, "-m", "benchmint.llm.loadgen.worker", str(spec_path)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise UserError(
                f"the LoadGen test in {out} ran past {timeout_s:g} s and was stopped; lower --min-duration or "
                "--min-query-count, or raise the timeout"
            ) from None
        except KeyboardInterrupt:
            # LoadGen cannot be stopped mid-test from Python: stop the worker; its completed requests are on
            # disk already (records.jsonl is written as they complete)
            if proc is not None:
                _stop(proc)
            _redact_log(log_path)
            if not (out / "worker.json").is_file():  # stopped before the test began: nothing was measured
                raise
            records, idx = read_records(out / "records.jsonl")
            worker = read_json(out / "worker.json") if (out / "worker.json").is_file() else {}
            raise TestInterrupted(TestOutcome(out_dir=out, loadgen={}, records=records, qsl_index=idx,
                                              worker=worker)) from None
    assert proc is not None
    _redact_log(log_path)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-6:]
        last = next((ln for ln in reversed(tail) if ln.strip()), "no output")
        raise UserError(f"the LoadGen worker failed (exit {proc.returncode}): {last.strip()} (full log: {log_path})")
    summary = summarize(parse_detail(out))
    records, idx = read_records(out / "records.jsonl")
    worker = read_json(out / "worker.json") if (out / "worker.json").is_file() else {}
    return TestOutcome(out_dir=out, loadgen=summary, records=records, qsl_index=idx, worker=worker)
