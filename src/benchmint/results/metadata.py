"""Helpers that fill a RunRecord's ``system``, ``workload`` and ``provenance`` blocks.

Measuring layers (replay, llm) call these when they build a RunRecord::

    RunRecord(kind="llm", system=system_block(engine="vllm", engine_version="0.6.3"),
              workload=workload_from_model("tiny-llama", model=model, dataset="sharegpt-sample",
                                           dataset_path=path),
              provenance=provenance(repo=Path.cwd()), ...)

Every helper is best effort: a fact that cannot be learned is ``None``, never an exception.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def accelerator_summary(gpus: list[dict] | None) -> dict[str, Any]:
    """The normalized ``system.accelerator`` block shared by our runs and imported MLPerf results."""
    if not gpus:
        return {"name": "cpu", "count": 0, "vendor": None, "memory_bytes": None}
    names = sorted({g.get("name") or "unknown" for g in gpus})
    return {
        "name": names[0] if len(names) == 1 else " + ".join(names),
        "count": len(gpus),
        "vendor": "NVIDIA" if any("nvidia" in str(g.get("name", "")).lower() or g.get("driver") for g in gpus)
        else None,
        "memory_bytes": int(gpus[0].get("memory_bytes")) if gpus[0].get("memory_bytes") else None,
        "driver": gpus[0].get("driver"),
    }


def system_block(
    host: dict[str, Any] | None = None,
    *,
    engine: str | None = None,
    engine_version: str | None = None,
    server: str | None = None,
    server_version: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """``host_summary()`` (CPU, memory, GPUs via NVML, OS, Python, torch, packages) plus a normalized
    ``accelerator`` block and the engine/server versions when known."""
    if host is None:
        from benchmint.core.system import host_summary

        host = host_summary()
    out = dict(host)
    out.setdefault("accelerator", accelerator_summary(host.get("gpus")))
    pkgs = host.get("packages") or {}
    out.setdefault("torch_version", pkgs.get("torch"))
    out.setdefault("transformers_version", pkgs.get("transformers"))
    out.setdefault("benchmint_version", pkgs.get("benchmint"))
    if engine is not None:
        out["engine"] = engine
    if engine_version is not None:
        out["engine_version"] = engine_version
    if server is not None:
        out["server"] = server
    if server_version is not None:
        out["server_version"] = server_version
    out.update(extra)
    return out


def parameter_count(model: Any) -> int | None:
    """Number of parameters of a torch module (None when not a module)."""
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    try:
        return int(sum(p.numel() for p in params()))
    except Exception:
        return None


def _model_dtype(model: Any) -> str | None:
    dtype = getattr(model, "dtype", None)
    if dtype is None:
        try:
            dtype = next(model.parameters()).dtype
        except Exception:
            return None
    return str(dtype).removeprefix("torch.")


def workload_from_model(
    model_name: str | None,
    *,
    model: Any = None,
    config: Any = None,
    architecture: str | None = None,
    parameters: int | None = None,
    dtype: str | None = None,
    dataset: str | None = None,
    dataset_path: str | os.PathLike | None = None,
    dataset_hash_value: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The ``workload`` block: model name, architecture, parameter count, dtype, dataset and its hash.

    ``model`` (a torch module, e.g. a transformers model) and ``config`` (a transformers config) fill what
    is not given: architecture from ``config.architectures`` / ``config.model_type`` or the class name.
    """
    cfg = config if config is not None else getattr(model, "config", None)
    if architecture is None and cfg is not None:
        archs = getattr(cfg, "architectures", None)
        architecture = archs[0] if archs else None
    if architecture is None and model is not None:
        architecture = type(model).__name__
    if architecture is None and cfg is not None:
        architecture = getattr(cfg, "model_type", None)
    if parameters is None and model is not None:
        parameters = parameter_count(model)
    if dtype is None and model is not None:
        dtype = _model_dtype(model)
    if dtype is None and cfg is not None:
        # ``dtype`` first: newer transformers warn on every read of the deprecated ``torch_dtype``
        raw = getattr(cfg, "dtype", None) if "dtype" in dir(cfg) else getattr(cfg, "torch_dtype", None)
        dtype = str(raw or "").removeprefix("torch.") or None
    if dataset_hash_value is None and dataset_path is not None:
        dataset_hash_value = dataset_hash(dataset_path)
    out = {
        "model_name": model_name,
        "architecture": architecture,
        "parameter_count": parameters,
        "dtype": dtype,
        "dataset": dataset if dataset is not None else (str(dataset_path) if dataset_path else None),
        "dataset_hash": dataset_hash_value,
    }
    out.update(extra)
    return out


def dataset_hash(path: str | os.PathLike) -> str | None:
    """``sha256:<hex>`` of a file, or of a folder's files (relative names and contents, sorted); None if
    the path does not exist."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        files = [path]
        base = path.parent
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        base = path
    else:
        return None
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(base)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()


@functools.lru_cache(maxsize=32)
def _git_revision_cached(path: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if out.returncode != 0:
            return None
        rev = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return rev + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def git_revision(path: str | os.PathLike | None = None) -> str | None:
    """The git commit of the repository holding ``path`` (``-dirty`` appended when tracked files changed),
    or None when it is not in a git repository or git is missing."""
    p = Path(path) if path is not None else Path.cwd()
    if p.is_file():
        p = p.parent
    return _git_revision_cached(str(p.resolve()))


def provenance(
    command_line: list[str] | None = None, repo: str | os.PathLike | None = None, **extra: Any
) -> dict[str, Any]:
    """The ``provenance`` block: command line, benchmint version, cwd and the git revision of ``repo`` (the
    repository under test; defaults to the current directory) when known."""
    from benchmint import __version__

    out: dict[str, Any] = {
        "command_line": list(sys.argv if command_line is None else command_line),
        "benchmint_version": __version__,
        "cwd": str(Path.cwd()),
        "git_revision": git_revision(repo),
        "git_repo": str(Path(repo).resolve()) if repo is not None else None,
    }
    out.update(extra)
    return out
