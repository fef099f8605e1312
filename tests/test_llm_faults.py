"""`llm bench` against a server that mixes bad answers with good ones (issue 16): every scheduled request is in
the records, with its kind; no answer loses the run, kills a worker or shows an internal exception's text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_llm_server import DEFAULT_MIX, FaultLLMServer

from benchmint.results.record import RunRecord

# what each kind of answer in DEFAULT_MIX becomes in the records
FAILS = {"null_json": "malformed", "no_choices": "malformed", "choice_null": "malformed", "bad_json": "malformed",
         "http_500": "http_5xx"}
FLAGGED = ("usage_huge", "usage_str", "usage_not_dict", "usage_negative")


def _expected(n: int) -> tuple[int, dict[str, int], int]:
    kinds = [DEFAULT_MIX[i % len(DEFAULT_MIX)] for i in range(n)]
    errors: dict[str, int] = {}
    for k in kinds:
        if k in FAILS:
            errors[FAILS[k]] = errors.get(FAILS[k], 0) + 1
    return n - sum(errors.values()), errors, sum(k in FLAGGED for k in kinds)


SCENARIOS = {
    "server": ["--scenario", "server", "--rate", "400"],
    "offline": ["--scenario", "offline"],
    "concurrency": ["--scenario", "concurrency", "--concurrency", "3"],
    "single-stream-no-stream": ["--scenario", "single-stream", "--no-stream"],
    "chat": ["--scenario", "concurrency", "--concurrency", "2", "--api", "chat"],
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_request_of_a_faulty_server_is_in_the_records(cli, tmp_path, scenario):
    n = 2 * len(DEFAULT_MIX)  # two whole cycles: every kind of answer twice
    with FaultLLMServer() as s:
        code, out, err = cli("llm", "bench", "--url", s.url, "--model", "m", "-n", str(n), *SCENARIOS[scenario],
                             "--out", str(tmp_path / "run"), "--results", str(tmp_path / "store"))
        received = s.received
    assert code == 0, err
    assert "never retrieved" not in err and "Traceback" not in err
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    req = r["requests"]
    completed, errors, flagged = _expected(n)
    assert received == n
    assert req["scheduled"] == req["sent"] == n
    assert (req["completed"], req["failed"], req["cancelled"]) == (completed, n - completed, 0)
    assert req["errors"] == errors
    # usage of 2**64-1, "many", "lots", -3: the answer is kept, its tokens counted from the chunks, and flagged
    assert r["token_counts"]["flagged"] == flagged
    assert all(f.startswith("usage ignored: ") for f in r["token_counts"]["flag_examples"])
    examples = " ".join(req["error_examples"].values())
    assert "NoneType" not in examples and "attribute" not in examples
    t = pq.read_table(tmp_path / "run" / "requests.parquet").to_pandas()
    assert len(t) == n and sorted(t.id) == list(range(n))
    assert t.output_tokens.max() < 2**31
    assert RunRecord.read(tmp_path / "run" / "run.json").status == "partial"


def test_a_malformed_answer_says_what_it_lacked(cli, tmp_path):
    cases = {"null_json": "not a JSON object", "no_choices": "no choices", "choice_null": "choice is null"}
    for kind, text in cases.items():
        for stream in ("--stream", "--no-stream"):
            with FaultLLMServer([kind]) as s:
                out = tmp_path / f"{kind}{stream}"
                code, _, err = cli("llm", "bench", "--url", s.url, "--model", "m", "-n", "2", stream,
                                   "--scenario", "single-stream", "--out", str(out), "--results", str(tmp_path / "s"))
            assert code == 2 and text in err, (kind, stream, err)
            assert len(err.strip().splitlines()) == 1
            ex = json.loads((out / "result.json").read_text())["requests"]["error_examples"]["malformed"]
            assert text in ex and "NoneType" not in ex


def test_a_backend_that_raises_fails_its_request_not_the_run(tmp_path):
    import asyncio

    from benchmint.llm.bench import drive
    from benchmint.llm.schedule import make_schedule
    from benchmint.llm.types import GenRequest, RequestRecord

    class Flaky:
        kind = "flaky"

        async def start(self) -> None: ...

        async def close(self) -> None: ...

        async def generate(self, req, on_first_token=None):
            if req.id % 3 == 1:
                raise OverflowError("Python int too large to convert to C long")
            return RequestRecord(id=req.id, sent_ns=1, end_ns=2, output_tokens=1)

    reqs = [GenRequest(id=i, prompt="p", max_tokens=1) for i in range(9)]
    sched = make_schedule("concurrency", num_requests=9, concurrency=2)
    records, _, _ = asyncio.run(drive(Flaky(), sched, reqs, [], reqs))
    assert sorted(r.id for r in records) == list(range(9))
    failed = [r for r in records if not r.ok]
    assert len(failed) == 3 and {r.error_kind for r in failed} == {"other"}
    assert "OverflowError" in failed[0].error


def _bench(url: str, out: Path, store: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "benchmint.cli.main", "llm", "bench", "--url", url, "--model", "m", "--out", str(out),
         "--results", str(store), "--no-progress", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )



def _wait_until(done: Callable[[], bool], p: subprocess.Popen, timeout_s: float, poll_s: float = 0.02) -> None:
    """Poll until ``done()``, the process ends or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(poll_s)

@pytest.mark.slow
@pytest.mark.parametrize("scenario", [["--scenario", "server", "--rate", "40", "-n", "400"],
                                      ["--scenario", "concurrency", "--concurrency", "4", "-n", "400"]],
                         ids=["server", "concurrency"])
def test_ctrl_c_mid_run_records_every_scheduled_request(tmp_path, scenario):
    out = tmp_path / "run"
    with FaultLLMServer(["good", "usage_huge", "good", "http_500"], delay_s=0.2) as s:
        p = _bench(s.url, out, tmp_path / "store", *scenario)
        _wait_until(lambda: s.answered >= 4, p, 60)
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
        time.sleep(0.3)
        received = s.received
    assert p.returncode == 130, stderr
    req = json.loads((out / "result.json").read_text())["requests"]
    assert req["interrupted"] is True and req["scheduled"] == 400
    assert req["completed"] + req["failed"] + req["cancelled"] == 400
    assert req["cancelled"] >= 1 and "cancelled" not in req["errors"]
    # every request the server got is in the records, in flight ones too (a request Ctrl-C stopped while its
    # connection was being made is recorded as sent and cancelled, though the server never saw it)
    assert received <= req["sent"] <= received + 8
    t = pq.read_table(out / "requests.parquet").to_pandas()
    assert len(t) == 400 and (t.error_kind == "cancelled").sum() == req["cancelled"]
    assert RunRecord.read(out / "run.json").status == "partial"


@pytest.mark.slow
def test_ctrl_c_before_the_first_request_writes_a_partial_result(tmp_path):
    out = tmp_path / "run"
    with FaultLLMServer(["good"]) as s:
        p = _bench(s.url, out, tmp_path / "store", "--scenario", "constant", "--rate", "0.05", "-n", "5")
        _wait_until(lambda: s.fault.probes >= 1, p, 60)
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
        assert s.received == 0
    assert p.returncode == 130, stderr
    assert "all 0 requests failed" not in stderr and "partial" in stderr
    req = json.loads((out / "result.json").read_text())["requests"]
    assert (req["scheduled"], req["sent"], req["completed"], req["cancelled"]) == (5, 0, 0, 5)
    assert RunRecord.read(out / "run.json").status == "partial"
