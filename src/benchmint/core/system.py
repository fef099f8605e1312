"""What the tool sees of the machine: CPU, memory, GPUs (NVML), OS, Python and package versions.

Used by ``benchmint env``, by trace capture (``capture.json``) and by every RunRecord's ``system`` block.
It lives in ``core`` rather than ``results`` because the trace layer needs it too and must not import
``results``.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version

KEY_PACKAGES = (
    "benchmint",
    "torch",
    "numpy",
    "transformers",
    "tokenizers",
    "datasets",
    "aiohttp",
    "uvicorn",
    "pyarrow",
    "duckdb",
    "scikit-learn",
    "mlcommons-loadgen",
    "vllm",
    "sglang",
)


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


@functools.cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info().get("brand_raw") or platform.processor() or "unknown"
    except Exception:  # pragma: no cover - cpuinfo is best effort
        return platform.processor() or "unknown"


def gpus() -> list[dict]:
    """GPUs through NVML when the driver is present; an empty list otherwise (never raises)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    out = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "name": name, "memory_bytes": int(mem.total), "driver": driver})
    except Exception:
        pass
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return out


def memory_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def host_summary(packages: tuple[str, ...] = KEY_PACKAGES) -> dict:
    """A JSON-ready description of this host and its software."""
    import torch

    return {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": _physical_cores(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory_bytes(),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
        "packages": {p: package_version(p) for p in packages if package_version(p) is not None},
    }


def _physical_cores() -> int | None:
    try:
        import psutil

        return psutil.cpu_count(logical=False)
    except Exception:
        return None
