"""Tokenizing an answer the server sent no usage for happens after the run, never on the event loop while
requests are in flight, and gives the same counts as the tokenizer would have during the run."""

from __future__ import annotations

import json

from test_llm_http import FaultServer, plain

from benchmint.llm import bench
from benchmint.llm.backends.http import HttpBackend

WORDS = [b"alpha", b" beta", b" gamma", b" delta"]


def _stream(n: int) -> bytes:
    body = b"".join(b'data: {"choices":[{"index":0,"text":"%s"}]}\n\n' % w for w in WORDS[:n]) + b"data: [DONE]\n\n"
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)) + body


def _handle(sock, head, body):
    if head.startswith(b"GET /v1/models"):
        sock.sendall(plain("200 OK", json.dumps({"data": [{"id": "m"}]}).encode()))
    elif head.startswith(b"GET"):
        sock.sendall(plain("404 Not Found", b"{}"))
    else:  # no usage in the stream
        sock.sendall(_stream(2 + json.loads(body)["max_tokens"] % 3))


class SpyTokenizer:
    """One token per character; records, for every call, whether requests were in flight."""

    def __init__(self):
        self.in_flight = 0
        self.calls: list[tuple[bool, list[str]]] = []

    def __call__(self, texts, add_special_tokens=False):
        batch = [texts] if isinstance(texts, str) else list(texts)
        self.calls.append((self.in_flight > 0, batch))
        ids = [list(range(len(t))) for t in batch]
        return {"input_ids": ids[0] if isinstance(texts, str) else ids}


def test_no_tokenizer_call_while_requests_are_in_flight(monkeypatch, tmp_path):
    spy = SpyTokenizer()
    real_generate = HttpBackend.generate

    async def generate(self, req, on_first_token=None):
        spy.in_flight += 1
        try:
            return await real_generate(self, req, on_first_token)
        finally:
            spy.in_flight -= 1

    monkeypatch.setattr(HttpBackend, "generate", generate)
    monkeypatch.setattr(bench, "load_tokenizer", lambda name: spy)
    with FaultServer(_handle) as s:
        cfg = bench.BenchConfig(url=s.url, model="m", scenario="concurrency", concurrency=4, num_requests=12,
                                output_tokens="1-6", server_metrics=False, out=str(tmp_path / "run"))
        res = bench.run_bench(cfg, write=False)
    during = [batch for flying, batch in spy.calls if flying]
    assert during == [], f"tokenizer called while requests were in flight: {during[:3]}"
    recs = [r for r in res.records if r.ok]
    assert len(recs) == 12
    answers = {r.text for r in recs}
    assert any(answers & set(batch) for _, batch in spy.calls), "the answers were never counted"
    for r in recs:  # the same figure the tokenizer gives: one token per character here
        assert (r.output_tokens, r.output_tokens_source) == (len(r.text), "tokenizer")
    assert res.result["token_counts"]["output_tokens_source"] == {"tokenizer": 12}
    assert res.result["output_tokens_total"] == sum(len(r.text) for r in recs)


def test_random_output_of_the_tiny_model_is_not_flagged_but_a_usage_it_cannot_hold_is():
    """The demo printed "22 requests flagged: tokenizer!=usage" on the tiny model's random output: re-encoding
    decoded random ids gives more tokens than were generated, which is the re-encoding, not the server."""
    import random

    from transformers import AutoTokenizer

    from benchmint.llm.metrics import compute_metrics
    from benchmint.llm.token_counts import check_usage
    from benchmint.llm.types import RequestRecord
    from benchmint.models.tiny_llm import tiny_llm_path

    tok = AutoTokenizer.from_pretrained(str(tiny_llm_path()))
    rnd = random.Random(0)
    recs = []
    for i in range(40):
        ids = [rnd.randrange(len(tok)) for _ in range(64)]  # what a random-weight model generates
        recs.append(RequestRecord(id=i, sent_ns=1, end_ns=2, text=tok.decode(ids, skip_special_tokens=True),
                                  output_tokens=64, output_tokens_source="usage", chunk_count=64))
    out = check_usage(recs, tok)
    assert out["mismatched"] > 20  # the re-count differs on most answers (what the old check flagged) ...
    assert out["median_relative_difference"] > 0.1
    assert out["usage_over_text"] == 0 and compute_metrics(recs, 0)["token_counts"]["flagged"] == 0  # ... rightly
    # a usage that also counts a 100-token prompt claims tokens the text does not hold
    bad = RequestRecord(id=99, sent_ns=1, end_ns=2, text=recs[0].text, output_tokens=164, output_tokens_source="usage")
    assert check_usage([bad], tok)["usage_over_text"] == 1 and bad.token_count_flag.startswith("usage>text")


def test_a_hub_tokenizer_is_not_asked_for_when_the_hub_cannot_be_reached(monkeypatch):
    # offline, huggingface_hub retried a hub name's lookup for ~23 s, twice, before the run went on without a
    # tokenizer (49 s measured): the cache is tried without the network, the hub only when it answers
    import transformers

    from benchmint.llm import bench

    calls: list[dict] = []

    def from_pretrained(name, **kw):
        calls.append(kw)
        raise OSError("not cached")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setattr(bench, "_hub_reachable", lambda: False)
    assert bench.load_tokenizer("some-org/some-model") is None
    assert calls == [{"local_files_only": True}]
    monkeypatch.setattr(bench, "_hub_reachable", lambda: True)
    calls.clear()
    assert bench.load_tokenizer("some-org/some-model") is None
    assert calls == [{"local_files_only": True}, {}]  # reachable: asked once more, online


def test_the_hub_counts_as_unreachable_when_set_offline_and_a_local_tokenizer_still_loads():
    from benchmint.llm import bench

    assert bench._hub_reachable() is False  # the tests run with HF_HUB_OFFLINE=1 (conftest)
    assert bench.load_tokenizer("tiny") is not None


def test_behind_a_proxy_the_hub_is_asked_unless_its_host_is_bypassed(monkeypatch):
    import socket

    from huggingface_hub import constants

    from benchmint.llm import bench

    def refused(*a, **kw):
        raise ConnectionRefusedError("no network here")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", refused)
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    assert bench._hub_reachable() is False  # no proxy, the host refuses
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert bench._hub_reachable() is True  # the proxy decides
    from urllib.parse import urlsplit

    monkeypatch.setenv("NO_PROXY", urlsplit(constants.ENDPOINT).hostname)
    assert bench._hub_reachable() is False  # bypassed: asked directly, refused
