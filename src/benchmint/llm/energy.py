"""Energy during a run: GPU power through NVML, CPU package energy through RAPL (``/sys/class/powercap``).

:class:`EnergyMeter` is a context manager: it samples every visible GPU's power in a background thread
(``nvmlDeviceGetPowerUsage``, milliwatts; the total-energy counter ``nvmlDeviceGetTotalEnergyConsumption``
when the GPU has one) and reads the RAPL energy counters at start and stop (microjoules, with wrap-around at
``max_energy_range_uj``). Whatever is not available is reported as such, never guessed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

RAPL_ROOT = Path("/sys/class/powercap")


def rapl_domains(root: Path = RAPL_ROOT) -> list[Path]:
    """Readable top-level RAPL package domains (``intel-rapl:N``), or [] when absent or not readable."""
    out = []
    if not root.is_dir():
        return out
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") != 1:  # sub-domains (core, uncore, dram) are inside the package figure
            continue
        try:
            int((d / "energy_uj").read_text())
        except (OSError, ValueError):
            continue
        out.append(d)
    return out


def _read_uj(d: Path) -> tuple[int, int | None]:
    e = int((d / "energy_uj").read_text())
    try:
        m = int((d / "max_energy_range_uj").read_text())
    except (OSError, ValueError):
        m = None
    return e, m


class EnergyMeter:
    def __init__(self, interval_s: float = 0.1, rapl_root: Path = RAPL_ROOT):
        self.interval_s = interval_s
        self.rapl_root = rapl_root
        self._nvml = None
        self._handles: list[Any] = []
        self._samples: list[tuple[float, list[float]]] = []  # (monotonic s, watts per GPU)
        self._energy0: list[int | None] = []
        self._energy1: list[int | None] = []
        self._rapl0: dict[str, tuple[int, int | None]] = {}
        self._rapl1: dict[str, tuple[int, int | None]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = self._t1 = 0.0
        self.gpu_note: str | None = None

    # -- NVML -----------------------------------------------------------------------------------------------
    def _nvml_start(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        except Exception as e:  # no driver, no GPU
            self._nvml, self._handles = None, []
            self.gpu_note = f"NVML not available ({type(e).__name__})"
            return
        if not self._handles:
            self.gpu_note = "NVML found no GPU"
        self._energy0 = [self._total_energy_mj(h) for h in self._handles]

    def _total_energy_mj(self, h: Any) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h))  # type: ignore[union-attr]
        except Exception:
            return None

    def _power_w(self) -> list[float]:
        out = []
        for h in self._handles:
            try:
                out.append(self._nvml.nvmlDeviceGetPowerUsage(h) / 1000.0)  # type: ignore[union-attr]
            except Exception:
                out.append(float("nan"))
        return out

    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._samples.append((time.perf_counter(), self._power_w()))

    # -- context manager ------------------------------------------------------------------------------------
    def __enter__(self) -> EnergyMeter:
        self._nvml_start()
        for d in rapl_domains(self.rapl_root):
            self._rapl0[d.name] = _read_uj(d)
        self._t0 = time.perf_counter()
        if self._handles:
            self._samples.append((self._t0, self._power_w()))
            self._thread = threading.Thread(target=self._sample_loop, name="benchmint-power", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._t1 = time.perf_counter()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._handles:
            self._samples.append((self._t1, self._power_w()))
            self._energy1 = [self._total_energy_mj(h) for h in self._handles]
            try:
                self._nvml.nvmlShutdown()  # type: ignore[union-attr]
            except Exception:
                pass
        for d in rapl_domains(self.rapl_root):
            if d.name in self._rapl0:
                self._rapl1[d.name] = _read_uj(d)

    # -- results --------------------------------------------------------------------------------------------
    def result(self, output_tokens: int | None = None) -> dict[str, Any]:
        dur = self._t1 - self._t0
        out: dict[str, Any] = {"duration_s": dur}
        gpu: dict[str, Any] = {"available": bool(self._handles)}
        if self._handles:
            joules = []
            method = []
            for i in range(len(self._handles)):
                e0 = self._energy0[i] if i < len(self._energy0) else None
                e1 = self._energy1[i] if i < len(self._energy1) else None
                if e0 is not None and e1 is not None and e1 >= e0:
                    joules.append((e1 - e0) / 1000.0)
                    method.append("nvmlDeviceGetTotalEnergyConsumption")
                else:  # trapezoid over the power samples
                    j = 0.0
                    for (ta, wa), (tb, wb) in zip(self._samples, self._samples[1:], strict=False):
                        j += (wa[i] + wb[i]) / 2 * (tb - ta)
                    joules.append(j)
                    method.append(f"nvmlDeviceGetPowerUsage sampled every {self.interval_s:g} s")
            watts = [w for _, ws in self._samples for w in ws]
            gpu.update({
                "joules": sum(joules), "joules_per_gpu": joules, "method": sorted(set(method)),
                "mean_power_w": sum(joules) / dur if dur > 0 else None,
                "max_sample_power_w": max(watts) if watts else None, "samples": len(self._samples),
            })
        else:
            gpu["note"] = self.gpu_note
        out["gpu"] = gpu
        cpu: dict[str, Any] = {"available": bool(self._rapl1)}
        if self._rapl1:
            total = 0.0
            for name, (e1, m) in self._rapl1.items():
                e0, _ = self._rapl0[name]
                delta = e1 - e0
                if delta < 0 and m:  # the counter wrapped
                    delta += m
                total += delta / 1e6
            cpu.update({"joules": total, "domains": sorted(self._rapl1), "method": "RAPL energy_uj (package)",
                        "mean_power_w": total / dur if dur > 0 else None})
        else:
            cpu["note"] = f"RAPL not readable under {self.rapl_root}"
        out["cpu"] = cpu
        if output_tokens:
            if gpu.get("joules") is not None:
                out["gpu_joules_per_output_token"] = gpu["joules"] / output_tokens
            if cpu.get("joules") is not None:
                out["cpu_joules_per_output_token"] = cpu["joules"] / output_tokens
        return out
