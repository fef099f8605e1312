"""The backend registry: one entry per kind, what it can do, and options it refuses (llm/backends/registry.py)."""

from __future__ import annotations

import asyncio

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.backends import backend_entry, create_backend, register_backend
from benchmint.llm.backends.registry import _ALIASES, _ENTRIES
from benchmint.llm.backends.spec import build_backend_spec, parse_backend_options


def _one_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_lookup_by_kind_or_alias_gives_one_entry_with_its_capabilities():
    http, hf, sim = backend_entry("openai-http"), backend_entry("hf"), backend_entry("sim")
    assert backend_entry("http") is backend_entry("openai") is http
    assert backend_entry("transformers") is hf
    assert http.server and http.server_metrics and http.usage and not http.in_process
    assert set(http.extensions) == {"ignore_eos", "min_tokens", "stream_options"}
    assert hf.in_process and hf.tokenizer == "backend" and hf.default_model == "tiny" and not hf.server
    assert sim.tokenizer == "none" and not sim.server and not sim.usage
    for entry in (http, hf):  # every flag an entry passes on is an option its class really takes
        assert set(entry.flags) <= set(entry.option_names()), entry.kind


def test_unknown_backend_is_one_line_listing_the_known_ones(cli):
    line = _one_line(*cli("llm", "bench", "--backend", "bogus", "-n", "1")[::2])
    assert "unknown backend 'bogus'" in line
    assert all(k in line for k in ("openai-http", "transformers", "sim", "hf"))
    line = _one_line(*cli("llm", "mlperf", "--backend", "bogus", "--plan", "--target-qps", "1")[::2])
    assert "unknown backend 'bogus'" in line


def test_an_option_the_backend_does_not_take_is_refused_through_the_cli(cli):
    # refused before the model is loaded or a server contacted (the url is a closed port)
    line = _one_line(*cli("llm", "bench", "--backend", "transformers", "--backend-option", "fast=1", "-n", "1",
                          "--scenario", "offline")[::2])
    assert "backend transformers has no option 'fast'" in line and "max_batch_size" in line and "dtype" in line
    line = _one_line(*cli("llm", "bench", "--backend-option", "device=cuda", "--url", "http://127.0.0.1:9/v1",
                          "-n", "1", "--scenario", "offline")[::2])
    assert "backend openai-http has no option 'device'" in line and "api_key" in line
    line = _one_line(*cli("llm", "mlperf", "--backend", "sim", "--backend-option", "speed=2", "--plan",
                          "--target-qps", "1")[::2])
    assert "backend sim has no option 'speed'" in line and "slots" in line
    line = _one_line(*cli("llm", "bench", "--backend-option", "oops", "-n", "1")[::2])
    assert "KEY=VALUE" in line
    with pytest.raises(UserError, match="has no option 'nope'"):
        create_backend("openai-http", url="http://127.0.0.1:9/v1", nope=True)


def test_known_options_reach_the_backend():
    assert parse_backend_options(["slots=3", "dtype=bfloat16", 'extra={"a": 1}']) == {
        "slots": 3, "dtype": "bfloat16", "extra": {"a": 1}}
    spec = build_backend_spec("sim", None, None, "completions", "cpu", 16, "ttft=0.5", options={"slots": 3})
    assert spec == {"kind": "sim", "options": {"ttft_s": 0.5, "slots": 3}}
    b = create_backend("transformers", dtype="float32", batch_wait_s=0.01)
    assert b.opts == {"dtype": "float32", "batch_wait_s": 0.01} and b.engine is None  # loaded on start


def test_specs_from_flags_are_what_they_were():
    # a server backend: its flags, a tokenizer only when usage is not asked for, --url required
    assert build_backend_spec("http", "http://h:1/v1", None, "chat", "cpu", 16) == {
        "kind": "openai-http", "options": {"url": "http://h:1/v1", "model": None, "api": "chat", "include_usage": True}}
    spec = build_backend_spec("openai", "http://h:1/v1", "m", "completions", "cpu", 16, api_key="k", include_usage=False)
    assert spec["options"]["tokenizer"] == "m" and spec["options"]["api_key"] == "k"
    with pytest.raises(UserError, match="needs --url"):
        build_backend_spec("openai-http", None, "m", "completions", "cpu", 16)
    # in-process: the engine's flags only (an api key in the environment is not its option), tiny by default
    assert build_backend_spec("hf", "http://h:1/v1", None, "chat", "cpu", 4, api_key="k") == {
        "kind": "transformers", "options": {"model": "tiny", "device": "cpu", "max_batch_size": 4}}


def test_capabilities_drive_the_factory_probe_and_tokenizer(monkeypatch):
    from benchmint.llm.loadgen.backend_factory import make_backend
    from benchmint.llm.loadgen.sim import SimulatedBackend
    from benchmint.llm.probe import check_reachable
    from benchmint.llm.samples import tokenizer_for

    monkeypatch.setenv("BENCHMINT_BACKEND_API_KEY", "secret")
    b = make_backend({"kind": "openai-http", "options": {"url": "http://127.0.0.1:9/v1"}})
    assert b.headers["Authorization"] == "Bearer secret"  # a server backend takes the key
    assert isinstance(make_backend({"kind": "sim", "options": {"slots": 2}}), SimulatedBackend)  # no api_key given
    check_reachable({"kind": "sim", "options": {}})  # no server: nothing to probe
    with pytest.raises(UserError, match="cannot reach the server"):
        check_reachable({"kind": "http", "options": {"url": "http://127.0.0.1:9/v1"}}, timeout_s=2)
    assert tokenizer_for("sim", "tiny") is None


class _EchoBackend:
    """A backend a user registers: one call, no change anywhere else."""

    def __init__(self, words: int = 2):
        self.words = words

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def generate(self, req, on_first_token=None):
        from benchmint.core.clock import now_ns
        from benchmint.llm.types import RequestRecord

        rec = RequestRecord(id=req.id, sent_ns=now_ns(), input_tokens=req.input_tokens)
        rec.first_token_ns = rec.end_ns = now_ns()
        rec.chunk_ns, rec.chunk_count, rec.text = [rec.end_ns], 1, "w " * self.words
        rec.output_tokens, rec.output_tokens_source = self.words, "engine"
        return rec


def test_a_registered_backend_runs_under_llm_bench(tmp_path):
    from benchmint.llm.bench import BenchConfig, run_async

    register_backend("echo-test", _EchoBackend, tokenizer="none", summary="echoes")
    try:
        cfg = BenchConfig(backend="echo-test", scenario="offline", num_requests=3, dataset="synthetic",
                          input_tokens="8", output_tokens="4", progress=False, backend_options={"words": 3})
        res = asyncio.run(run_async(cfg))
        assert res.result["requests"]["completed"] == 3
        assert res.result["backend"]["url"] is None and "server_metrics" not in res.result
        with pytest.raises(UserError, match="backend echo-test has no option 'loud'"):
            asyncio.run(run_async(BenchConfig(backend="echo-test", backend_options={"loud": True})))
    finally:
        _ENTRIES.pop("echo-test")
        _ALIASES.pop("echo-test")


def test_the_doc_lists_every_kind_and_alias():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "backends.md").read_text()
    for entry in list(_ENTRIES.values()):
        assert f"| `{entry.kind}`" in doc and all(f"`{a}`" in doc for a in entry.aliases), entry.kind
