"""RunRecord: the one record every measuring command writes (run.json) and appends to the results store.

Layers that measure (replay, llm) build a RunRecord and hand it over; the results layer knows nothing of
their internals. Field meanings:

- ``kind``: replay | llm | mlperf | capture | imported
- ``status``: ok | partial (some failures, or interrupted) | failed | invalid (e.g. LoadGen INVALID)
- ``config``: what was asked for (flags, settings), JSON-ready
- ``metrics``: what was measured: the typed model of the run's kind (:mod:`benchmint.results.models`:
  capture, replay, llm, mlperf, sweep, imported), units in names (``_s``, ``_bytes``, ``per_s``)
- ``workload``: model_name, architecture, parameter_count, dtype, dataset, dataset_hash, ...
- ``system``: :func:`benchmint.core.system.host_summary` plus engine/server versions when known
- ``provenance``: command line, benchmint version, git revision of the repo under test when known
- ``artifacts``: paths of files the run wrote (relative to the run's output folder when possible)
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from benchmint.core.jsonio import read_json, write_json
from benchmint.results.models import Model, RunMetrics, metrics_from_dict, result_kind

SCHEMA_VERSION = "2.0"
#: the major versions this code reads (1.x: metrics were free-form dicts; they read into the typed models)
READABLE_MAJORS = ("1", "2")
KINDS = ("replay", "llm", "mlperf", "capture", "imported")
STATUSES = ("ok", "partial", "failed", "invalid")


def _new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def default_provenance() -> dict:
    """Command line, benchmint version and the git revision of the current directory when it is in a git
    repository (see :func:`benchmint.results.metadata.provenance` to name another repository)."""
    from benchmint import __version__
    from benchmint.results.metadata import git_revision

    return {"command_line": list(sys.argv), "benchmint_version": __version__, "git_revision": git_revision()}


class RunRecord(msgspec.Struct, kw_only=False):
    """One run. ``metrics`` is the typed model of the run's kind (:mod:`benchmint.results.models`); a dict
    given here is converted, and a key its model does not declare is refused (:class:`UnknownField`)."""

    kind: str
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: RunMetrics = msgspec.field(default_factory=dict)  # type: ignore[assignment]
    workload: dict[str, Any] = msgspec.field(default_factory=dict)
    system: dict[str, Any] = msgspec.field(default_factory=dict)
    provenance: dict[str, Any] = msgspec.field(default_factory=default_provenance)
    artifacts: dict[str, Any] = msgspec.field(default_factory=dict)
    status: str = "ok"
    id: str = msgspec.field(default_factory=_new_id)
    created_s: float = msgspec.field(default_factory=time.time)
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; expected one of {KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {STATUSES}")
        if not isinstance(self.metrics, Model):
            self.metrics = metrics_from_dict(self.kind, self.metrics)

    @property
    def result_kind(self) -> str:
        """``capture``, ``replay``, ``llm``, ``mlperf``, ``sweep`` (a peak search) or ``imported``: which model
        ``metrics`` is."""
        return result_kind(self.kind, self.metrics)

    def to_dict(self) -> dict[str, Any]:
        """The record as a dict (what run.json and the store hold): ``metrics`` as plain builtins, the other
        blocks as given (the JSON writers make paths, sets and numpy values JSON)."""
        d = {name: getattr(self, name) for name in self.__struct_fields__}
        d["metrics"] = self.metrics.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, strict: bool = False) -> RunRecord:
        """A record from its dict (run.json, the store). Keys of ``metrics`` that its model does not declare
        are dropped unless ``strict``; top-level keys this version does not know are ignored."""
        known = set(cls.__struct_fields__)
        kw = {k: v for k, v in d.items() if k in known}
        if "kind" in kw and kw["kind"] in KINDS:
            kw["metrics"] = metrics_from_dict(kw["kind"], kw.get("metrics") or {}, strict=strict)
        return cls(**kw)

    def write(self, out_dir: str | Path, name: str = "run.json") -> Path:
        """Write ``run.json`` (atomically) into the run's output folder."""
        return write_json(Path(out_dir) / name, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(read_json(path))
