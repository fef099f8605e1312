"""Real servers, unmodified (issue 14, point 1): `llm bench` learns from a strict server's 422 which extensions it
refuses, drops them, resends that request once, and says in the result and the console what that means; a
stream that finishes without content or without [DONE] is a completed request."""

from __future__ import annotations

import json

import pytest
from strict_llm_server import ACCEPTED, StrictLLMServer

from benchmint.llm.backends.adapt import RequestAdapter


def _bench(cli, tmp_path, url: str, *extra: str) -> tuple[int, str, str, dict]:
    code, out, err = cli("llm", "bench", "--url", url, "-n", "9", "--scenario", "concurrency", "--concurrency", "1",
                         "--out", str(tmp_path / "run"), "--results", str(tmp_path / "store"), *extra)
    p = tmp_path / "run" / "result.json"
    return code, out, err, json.loads(p.read_text()) if p.exists() else {}


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_strict_server_is_benchmarked_with_default_flags(cli, tmp_path, api):
    with StrictLLMServer() as s:
        code, out, err, r = _bench(cli, tmp_path, s.url, "--api", api)
        rejected, received = s.rejected, s.received
    assert code == 0, err + out
    req = r["requests"]
    # every request completed; every third one finished with no content (end-of-sequence first) and no [DONE]
    assert (req["completed"], req["failed"]) == (9, 0)
    assert r["output_tokens_total"] == 6 * 3
    ad = r["request_adaptation"]
    assert ad["dropped_fields"] == ["ignore_eos", "stream_options"]
    assert "output lengths are no longer fixed" in ad["by_field"]["ignore_eos"]["meaning"]
    assert "Unexpected fields" in ad["by_field"]["ignore_eos"]["server_said"]
    # one rejection, then the request is sent again once; no later request carries the fields
    assert rejected == 1 and ad["retried_requests"] == 1 and ad["retried_completed"] == 1
    assert received == 9
    assert "adapted to the server: dropped ignore_eos, stream_options" in out
    assert "output lengths are no longer fixed" in out


def test_no_adapt_keeps_the_rejections_as_failures(cli, tmp_path):
    with StrictLLMServer() as s:
        code, out, err, r = _bench(cli, tmp_path, s.url, "--no-adapt")
    assert code == 2
    assert "Unexpected fields" in err and "--allow-eos" in err
    assert r["requests"]["errors"] == {"http_4xx": 9}
    assert r["request_adaptation"]["dropped_fields"] == []


def test_the_client_sends_only_what_it_was_told_when_flags_already_fit(cli, tmp_path):
    with StrictLLMServer() as s:
        code, out, err, r = _bench(cli, tmp_path, s.url, "--allow-eos", "--no-usage")
        rejected = s.rejected
    assert code == 0, err
    assert rejected == 0 and r["request_adaptation"]["dropped_fields"] == []
    assert "adapted to the server" not in out


def test_a_rejection_of_a_core_field_is_not_adapted_away(cli, tmp_path):
    # a server that refuses max_tokens (not an extension): the requests fail with the server's words, no retry
    with StrictLLMServer(accepted=ACCEPTED - {"max_tokens"} | {"ignore_eos", "stream_options"}) as s:
        code, out, err, r = _bench(cli, tmp_path, s.url)
        rejected = s.rejected
    assert code == 2
    assert rejected == 9 and r["request_adaptation"]["retried_requests"] == 0
    assert "max_tokens" in err


def test_the_adapter_names_only_extension_fields_that_were_sent():
    a = RequestAdapter()
    body = b'{"model":"m","ignore_eos":true,"stream_options":{"include_usage":true}}'
    assert a.learn(500, "ignore_eos", body, 1) == []  # a server error is not a rejection of a field
    assert a.learn(422, "Unexpected fields: {'min_tokens'}", body, 1) == []  # not sent
    assert a.learn(422, "field my_ignore_eos_x unknown", body, 1) == []  # a word that only contains the name
    pydantic = '{"detail":[{"type":"extra_forbidden","loc":["body","ignore_eos"],"msg":"Extra inputs"}]}'
    assert a.learn(422, pydantic, body, 7) == ["ignore_eos"]
    d = {"model": "m", "ignore_eos": True, "stream_options": {}}
    a.strip(d)
    assert d == {"model": "m", "stream_options": {}}
    assert RequestAdapter(enabled=False).learn(422, pydantic, body, 1) == []
