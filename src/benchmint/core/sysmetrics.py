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
* on CUDA, with NVML (pynvml) installed: ``gpu_sm_utilization`` (percent of time a kernel ran) and
  ``gpu_power_w``, each the mean of the driver's samples whose periods lay inside the window
  (``nvmlDeviceGetSamples`` after the newest sample at the window's start, the first of them left out: its
  period began before the window), and ``gpu_memory_used_bytes`` (the device's, at the window's
  end); ``gpu_how`` says how each was read. The driver samples utilization every 1/6 s to 1 s: a window
  shorter than that holds no sample of its own, and the metric is then listed in ``unavailable`` with that
  reason rather than taken from a sample period that lies mostly outside the window.

A counter that cannot be read here is listed in ``unavailable`` with the reason, never given as zero:
hardware performance counters (cycles, instructions, cache misses) are not read (virtual machines rarely
expose them), NVML counters without a CUDA device or pynvml.
"""

from __future__ import annotations

import resource
import time
from typing import Any

TOLERANCE = 0.10  # side by side, a difference beyond this is flagged
# per-step counts (context switches, page faults) are flagged only when they also differ by at least this many
# events per step: 0.1 against 0 is one event in ten steps, "-100%" of nothing
COUNT_FLOOR = 1.0
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
        self._gpu = _GpuSamples(self.device)
        self._reset = _reset_peak_rss()
        self._ru = resource.getrusage(resource.RUSAGE_SELF)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._wall
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.metrics = measured(self._ru, ru, wall, self.steps, self.threads, self._reset, self._gpu)


def measured(r0: Any, r1: Any, wall: float, steps: int, threads: int | None, reset: bool,
             gpu: _GpuSamples) -> dict[str, Any]:
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
    out.update(gpu.read(wall, unavailable))
    out["unavailable"] = unavailable
    out["how"] = ("getrusage(RUSAGE_SELF) deltas over the window (all threads of the process), per step; "
                  "wall time by time.perf_counter")
    return out


_GPU_NAMES = ("gpu_sm_utilization", "gpu_memory_used_bytes", "gpu_power_w")
_SAMPLED = {"gpu_sm_utilization": 1, "gpu_power_w": 0}  # NVML_GPU_UTILIZATION_SAMPLES, NVML_TOTAL_POWER_SAMPLES
_SCALE = {"gpu_sm_utilization": 1.0, "gpu_power_w": 1e-3}  # percent; milliwatts -> watts
_VALUE_FIELDS = ("dVal", "uiVal", "ulVal", "ullVal", "sllVal", "siVal", "usVal")  # by nvmlValueType_t


class _GpuSamples:
    """NVML's samples of one device over a window: at the start, the newest sample's timestamp of each sampled
    counter; at the end, the samples newer than it. Each sample covers the driver's period that ends at its
    timestamp, so the first of them reaches back before the window and is left out: the mean of the others
    is the window's own. No wall clock is compared: NVML returns the samples after a timestamp of its own."""

    def __init__(self, device: str):
        self.device = device
        self.handle: Any = None
        self.error: str | None = None
        self.since: dict[str, int | None] = {}
        if not device.startswith("cuda"):
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.handle = _nvml_handle(pynvml, int(device.split(":", 1)[1]) if ":" in device else 0)
        except Exception as e:  # noqa: BLE001 - pynvml missing, no driver, no permission: said, never zero
            self.error = f"NVML not readable ({type(e).__name__}: {e})"
            return
        for name, kind in _SAMPLED.items():
            self.since[name] = self._newest(kind)

    def _samples(self, kind: int, since: int) -> list[tuple[int, float]]:
        import pynvml

        try:
            vtype, samples = pynvml.nvmlDeviceGetSamples(self.handle, kind, since)
        except pynvml.NVMLError_NotFound:  # no sample after ``since``
            return []
        field = _VALUE_FIELDS[vtype] if 0 <= vtype < len(_VALUE_FIELDS) else "uiVal"
        return [(int(x.timeStamp), float(getattr(x.sampleValue, field))) for x in samples]

    def _newest(self, kind: int) -> int | None:
        try:
            return max((t for t, _ in self._samples(kind, 0)), default=0)
        except Exception as e:  # noqa: BLE001 - not supported on this device or driver, no permission
            self.error = f"{type(e).__name__}: {e}"
            return None

    def read(self, wall: float, unavailable: dict[str, str]) -> dict[str, Any]:
        if not self.device.startswith("cuda"):
            for n in _GPU_NAMES:
                unavailable[n] = "no CUDA device in use"
            return {}
        if self.handle is None:
            for n in _GPU_NAMES:
                unavailable[n] = self.error or "NVML not readable"
            return {}
        import pynvml

        out: dict[str, Any] = {}
        how: dict[str, str] = {}
        for name, kind in _SAMPLED.items():
            since = self.since.get(name)
            if since is None:
                unavailable[name] = f"NVML samples not readable ({self.error})"
                continue
            try:
                samples = sorted(self._samples(kind, since))
            except Exception as e:  # noqa: BLE001
                unavailable[name] = f"NVML samples not readable ({type(e).__name__}: {e})"
                continue
            vals = [v for _, v in samples[1:]]  # the first one's period began before the window
            if not vals:
                unavailable[name] = (f"no NVML sample period lay inside the window ({wall * 1e3:.0f} ms): shorter "
                                     "than the driver's sample period (1/6 s to 1 s); time more steps or "
                                     "iterations")
                continue
            out[name] = sum(vals) / len(vals) * _SCALE[name]
            how[name] = (f"mean of {len(vals)} NVML samples whose periods lay in the window (the first after its "
                         "start left out: its period began before)")
        try:
            out["gpu_memory_used_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)
            how["gpu_memory_used_bytes"] = "NVML, the whole device's, at the window's end"
        except Exception as e:  # noqa: BLE001
            unavailable["gpu_memory_used_bytes"] = f"NVML not readable ({type(e).__name__}: {e})"
        if how:
            out["gpu_how"] = how
        return out


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML's handle of torch's CUDA device ``index``, found by UUID: NVML numbers every GPU of the machine,
    torch only those CUDA_VISIBLE_DEVICES leaves it (in CUDA_DEVICE_ORDER); by index where the UUID is not to
    be had."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
    except Exception:  # noqa: BLE001 - no torch CUDA, an older torch or driver: the index, as NVML numbers it
        return pynvml.nvmlDeviceGetHandleByIndex(index)


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
        flagged = diff is None or abs(diff) > tolerance
        if name.endswith("_per_step") and abs(r - o) < COUNT_FLOOR:
            flagged = False
        rows[name] = {"original": o, "replay": r, "difference": diff, "flagged": flagged}
    for name, why in ((original.get("unavailable") or {}) | (replay.get("unavailable") or {})).items():
        unavailable.setdefault(name, why)
    return {"metrics": rows, "unavailable": unavailable, "tolerance": tolerance,
            "flagged": sorted(n for n, v in rows.items() if v["flagged"]),
            "how": ("original: capture's un-observed measured steps; replay: its timed iterations; per step; "
                    f"a per-step count is flagged only when it also differs by {COUNT_FLOOR:g} or more a step")}




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
    who = f" (rank {side['rank']}'s)" if side.get("rank") is not None else ""  # a multi-rank replay's slowest
    head = (f"system metrics{who} differing by more than {side['tolerance'] * 100:.0f}%: " + "; ".join(flagged)
            if flagged else f"system metrics{who}: {len(rows)} within {side['tolerance'] * 100:.0f}% of the original")
    return [head + (f" (not available here: {', '.join(missing)})" if missing else "")]
