"""Bad values a user can type: one line naming the flag and what to do, exit 2, never an empty success."""

from __future__ import annotations


def test_unknown_run_kind_is_an_error_not_an_empty_list(cli, tmp_path):
    code, _, err = cli("results", "list", "--kind", "bogus", "--results", str(tmp_path / "s"))
    assert code == 2 and "--kind 'bogus'" in err and "replay" in err
    code, _, err = cli("report", "--kind", "bogus", "--out", str(tmp_path / "r.html"))
    assert code == 2 and not (tmp_path / "r.html").exists()


def test_unknown_mlperf_model_key_is_an_error(cli):
    code, _, err = cli("llm", "mlperf", "--backend", "sim", "--model-key", "nosuch", "--plan", "--target-qps", "1")
    assert code == 2 and "llama2-70b" in err


def test_unknown_bench_backend_is_named_before_any_server_is_contacted(cli):
    code, _, err = cli("llm", "bench", "--backend", "bogus", "--url", "http://127.0.0.1:9/v1", "-n", "1",
                       "--scenario", "offline")
    assert code == 2 and "unknown backend 'bogus'" in err


def test_debug_still_exits_2_on_a_user_error(cli):
    code, _, err = cli("--debug", "replay", "/nonexistent/trace.json")
    assert code == 2 and "Traceback" in err and "error: /nonexistent/trace.json" in err


def test_usage_errors_are_one_line_that_names_the_help_to_read(cli):
    for args, words in ((("replay", "--bogus"), "No such option: --bogus"), (("replay",), "Missing argument"),
                        (("nosuch",), "No such command"), (("llm", "bench", "--rate", "abc"), "--rate")):
        code, out, err = cli(*args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1, (args, err)
        assert lines[0].startswith("error: ") and words in lines[0] and "--help" in lines[0]
        assert "Traceback" not in err and "╭" not in err


def test_a_multi_rank_capture_folder_replayed_alone_names_ranks(cli, tmp_path):
    # it said "folder has no et.json; give the execution trace file itself"
    for r in (0, 1):
        (tmp_path / "cap" / f"rank{r}").mkdir(parents=True)
        (tmp_path / "cap" / f"rank{r}" / "et.json").write_text("{}")
    code, _, err = cli("replay", str(tmp_path / "cap"))
    assert code == 2 and "--ranks 2" in err and "rank0" in err and len(err.strip().splitlines()) == 1
