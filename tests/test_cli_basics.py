from __future__ import annotations

import json
import subprocess
import sys


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("benchmint ")
    out = subprocess.run([sys.executable, "-m", "benchmint.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "env" in out.stdout and "demo" in out.stdout


def test_env_json_reports_host_and_packages():
    out = subprocess.run(
        [sys.executable, "-m", "benchmint.cli.main", "env", "--json"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cpu_cores_logical"] >= 1
    assert info["memory_bytes"] > 0
    assert "torch" in info["packages"]
    assert isinstance(info["gpus"], list)


def test_bad_flag_exits_2_without_traceback():
    out = subprocess.run(
        [sys.executable, "-m", "benchmint.cli.main", "env", "--no-such-flag"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr


def test_user_error_is_one_line_exit_2(monkeypatch, capsys):
    import typer

    from benchmint.cli import main
    from benchmint.core.errors import UserError

    def boom() -> None:
        raise UserError("thing.json: not found; pass an existing file")

    app = typer.Typer()
    app.command("boom")(boom)
    app.command("other")(boom)
    monkeypatch.setattr(main, "app", app)
    try:
        main.run(["boom"])
    except SystemExit as e:
        assert e.code == 2
    err = capsys.readouterr().err
    assert "error: thing.json: not found" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


_TORCH_LOADED = ("import sys\nfrom benchmint.cli.main import run\ntry:\n    run(sys.argv[1:])\nexcept SystemExit:\n"
                 "    pass\nprint('torch loaded:', 'torch' in sys.modules)")


def test_help_answers_without_loading_torch():
    # torch's import takes seconds on a small machine: the help of every command answers without it
    for args in (["--help"], ["replay", "--help"], ["export", "--help"], ["llm", "bench", "--help"],
                 ["results", "--help"], ["learn", "--help"]):
        out = subprocess.run([sys.executable, "-c", _TORCH_LOADED, *args], capture_output=True, text=True,
                             timeout=120)
        assert "Usage" in out.stdout and out.stdout.rstrip().endswith("torch loaded: False"), \
            (args, out.stdout[-500:], out.stderr[-2000:])


def test_llm_bench_help_groups_its_options(cli):
    # 59 options in one list ran to about 300 lines at 80 columns: a user looking for the load options read all
    code, out, _ = cli("llm", "bench", "--help")
    assert code == 0
    panels = ["Target", "Load", "Prompts", "Sessions and arrival traces", "Measurement", "More load generators",
              "Output"]
    where = [out.find(f"─ {p} ─") for p in panels]
    assert all(w > 0 for w in where), where
    load = out[where[1]:min(w for w in where if w > where[1])]
    assert "--rate " in load and "--concurrency " in load and "--dataset " not in load
