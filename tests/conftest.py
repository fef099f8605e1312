from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the benchmint CLI in-process; returns (exit_code, stdout, stderr)."""
    from typer.testing import CliRunner

    from benchmint.cli.main import run

    monkeypatch.chdir(tmp_path)

    def invoke(*args: str) -> tuple[int, str, str]:
        import contextlib
        import io

        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return code, out.getvalue(), err.getvalue()

    del CliRunner
    return invoke


@pytest.fixture(scope="module")
def server(request):
    """benchmint's own server over the tiny model, one per test module (``server.url``, ``server.engine``); a
    module tunes it with ``SERVER_ENGINE = {...}`` (engine options) and ``SERVER_OPTIONS = {...}`` (server's)."""
    from benchmint.llm.engine import AsyncEngine
    from benchmint.llm.server import ServerThread
    from benchmint.models.tiny_llm import tiny_llm_path

    engine = AsyncEngine.create(str(tiny_llm_path()), **{"max_batch_size": 8, **getattr(request.module, "SERVER_ENGINE", {})})
    srv = ServerThread(engine, model_name="tiny", **getattr(request.module, "SERVER_OPTIONS", {})).start()
    yield srv
    srv.stop()
    engine.close()
