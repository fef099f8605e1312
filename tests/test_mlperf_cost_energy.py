"""Cost per million output tokens, the price table, RAPL energy reading, NVML absence."""

from __future__ import annotations

import time

import pytest

from benchmint.core.errors import UserError
from benchmint.llm import cost
from benchmint.llm.energy import EnergyMeter, rapl_domains


def test_cost_per_million_tokens_units():
    # $3.60/h is $0.001/s; at 1000 tokens/s a million tokens take 1000 s -> $1
    assert cost.cost_per_million_tokens(3.6, 1000.0) == pytest.approx(1.0)
    assert cost.cost_per_million_tokens(3.6, 2000.0) == pytest.approx(0.5)
    assert cost.cost_per_million_tokens(3.6, 0.0) is None


def test_price_table_rows_have_date_and_source():
    table = cost.price_table()
    assert len(table) >= 3
    for p in table.values():
        assert p.usd_per_hour > 0
        assert len(p.date) == 10 and p.date[4] == "-"
        assert p.source.startswith("https://")


def test_resolve_price_number_name_and_errors():
    assert cost.resolve_price("2.5") == {"usd_per_hour": 2.5, "name": None, "source": "--price flag"}
    name = next(iter(cost.price_table()))
    p = cost.resolve_price(name)
    assert p["name"] == name and p["as_of"] and p["source"].startswith("https://")
    assert cost.resolve_price(None) is None
    with pytest.raises(UserError, match="price table"):
        cost.resolve_price("no-such-machine")
    with pytest.raises(UserError, match="positive"):
        cost.resolve_price("-1")
    block = cost.cost_block(cost.resolve_price("3.6"), 1000.0, 4000.0)
    assert block["usd_per_million_output_tokens"] == pytest.approx(1.0)
    assert block["usd_per_million_total_tokens"] == pytest.approx(0.25)


def _fake_rapl(root, energy_uj: int, max_uj: int = 1_000_000) -> None:
    d = root / "intel-rapl:0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "energy_uj").write_text(str(energy_uj))
    (d / "max_energy_range_uj").write_text(str(max_uj))
    sub = root / "intel-rapl:0:0"  # a sub-domain, already inside the package figure
    sub.mkdir(exist_ok=True)
    (sub / "energy_uj").write_text("5")


def test_rapl_energy_including_counter_wrap(tmp_path, monkeypatch):
    _fake_rapl(tmp_path, 900_000)
    assert [d.name for d in rapl_domains(tmp_path)] == ["intel-rapl:0"]
    meter = EnergyMeter(rapl_root=tmp_path)
    with meter:
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("100000")  # wrapped past 1,000,000
        time.sleep(0.01)
    r = meter.result(output_tokens=100)
    assert r["cpu"]["available"] and r["cpu"]["joules"] == pytest.approx(0.2)  # 100k to 1M, then 0 to 100k uJ
    assert r["cpu_joules_per_output_token"] == pytest.approx(0.002)


def test_no_rapl_no_nvml_is_reported_not_guessed(tmp_path, monkeypatch):
    import pynvml

    def boom():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", boom)
    with EnergyMeter(rapl_root=tmp_path / "absent") as m:
        pass
    r = m.result(output_tokens=10)
    assert r["gpu"]["available"] is False and "NVML" in r["gpu"]["note"]
    assert r["cpu"]["available"] is False
    assert "gpu_joules_per_output_token" not in r and "cpu_joules_per_output_token" not in r


def test_nvml_power_samples_integrate_to_joules(monkeypatch):
    import pynvml

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda i: object())
    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", lambda h: 200_000)  # 200 W in mW

    def no_counter(h):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", no_counter)
    with EnergyMeter(interval_s=0.01) as m:
        time.sleep(0.05)
    r = m.result(output_tokens=1000)
    g = r["gpu"]
    assert g["available"] and g["samples"] >= 2
    assert g["joules"] == pytest.approx(200 * r["duration_s"], rel=0.05)
    assert r["gpu_joules_per_output_token"] == pytest.approx(g["joules"] / 1000)
