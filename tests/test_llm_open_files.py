"""Many requests in flight at once, more than the client's limit on open files allows connections: they wait
for a connection instead of failing. LoadGen's Offline scenario issued 24,576 queries at the start and every
one of them failed with "[Errno 24] Too many open files" while LoadGen called the run VALID."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

SLOW_SERVER = textwrap.dedent("""
    import asyncio, sys
    from aiohttp import web

    async def complete(request):
        await request.read()
        await asyncio.sleep(0.05)  # long enough that the requests overlap
        body = b'data: {"choices":[{"index":0,"text":"x"}]}\\n\\n'
        body += b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\\n\\ndata: [DONE]\\n\\n'
        return web.Response(body=body, content_type="text/event-stream")

    async def models(_):
        return web.json_response({"object": "list", "data": [{"id": "slow"}]})

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, backlog=1024)
""")

CLIENT = textwrap.dedent("""
    import asyncio, json, resource, sys
    from benchmint.llm.backends.http import HttpBackend
    from benchmint.llm.types import GenRequest

    resource.setrlimit(resource.RLIMIT_NOFILE, (120, 120))  # soft and hard: nothing to raise it to

    async def main():
        b = HttpBackend(url=sys.argv[1], model="slow", transport=sys.argv[2])
        await b.start()
        recs = await asyncio.gather(*(b.generate(GenRequest(id=i, prompt="hi", max_tokens=1)) for i in range(300)))
        await b.close()
        errors = sorted({r.error for r in recs if r.error_kind})
        print(json.dumps({"cap": getattr(b, "connection_cap", None), "ok": sum(r.error_kind is None for r in recs), "errors": errors,
                          "waited": getattr(b, "requests_waited", None)}))

    asyncio.run(main())
""")


# `llm bench --workers 2` with the same limit in each worker process (a child inherits it): each worker's waits
# are counted and the result sums them, so the run is judged client-bound
WORKERS = textwrap.dedent("""
    import json, resource, sys
    from benchmint.llm.bench import BenchConfig, run_bench

    resource.setrlimit(resource.RLIMIT_NOFILE, (120, 120))
    if __name__ == "__main__":
        cfg = BenchConfig(url=sys.argv[1], model="slow", scenario="concurrency", concurrency=300, num_requests=300,
                          output_tokens="1", workers=2, progress=False, server_metrics=False, out=sys.argv[2])
        r = run_bench(cfg, store=False).result
        print(json.dumps({"ok": r["requests"]["completed"], "waited": r["measurement"].get("requests_waited_for_connection"),
                          "per_worker": [w.get("requests_waited_for_connection") for w in r["workers"]],
                          "client_bound": r["client_bound"]["client_bound"]}))
""")


def _slow_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "server.py").write_text(SLOW_SERVER)
    server = subprocess.Popen([sys.executable, str(tmp_path / "server.py"), str(port)], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                return server, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.terminate()
                raise AssertionError("the slow server did not start") from None
            time.sleep(0.1)


@pytest.mark.parametrize("transport", ["h1", "aiohttp"])
def test_more_requests_in_flight_than_open_files_allow_wait_for_a_connection(tmp_path, transport):
    (tmp_path / "client.py").write_text(CLIENT)
    server, url = _slow_server(tmp_path)
    try:
        r = subprocess.run([sys.executable, str(tmp_path / "client.py"), url, transport],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout.strip().splitlines()[-1])
        assert got["errors"] == [] and got["ok"] == 300
        assert got["cap"] is not None and got["cap"] < 120
        assert got["waited"] >= 300 - got["cap"]  # counted, for the client-bound verdict
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.slow
def test_waits_for_a_connection_in_worker_processes_are_summed(tmp_path):
    (tmp_path / "workers.py").write_text(WORKERS)
    server, url = _slow_server(tmp_path)
    try:
        r = subprocess.run([sys.executable, str(tmp_path / "workers.py"), url, str(tmp_path / "run")],
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        got = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(10)
    assert got["ok"] == 300 and all(w > 0 for w in got["per_worker"])  # 150 in flight each, fewer connections
    assert got["waited"] == sum(got["per_worker"]) and got["client_bound"] is True


def test_the_soft_limit_is_raised_towards_the_hard_one():
    from benchmint.llm.backends.open_files import raise_soft_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        got = raise_soft_limit()
        now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        assert got == now and now >= soft and (hard == resource.RLIM_INFINITY or now <= hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_ctrl_c_tells_a_request_waiting_for_a_connection_from_one_in_flight():
    # one connection allowed: the second request waits in the client, so Ctrl-C finds it unsent
    import asyncio

    from aiohttp import web
    from fake_llm_server import AppThread

    from benchmint.llm.backends.http import HttpBackend
    from benchmint.llm.requests_driver import cancelled, generate
    from benchmint.llm.types import GenRequest

    async def slow(request):
        await asyncio.sleep(1.5)  # still answering when Ctrl-C comes at 0.3 s
        return web.json_response({})

    def app():
        a = web.Application()
        a.router.add_post("/v1/completions", slow)
        return a

    async def main(url):
        b = HttpBackend(url=url, model="m")
        b.connection_cap = 1
        await b.start()
        recs = []

        async def one(req):
            try:
                await generate(b.generate, req)
            except asyncio.CancelledError as e:
                recs.append(cancelled(req, 0, sent=e))
                raise

        tasks = [asyncio.ensure_future(one(GenRequest(id=i, prompt="x", max_tokens=1))) for i in range(2)]
        await asyncio.sleep(0.3)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await b.close()
        return sorted(recs, key=lambda r: r.id), b.requests_waited

    with AppThread(app) as srv:
        recs, waited = asyncio.run(main(srv.url))
    assert waited == 1
    assert [r.error for r in recs] == ["stopped by Ctrl-C while in flight", "stopped by Ctrl-C before it was sent"]
