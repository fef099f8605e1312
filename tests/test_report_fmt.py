"""The report's number formatting: what a reader sees in the headline and the side-by-side table."""

from __future__ import annotations

import math

import pytest

from benchmint.report import fmt


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0123, "12.3 ms"), (0.1, "100 ms"), (0.000450, "450 µs"), (5.8199, "5.82 s"), (1.0, "1 s"),
    (125.4, "2 min 5 s"), (120, "2 min"), (3780, "1 h 3 min"), (0, "0 s"), (-0.0031, "-3.1 ms"),
    (2.5e-8, "25 ns"),
])
def test_durations(seconds, text):
    assert fmt.duration(seconds) == text


@pytest.mark.parametrize(("n", "text"), [
    (5_866_176, "5.59 MiB"), (8 * 2**30, "8 GiB"), (25_275_990_016, "23.5 GiB"), (512, "512 B"),
    (1536, "1.5 KiB"), (3 * 2**40, "3 TiB"),
])
def test_sizes_are_in_powers_of_1024(n, text):
    assert fmt.size(n) == text


@pytest.mark.parametrize(("n", "text"), [
    (182_016, "182 K"), (1_300_000, "1.3 M"), (7_000_000_000, "7 B"), (70_553_706_496, "70.6 B"), (950, "950"),
    (1_000, "1 K"),
])
def test_parameter_counts(n, text):
    assert fmt.count(n) == text


def test_rates_numbers_and_percentages():
    assert fmt.rate(109.967, "tok/s") == "110 tok/s"
    assert fmt.rate(6.873, "req/s") == "6.87 req/s"
    assert fmt.rate(12_345.6, "tok/s") == "12,346 tok/s" and fmt.rate(2.5e6, "tok/s") == "2.5 M tok/s"
    assert fmt.number(1234.5) == "1,234" and fmt.number(40) == "40" and fmt.number(4.13607) == "4.14"
    assert fmt.percent(0.95) == "95.0%" and fmt.percent(-0.031, signed=True) == "-3.1%"
    assert fmt.percent(0.04, signed=True) == "+4.0%"


def test_nothing_and_text_pass_through():
    for f in (fmt.duration, fmt.size, fmt.count, fmt.number, fmt.percent):
        assert f(None) == ""
        assert f("n/a") == "n/a"
        assert f(math.nan) == "nan"  # said as it is, never "nan ms"
    assert fmt.duration(math.inf) == "inf"


def test_flattened_columns_are_formatted_by_their_unit():
    assert fmt.fmt_value("metrics__ttft_s__p99", 0.0123) == "12.3 ms"
    assert fmt.fmt_value("metrics__throughput__output_tokens_per_s", 1234.5) == "1,234"
    assert fmt.fmt_value("metrics__error", -0.031) == "-3.1%"
    assert fmt.fmt_value("metrics__coverage_time", 0.99) == "99.0%"
    assert fmt.fmt_value("system__memory_bytes", 8 * 2**30) == "8 GiB"
    assert fmt.fmt_value("metrics__peak_memory_bytes", 5_964_480) == "5.69 MiB"
    assert fmt.fmt_value("workload__parameter_count", 70_000_000_000) == "70 B"
    assert fmt.fmt_value("workload__parameter_count", 182_016) == "182 K"
    assert fmt.fmt_value("metrics__client_bound__client_bound", True) == "yes"
    assert fmt.fmt_value("metrics__client_bound__reasons", ["a", "b"]) == "a; b"
    assert fmt.fmt_value("config__num_requests", 40) == "40"
    assert fmt.fmt_value("config__backend", "openai-http") == "openai-http"
