"""RunRecord: the one record every measuring command writes (run.json) and appends to the results store.

Layers that measure (replay, llm) build a RunRecord and hand it over; the results layer knows nothing of
their internals. Field meanings:

- ``kind``: replay | llm | mlperf | capture | imported
- ``status``: ok | partial (some failures, or interrupted) | failed | invalid (e.g. LoadGen INVALID)
- ``config``: what was asked for (flags, settings), JSON-ready
- ``metrics``: what was measured, JSON-ready, units in names (``_s``, ``_bytes``, ``per_s``)
- ``workload``: model_name, architecture, parameter_count, dtype, dataset, dataset_hash, ...
- ``system``: :func:`benchmint.core.system.host_summary` plus engine/server versions when known
- ``provenance``: command line, benchmint version, git revision of the repo under test when known
- ``artifacts``: paths of files the run wrote (relative to the run's output folder when possible)
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core.jsonio import read_json, write_json

SCHEMA_VERSION = "1.0"
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


@dataclass
class RunRecord:
    kind: str
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    workload: dict = field(default_factory=dict)
    system: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=default_provenance)
    artifacts: dict = field(default_factory=dict)
    status: str = "ok"
    id: str = field(default_factory=_new_id)
    created_s: float = field(default_factory=time.time)
    schema_version: str = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown run kind {self.kind!r}; expected one of {KINDS}")
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {STATUSES}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def write(self, out_dir: str | Path, name: str = "run.json") -> Path:
        """Write ``run.json`` (atomically) into the run's output folder."""
        return write_json(Path(out_dir) / name, self.to_dict())

    @classmethod
    def read(cls, path: str | Path) -> RunRecord:
        return cls.from_dict(read_json(path))
