"""System metrics of a window of steps: what the process did besides taking time.

Measured over a window (the capture's un-observed measured steps, the replay's timed iterations) from the
kernel's own accounting of this process (``resource.getrusage``, ``/proc/self/status``):

* ``cpu_utilization``: CPU time (user + system, all threads) over wall time; with N intra-op threads a
  compute-bound step approaches N (``cpu_utilization_per_thread`` divides by the thread count);
* ``voluntary_ctx_switches_per_step`` / ``involuntary_ctx_switches_per_step``: the process's context switches
  in the window, per step;
* ``minor_page_faults_per_step`` / ``major_page_faults_per_step``;
* ``peak_rss_bytes``: the peak resident set during the window (the kernel's high-water mark reset at the
  window's start through ``/proc/self/clear_refs``; where that cannot be reset, the process's lifetime peak,
  and ``peak_rss_how`` says so);
* on CUDA, with NVML (pynvml) installed: ``gpu_sm_utilization`` (percent, the driver's last sample period),
  ``gpu_memory_used_bytes`` and ``gpu_power_w`` read at the window's end.

A counter that cannot be read here is listed in ``unavailable`` with the reason, never given as zero:
hardware performance counters (cycles, instructions, cache misses) are not read (virtual machines rarely
expose them), NVML counters without a CUDA device or pynvml.
"""

from __future__ import annotations

import resource
import time
from typing import Any

TOLERANCE = 0.10  # side by side, a difference beyond this is flagged
HW_COUNTERS = "hardware performance counters (cycles, instructions, cache misses): not read"
COMPARED = ("cpu_utilization", "cpu_utilization_per_thread", "voluntary_ctx_switches_per_step",
            "involuntary_ctx_switches_per_step", "minor_page_faults_per_step", "major_page_faults_per_step",
            "peak_rss_bytes", "gpu_sm_utilization", "gpu_memory_used_bytes", "gpu_power_w")


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Window:
    """``with Window(steps, threads, device) as w: ...``; then ``w.metrics`` (a dict, see the module doc)."""

    def __init__(self, steps: int = 1, threads: int | None = None, device: str = "cpu"):
        self.steps = max(1, steps)
        self.threads = threads
        self.device = device
        self.metrics: dict[str, Any] = {}

    def __enter__(self) -> Window:
        self._reset = _reset_peak_rss()
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.metrics = measured(self._ru, ru, wall, self.steps, self.threads, self._reset, self.device)


def measured(r0: Any, r1: Any, wall: float, steps: int, threads: int | None, reset: bool,
             device: str = "cpu") -> dict[str, Any]:
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out: dict[str, Any] = {
        "steps": steps,
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": threads,
        "cpu_utilization": cpu / wall if wall > 0 else None,
        "cpu_utilization_per_thread": cpu / wall / threads if wall > 0 and threads else None,
        "voluntary_ctx_switches_per_step": (r1.ru_nvcsw - r0.ru_nvcsw) / steps,
        "involuntary_ctx_switches_per_step": (r1.ru_nivcsw - r0.ru_nivcsw) / steps,
        "minor_page_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / steps,
        "major_page_faults_per_step": (r1.ru_majflt - r0.ru_majflt) / steps,
    }
    unavailable: dict[str, str] = {"hardware_counters": HW_COUNTERS}
    hwm = _status_kib("VmHWM") if reset else None
    if hwm is not None:
        out["peak_rss_bytes"] = hwm
        out["peak_rss_how"] = "VmHWM of /proc/self/status, reset at the window's start"
    else:
        out["peak_rss_bytes"] = r1.ru_maxrss * 1024
        out["peak_rss_how"] = "ru_maxrss: the process's lifetime peak (the high-water mark could not be reset)"
    out.update(_nvml(device, unavailable))
    out["unavailable"] = unavailable
    out["how"] = ("getrusage(RUSAGE_SELF) deltas over the window (all threads of the process), per step; "
                  "wall time by time.perf_counter")
    return out


def _nvml(device: str, unavailable: dict[str, str]) -> dict[str, Any]:
    names = ("gpu_sm_utilization", "gpu_memory_used_bytes", "gpu_power_w")
    if not device.startswith("cuda"):
        for n in names:
            unavailable[n] = "no CUDA device in use"
        return {}
    try:
        import pynvml

        pynvml.nvmlInit()
        idx = int(device.split(":", 1)[1]) if ":" in device else 0
        h = pynvml.nvmlDeviceGetHandleByIndex(idx)
        return {"gpu_sm_utilization": float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                "gpu_memory_used_bytes": int(pynvml.nvmlDeviceGetMemoryInfo(h).used),
                "gpu_power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0}
    except Exception as e:  # noqa: BLE001 - pynvml missing, no driver, no permission: said, never zero
        for n in names:
            unavailable[n] = f"NVML not readable ({type(e).__name__}: {e})"
        return {}


def side_by_side(original: dict[str, Any] | None, replay: dict[str, Any] | None,
                 tolerance: float = TOLERANCE) -> dict[str, Any]:
    """Per metric: the original's and the replay's value, their relative difference and whether it exceeds
    ``tolerance``; a metric one side lacks is listed under ``unavailable`` with the reason."""
    rows: dict[str, Any] = {}
    unavailable: dict[str, str] = {}
    if not original:
        return {"metrics": {}, "unavailable": {"all": "the capture recorded no system metrics (an older "
                                                      "capture.json, or a trace recorded without benchmint capture)"},
                "tolerance": tolerance}
    replay = replay or {}
    for name in COMPARED:
        o, r = original.get(name), replay.get(name)
        if o is None or r is None:
            why = (original.get("unavailable") or {}).get(name) or (replay.get("unavailable") or {}).get(name)
            side = "original" if o is None else "replay"
            unavailable[name] = why or f"not measured on the {side} side"
            continue
        diff = (r - o) / o if o else (0.0 if r == o else None)
        rows[name] = {"original": o, "replay": r, "difference": diff,
                      "flagged": diff is None or abs(diff) > tolerance}
    for name, why in ((original.get("unavailable") or {}) | (replay.get("unavailable") or {})).items():
        unavailable.setdefault(name, why)
    return {"metrics": rows, "unavailable": unavailable, "tolerance": tolerance,
            "flagged": sorted(n for n, v in rows.items() if v["flagged"]),
            "how": "original: capture's un-observed measured steps; replay: its timed iterations; per step"}




def lines(side: dict[str, Any] | None) -> list[str]:
    """One console line for the side-by-side system metrics: the flagged ones, or that all are close."""
    if not side:
        return []
    rows = side.get("metrics") or {}
    if not rows:
        why = (side.get("unavailable") or {}).get("all")
        return [f"system metrics: not compared ({why})"] if why else []
    flagged = [f"{n} {v['original']:.4g} -> {v['replay']:.4g}"
               + (f" ({v['difference'] * 100:+.0f}%)" if v["difference"] is not None else "")
               for n, v in rows.items() if v["flagged"]]
    missing = [n for n in side.get("unavailable", {}) if n != "hardware_counters"]
    head = (f"system metrics differing by more than {side['tolerance'] * 100:.0f}%: " + "; ".join(flagged)
            if flagged else f"system metrics: {len(rows)} within {side['tolerance'] * 100:.0f}% of the original")
    return [head + (f" (not available here: {', '.join(missing)})" if missing else "")]
