"""`llm bench` against a real third-party server, unmodified: `transformers serve` (transformers' `serving`
extra, a test dependency) over the tiny local model, offline. It refuses `ignore_eos` with a 422 and ends its
streams without [DONE]; with default flags every request must complete (issue 14, point 1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from local_port import free_port

pytest.importorskip("fastapi", reason="transformers serve needs the `serving` extra (pip install -e '.[test]')")
pytest.importorskip("openai", reason="transformers serve needs the `serving` extra (pip install -e '.[test]')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transformers_server(tmp_path_factory):
    from benchmint.models.tiny_llm import tiny_llm_path

    folder = tmp_path_factory.mktemp("tf-serve") / "tiny"
    shutil.copytree(tiny_llm_path(), folder)
    port = free_port()
    log = open(folder.parent / "serve.log", "w+")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())",
         "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", str(folder)],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                    if str(folder) in r.read().decode():
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"transformers serve did not start: {log.read()[-2000:]}")
            time.sleep(1)
        yield url, str(folder)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_transformers_serve_with_default_flags(cli, tmp_path, transformers_server):
    url, model = transformers_server
    code, out, err = cli("llm", "bench", "--url", url, "-n", "6", "--rate", "50", "--output-tokens", "8",
                         "--out", str(tmp_path / "run"), "--results", str(tmp_path / "store"),
                         "--no-progress")
    assert code == 0, err + out
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    req = r["requests"]
    assert (req["completed"], req["failed"]) == (6, 0), req
    ad = r["request_adaptation"]
    assert "ignore_eos" in ad["dropped_fields"] and ad["retried_requests"] >= 1
    assert "output lengths are no longer fixed" in out
    assert r["backend"]["served_models"] == [model]
    # the server's usage counts the tokens; at most max_tokens each, as the model may stop at end-of-sequence
    assert 0 < r["output_tokens_total"] <= 6 * 8
