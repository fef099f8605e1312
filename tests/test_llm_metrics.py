"""Metrics follow the glossary exactly on hand-built request records."""

from __future__ import annotations

import pytest

from benchmint.core.errors import UserError
from benchmint.llm.metrics import compute_metrics, parse_slo, record_metrics, stats
from benchmint.llm.types import RequestRecord

MS = 1_000_000
T0 = 1000  # ms; monotonic readings are never 0 (0 means "not set" in a RequestRecord)


def rec(i, sched, sent, chunks, out, end=None, **kw):
    sched, sent, chunks = sched + T0, sent + T0, [c + T0 for c in chunks]
    end = end + T0 if end else None
    return RequestRecord(
        id=i, scheduled_ns=sched * MS, sent_ns=sent * MS, first_token_ns=chunks[0] * MS if chunks else None,
        chunk_ns=[c * MS for c in chunks], end_ns=(end or (chunks[-1] if chunks else sent)) * MS,
        output_tokens=out, input_tokens=10, chunk_count=len(chunks), output_tokens_source="usage", **kw,
    )


def test_record_metrics_definitions():
    r = rec(0, 100, 102, [150, 160, 180], out=5, end=185)
    m = record_metrics(r)
    assert m["send_lag_s"] == pytest.approx(0.002)
    assert m["ttft_s"] == pytest.approx(0.050)  # first chunk - scheduled
    assert m["ttft_from_send_s"] == pytest.approx(0.048)
    assert m["e2e_s"] == pytest.approx(0.080)  # last chunk - scheduled
    assert m["tpot_s"] == pytest.approx(0.030 / 4)  # (E2E - TTFT) / (tokens - 1)
    assert m["itl_s"] == pytest.approx([0.010, 0.020])
    m2 = record_metrics(r, anchor="sent")
    assert m2["ttft_s"] == pytest.approx(0.048) and m2["e2e_s"] == pytest.approx(0.078)


def test_single_token_or_single_chunk_has_no_tpot():
    m = record_metrics(rec(0, 0, 0, [10], out=1))
    assert m["tpot_s"] is None and m["itl_s"] == []
    whole = record_metrics(rec(0, 0, 0, [40], out=8))  # e.g. not streamed: all 8 tokens in one piece
    assert whole["tpot_s"] is None and whole["ttft_s"] == whole["e2e_s"]


def test_run_metrics_throughput_goodput_errors_and_warmup():
    recs = [
        rec(0, 0, 1, [50, 60, 70], out=3),
        rec(1, 100, 100, [300, 400], out=2),
        RequestRecord(id=2, scheduled_ns=(T0 + 200) * MS, sent_ns=(T0 + 200) * MS, end_ns=(T0 + 210) * MS, error_kind="http_5xx", error="HTTP 503"),
        rec(-1, 0, 0, [5000], out=9, warmup=True),  # excluded
    ]
    m = compute_metrics(recs, start_ns=T0 * MS, slo=parse_slo("ttft=100ms,tpot=0.2"))
    assert m["requests"] == {
        "scheduled": 3, "sent": 3, "completed": 2, "failed": 1, "cancelled": 0, "cancelled_in_flight": 0,
        "errors": {"http_5xx": 1},
        "error_examples": {"http_5xx": "HTTP 503"}, "warmup_excluded": 1, "interrupted": False,
    }
    assert m["duration_s"] == pytest.approx(0.400)  # start -> last end of a measured request
    assert m["throughput"]["requests_per_s"] == pytest.approx(2 / 0.4)
    assert m["output_tokens_total"] == 5
    assert m["throughput"]["output_tokens_per_s"] == pytest.approx(5 / 0.4)
    assert m["throughput"]["total_tokens_per_s"] == pytest.approx(25 / 0.4)
    assert m["ttft_s"]["max"] == pytest.approx(0.2) and m["ttft_s"]["count"] == 2
    assert m["itl_s"]["count"] == 3
    # request 0 meets ttft<=0.1 and tpot<=0.2; request 1 has TTFT 0.2 -> only one good request
    assert m["goodput"]["requests_meeting_slo"] == 1
    assert m["goodput_requests_per_s"] == pytest.approx(1 / 0.4)
    assert m["send_lag_s"]["max"] == pytest.approx(0.001)


def test_stats_percentiles_and_empty():
    s = stats(list(range(1, 101)))
    assert (s["mean"], s["p50"], s["max"], s["count"]) == (50.5, 50.5, 100.0, 100)
    assert s["p99"] == pytest.approx(99.01)
    assert stats([])["count"] == 0 and stats([])["p50"] is None


def test_parse_slo():
    assert parse_slo("ttft=2,tpot=200ms,e2e=10s") == {"ttft_s": 2.0, "tpot_s": 0.2, "e2e_s": 10.0}
    with pytest.raises(UserError, match="--slo"):
        parse_slo("latency=3")
    with pytest.raises(UserError, match="seconds"):
        parse_slo("ttft=fast")
    for bad, why in (("ttft=-1", "not a limit"), ("e2e=nan", "not a limit"), ("tpot=0", "not a limit"),
                     ("ttft=inf", "not a limit"), ("ttft=1,ttft=2", "given twice")):
        with pytest.raises(UserError, match=why):  # accepted before: goodput 0 against a limit of -1 s
            parse_slo(bad)


def test_duration_runs_from_the_first_scheduled_send_not_from_an_idle_start():
    # a ramp from 0/s sends its first request well after the run's start: the idle lead is not the run's time
    recs = [rec(0, 1500, 1500, [1550], out=1), rec(1, 2000, 2000, [2100], out=1)]
    m = compute_metrics(recs, start_ns=T0 * MS)
    assert m["duration_s"] == pytest.approx(0.600)  # 1.5 s -> 2.1 s, not 0 -> 2.1 s
    assert m["throughput"]["requests_per_s"] == pytest.approx(2 / 0.6)


def test_tokenizer_recount_flags_only_a_usage_the_text_cannot_hold():
    from benchmint.llm.token_counts import check_usage

    class Tok:  # one token per character
        def __call__(self, texts, add_special_tokens=False):
            return {"input_ids": [list(t) for t in texts]}

    good = RequestRecord(id=0, text="abcd", output_tokens=4, output_tokens_source="usage")
    # re-encoding decoded text gives more tokens than the model produced (split characters, pre-tokenizer
    # splits): the tiny model's random output does this on nearly every answer, and nothing is wrong
    more = RequestRecord(id=1, text="abcdefghij" * 3, output_tokens=20, output_tokens_source="usage")
    # usage claims more tokens than the text holds (e.g. the prompt counted too): that means something
    over = RequestRecord(id=3, text="abcd", output_tokens=30, output_tokens_source="usage")
    engine = RequestRecord(id=2, text="xyz", output_tokens=1, output_tokens_source="engine")  # not usage: skipped
    out = check_usage([good, more, over, engine], Tok())
    assert out["checked"] == 3 and out["mismatched"] == 2 and out["usage_over_text"] == 1
    assert good.token_count_flag is None and good.tokenizer_tokens == 4
    assert more.token_count_flag is None and more.tokenizer_tokens == 30
    assert "usage>text" in over.token_count_flag and over.tokenizer_tokens == 4
    assert check_usage([good], None) is None
    m = compute_metrics([good, more, over], start_ns=0)
    assert m["token_counts"]["flagged"] == 1


def test_cancelled_requests_are_scheduled_but_neither_failed_nor_sent_when_stopped_before_sending():
    recs = [
        rec(0, 0, 1, [50, 60, 70], out=3),
        RequestRecord(id=1, scheduled_ns=(T0 + 100) * MS, sent_ns=(T0 + 100) * MS, error_kind="cancelled",
                      error="stopped by Ctrl-C while in flight"),
        RequestRecord(id=2, scheduled_ns=(T0 + 900) * MS, error_kind="cancelled",
                      error="stopped by Ctrl-C before it was sent"),
    ]
    req = compute_metrics(recs, start_ns=T0 * MS, interrupted=True)["requests"]
    assert (req["scheduled"], req["sent"], req["completed"], req["failed"], req["cancelled"]) == (3, 2, 1, 0, 2)
    assert req["errors"] == {} and req["completed"] + req["failed"] + req["cancelled"] == req["scheduled"]


def test_chunks_that_arrived_in_one_read_give_no_tpot_of_zero():
    # 14 chunks read at once after a stall: the client saw no time between tokens, which is no TPOT of 0
    m = record_metrics(rec(0, 0, 0, [28] * 14, out=14))
    assert m["tpot_s"] is None and m["ttft_s"] == m["e2e_s"]


def test_goodput_fraction_of_an_interrupted_run_leaves_out_the_requests_never_sent():
    done = [rec(i, 10 * i, 10 * i, [10 * i + 5], out=1) for i in range(3)]
    never = [RequestRecord(id=3 + i, scheduled_ns=(T0 + 100 + i) * MS, error_kind="cancelled") for i in range(7)]
    m = compute_metrics(done + never, start_ns=T0 * MS, slo=parse_slo("ttft=1"), interrupted=True)
    assert m["goodput"]["requests_meeting_slo"] == 3
    assert m["goodput"]["fraction"] == pytest.approx(1.0)  # 3 of 3 asked, not 3 of 10 scheduled
