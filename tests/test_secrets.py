"""Secrets never persist (issue 16): an API key given to `llm bench` / `llm mlperf` (flag or environment) reaches
the server, and no file a run, the store, a query or the report writes holds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fault_llm_server import FaultLLMServer

from benchmint.core.redact import REDACTED, is_secret_env, redact, redact_argv, redact_text

KEY = "SEKRET-b3nchm1nt-4f9a"
ENV_KEY = "ENVSEKRET-77c1d0e2"


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    full.pop("OPENAI_API_KEY", None) if not env or "OPENAI_API_KEY" not in env else None
    return subprocess.run([sys.executable, "-m", "benchmint.cli.main", *args], env=full, capture_output=True,
                          text=True, timeout=300)


def _files_holding(root: Path, secret: str) -> list[str]:
    """Files whose bytes hold ``secret``, or whose decoded values do (Parquet pages are compressed)."""
    import pyarrow.parquet as pq

    def holds(p: Path) -> bool:
        if secret.encode() in p.read_bytes():
            return True
        return p.suffix == ".parquet" and secret in str(pq.read_table(p).to_pylist())

    return [str(p) for p in root.rglob("*") if p.is_file() and holds(p)]


@pytest.mark.slow
def test_api_keys_reach_the_server_and_no_written_file_holds_them(tmp_path):
    store = tmp_path / "store"
    with FaultLLMServer(["good"]) as s:
        url = s.url
        b = _run("llm", "bench", "--url", url, "--model", "m", "--api-key", KEY, "-n", "4", "--rate", "50",
                 "--out", str(tmp_path / "bench"), "--json", str(tmp_path / "bench.json"), "--results", str(store),
                 "--no-progress")
        assert b.returncode == 0, b.stderr
        # the environment-variable path sends the key too
        e = _run("llm", "bench", "--url", url, "--model", "m", "-n", "2", "--rate", "50",
                 "--out", str(tmp_path / "bench-env"), "--results", str(store), "--no-progress",
                 env={"OPENAI_API_KEY": ENV_KEY})
        assert e.returncode == 0, e.stderr
        # user:password in the URL is a credential too
        u = _run("llm", "bench", "--url", url.replace("http://", f"http://user:{KEY}@"), "--model", "m", "-n", "2",
                 "--rate", "50", "--out", str(tmp_path / "bench-url"), "--results", str(store), "--no-progress")
        assert u.returncode == 0, u.stderr
        m = _run("llm", "mlperf", "--backend", "openai-http", "--url", url, "--model", "m", "--api-key", KEY,
                 "--scenario", "server", "--target-qps", "20", "--min-duration", "1", "--min-query-count", "4",
                 "--num-samples", "4", "--output-tokens", "4", "--no-energy", "--out", str(tmp_path / "mlperf"),
                 "--json", str(tmp_path / "mlperf.json"), "--results", str(store))
        assert m.returncode == 0, m.stderr
        auth = dict(s.fault.authorization)
    assert auth.get(f"Bearer {KEY}", 0) >= 8 and auth.get(f"Bearer {ENV_KEY}", 0) == 2
    assert any(a.startswith("Basic ") for a in auth)  # aiohttp sends the URL's user:password
    q = _run("results", "query", "select * from runs", "--json", "--results", str(store))
    assert q.returncode == 0, q.stderr
    assert "--api-key" in q.stdout and REDACTED in q.stdout  # the command line is kept, its key is not
    r = _run("report", "--results", str(store), "--out", str(tmp_path / "report.html"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.html").is_file() and (tmp_path / "mlperf" / "performance" / "spec.json").is_file()
    for secret in (KEY, ENV_KEY):
        assert _files_holding(tmp_path, secret) == []
        for p in (b, e, u, m, q, r):
            assert secret not in p.stdout + p.stderr


def test_redaction_rules():
    assert redact_argv(["llm", "bench", "--api-key", "K1234", "--token=abc", "--model", "m"]) == [
        "llm", "bench", "--api-key", REDACTED, "--token=" + REDACTED, "--model", "m"]
    assert redact_text("cannot connect to http://bob:pw@host/v1") == "cannot connect to http://***@host/v1"
    assert redact_text("Authorization: Bearer abcdefgh123") == "Authorization: Bearer ***"
    assert redact_text("GET /v1?api_key=zzz&x=1") == "GET /v1?api_key=***&x=1"
    d = redact({"api_key": "k", "model_key": "llama2-70b", "max_tokens": 8, "hf_token": "t", "eos_token": "</s>",
                "headers": {"Authorization": "Bearer x"}, "token_counts": {"flagged": 0}})
    assert d == {"api_key": REDACTED, "model_key": "llama2-70b", "max_tokens": 8, "hf_token": REDACTED,
                 "eos_token": "</s>", "headers": {"Authorization": REDACTED}, "token_counts": {"flagged": 0}}
    assert is_secret_env("OPENAI_API_KEY") and is_secret_env("HF_TOKEN") and is_secret_env("PGPASSWORD")
    assert not is_secret_env("TOKENIZERS_PARALLELISM") and not is_secret_env("PWD")


def test_values_of_credential_environment_variables_are_redacted_from_any_text(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-0123456789")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "falsefalse")
    assert redact_text("echo tok-0123456789 falsefalse") == "echo *** falsefalse"


def test_a_short_api_key_is_not_cut_out_of_every_word(monkeypatch):
    from benchmint.core import redact as r

    monkeypatch.setattr(r, "_registered", set())
    r.register_secret("test")  # placeholder keys such as "test", "EMPTY", "dummy" are common
    assert redact_text("split test, data/test.jsonl, /home/x/tests/a") == "split test, data/test.jsonl, /home/x/tests/a"
    assert redact_argv(["llm", "bench", "--api-key", "test"])[-1] == REDACTED  # still out where it is the key
