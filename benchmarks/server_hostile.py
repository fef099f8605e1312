"""Hostile requests against `benchmint llm serve` (issue 16): what a bad client can do to the built-in server.

Starts ``benchmint llm serve --model tiny`` in another process on loopback (from the ``benchmint`` on
``PYTHONPATH``: set ``PYTHONPATH=/path/to/other/src`` to measure another tree), then:

0. 200 concurrent streams (16 tokens each): how many complete;
1. sends 38 bad requests one at a time (wrong types, out-of-range values, bad bodies) and tabulates the answers:
   2xx (accepted), 4xx, 5xx, hang (no answer within ``--timeout``), and whether a 4xx carries an OpenAI-style
   error body (``error.message``, ``type``, ``param``, ``code``);
2. batch failure: 12 good streams and one bad request sent together; how many good streams complete;
3. a 1 MB prompt: its answer and time, a 4-token request sent beside it, and ``/health`` meanwhile;
4. a non-streaming client that leaves after 1 s: seconds until the engine runs no request any more;
5. SIGINT while a long stream runs: seconds until the server exits (a second SIGINT after 15 s, SIGKILL
   after 30 s).

    PYTHONPATH=src .venv/bin/python benchmarks/server_hostile.py [--timeout 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from local_port import free_port, wait_port  # noqa: E402

BIG = 2**70
GOOD = {"prompt": "Tell me a story", "max_tokens": 4, "ignore_eos": True}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "ignore_eos": True}


def bad_requests() -> list[tuple[str, str, bytes]]:
    """(label, route, body) of the 38 bad requests."""
    c, ch = "completions", "chat/completions"

    def comp(**kw: object) -> bytes:
        return orjson.dumps({**GOOD, **kw})

    def chat(**kw: object) -> bytes:
        return orjson.dumps({**CHAT, **kw})

    def raw(obj: object) -> bytes:
        return orjson.dumps(obj)

    def big(body: dict) -> bytes:  # orjson cannot write ints over 64 bits: put 2**70 in by hand
        return orjson.dumps(body).replace(b'"__BIG__"', str(BIG).encode())

    rows = [
        ("prompt 5", c, comp(prompt=5)),
        ("prompt {}", c, comp(prompt={})),
        ("prompt null", c, comp(prompt=None)),
        ("prompt [2**70]", c, big({**GOOD, "prompt": ["__BIG__"]})),
        ('prompt ""', c, comp(prompt="")),
        ("prompt [999999]", c, comp(prompt=[999999])),
        ("prompt [-1]", c, comp(prompt=[-1])),
        ("prompt true", c, comp(prompt=True)),
        ("prompt []", c, comp(prompt=[])),
        ('prompt ["a","b"]', c, comp(prompt=["a", "b"])),
        ("prompt [1.5]", c, comp(prompt=[1.5])),
        ("no prompt", c, raw({"max_tokens": 4})),
        ('messages ["hi"]', ch, chat(messages=["hi"])),
        ("message without content", ch, chat(messages=[{"role": "user"}])),
        ('messages "x"', ch, chat(messages="x")),
        ("messages []", ch, chat(messages=[])),
        ("message content 5", ch, chat(messages=[{"role": "user", "content": 5}])),
        ("message role 7", ch, chat(messages=[{"role": 7, "content": "hi"}])),
        ("no messages", ch, raw({"max_tokens": 4})),
        ('stream_options "yes"', c, comp(stream=True, stream_options="yes")),
        ("stream_options 1", ch, chat(stream=True, stream_options=1)),
        ('stream "yes"', c, comp(stream="yes")),
        ('seed "abc"', c, comp(seed="abc", temperature=1.0)),
        ("seed 2**70", c, big({**GOOD, "temperature": 1.0, "seed": "__BIG__"})),
        ("temperature 1e-300", c, comp(temperature=1e-300)),
        ("temperature -1", c, comp(temperature=-1)),
        ("temperature 1e300", c, comp(temperature=1e300)),
        ('temperature "hot"', c, comp(temperature="hot")),
        ("max_tokens 1e300", c, comp(max_tokens=1e300)),
        ("max_tokens 1.5", c, comp(max_tokens=1.5)),
        ("max_tokens 0", c, comp(max_tokens=0)),
        ("max_tokens -5", c, comp(max_tokens=-5)),
        ('max_tokens "ten"', c, comp(max_tokens="ten")),
        ("max_tokens 2**70", c, big({**GOOD, "max_tokens": "__BIG__"})),
        ("body not JSON", c, b"{prompt: hi"),
        ("body a list", c, b"[1, 2]"),
        ("body null", c, b"null"),
        ("ignore_eos 3", c, comp(ignore_eos=3)),
    ]
    assert len(rows) == 38, len(rows)
    return rows


async def send(s: aiohttp.ClientSession, url: str, body: bytes, timeout: float) -> tuple[str, int, bytes, float]:
    """(class, status, body, seconds): class is 2xx/4xx/5xx/hang/conn."""
    t0 = time.monotonic()
    try:
        async with s.post(url, data=body, headers={"Content-Type": "application/json"},
                          timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            data = await r.read()
            cls = f"{r.status // 100}xx"
            if r.status == 200 and b"data: " in data and b'"error"' in data:
                cls = "5xx"  # a stream that carried an error event
            return cls, r.status, data, time.monotonic() - t0
    except TimeoutError:
        return "hang", 0, b"", time.monotonic() - t0
    except aiohttp.ClientError as e:
        return "conn", 0, str(e).encode(), time.monotonic() - t0


def openai_shaped(data: bytes) -> bool:
    try:
        e = orjson.loads(data)["error"]
        return isinstance(e["message"], str) and e["type"] == "invalid_request_error" and "param" in e and "code" in e
    except Exception:
        return False


async def metric(s: aiohttp.ClientSession, root: str, name: str) -> float | None:
    try:
        async with s.get(root + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
            for line in (await r.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
    except (TimeoutError, aiohttp.ClientError):
        return None
    return None


async def run(base: str, timeout: float) -> dict:
    root = base.removesuffix("/v1")
    out: dict = {}
    # 1. the bad requests, each on a new connection (a server that drops one does not spoil the next)
    rows = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        for label, route, body in bad_requests():
            cls, st, data, dt = await send(s, f"{base}/{route}", body, timeout)
            rows.append((label, cls, st, openai_shaped(data) if cls == "4xx" else None, dt, data[:90]))
    out["bad"] = rows
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        # 0. keep: 200 concurrent streams complete
        t0 = time.monotonic()
        many = await asyncio.gather(*(send(s, f"{base}/completions", orjson.dumps({**GOOD, "max_tokens": 16,
                                                                                      "stream": True}), 120)
                                      for _ in range(200)))
        out["many"] = (sum(r[0] == "2xx" and b"[DONE]" in r[2] for r in many), time.monotonic() - t0)

        # 2. one bad request in a batch of good streams
        good = {**GOOD, "max_tokens": 32, "stream": True}
        tasks = [send(s, f"{base}/completions", orjson.dumps(good), timeout) for _ in range(12)]
        tasks.append(send(s, f"{base}/completions", orjson.dumps({**GOOD, "prompt": [999999], "stream": True}), timeout))
        res = await asyncio.gather(*tasks)
        ok = sum(r[0] == "2xx" and b"[DONE]" in r[2] for r in res[:12])
        out["batch"] = (ok, res[12][0], res[12][1])

        # 4. a non-streaming client that leaves
        body = orjson.dumps({**GOOD, "max_tokens": 3000})
        try:
            async with s.post(f"{base}/completions", data=body, timeout=aiohttp.ClientTimeout(total=1.0)) as r:
                await r.read()
        except TimeoutError:
            pass
        t0 = time.monotonic()
        freed = None
        while time.monotonic() - t0 < 30:
            if await metric(s, root, "benchmint_requests_running") == 0:
                freed = time.monotonic() - t0
                break
            await asyncio.sleep(0.2)
        out["disconnect_freed_s"] = freed

        # 3. the 1 MB prompt, a small request beside it, /health meanwhile
        prompt = ("lorem ipsum dolor sit amet " * 40000)[: 1 << 20]
        bigt = asyncio.create_task(send(s, f"{base}/completions", orjson.dumps({**GOOD, "prompt": prompt}), 60))
        await asyncio.sleep(2)
        small = await send(s, f"{base}/completions", orjson.dumps(GOOD), 30)
        try:
            async with s.get(root + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                health = r.status
        except (TimeoutError, aiohttp.ClientError):
            health = "hang"
        if bigt.done():
            b = bigt.result()
            out["big"] = (b[0], b[1], round(b[3], 2), b[2][:100])
        else:
            bigt.cancel()
            out["big"] = ("hang", 0, ">32", b"")
        out["big_small"] = (small[0], round(small[3], 2))
        out["big_health"] = health
    return out


async def long_stream(base: str) -> None:
    async with aiohttp.ClientSession() as s:
        await send(s, f"{base}/completions", orjson.dumps({**GOOD, "max_tokens": 3000, "stream": True}), 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds before a request counts as hung")
    a = ap.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "benchmint.cli.main", "llm", "serve", "--model", "tiny", "--port", str(port)]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        try:
            up_s = wait_port(port, srv, timeout_s=180)
        except RuntimeError as e:
            sys.exit(str(e))
        print(f"benchmint from {os.environ.get('PYTHONPATH', '(installed)')}; server up in {up_s:.1f} s")
        out = asyncio.run(run(base, a.timeout))

        # 5. SIGINT while a long stream runs
        loop = asyncio.new_event_loop()
        stream = loop.create_task(long_stream(base))
        loop.run_until_complete(asyncio.sleep(1.5))
        t0 = time.monotonic()
        srv.send_signal(signal.SIGINT)
        sigint = None
        while time.monotonic() - t0 < 30:
            loop.run_until_complete(asyncio.sleep(0.1))
            if srv.poll() is not None:
                sigint = time.monotonic() - t0
                break
            if 15 <= time.monotonic() - t0 < 15.15:
                srv.send_signal(signal.SIGINT)
        stream.cancel()
        loop.run_until_complete(asyncio.gather(stream, return_exceptions=True))
        loop.close()
    finally:
        if srv.poll() is None:
            os.killpg(srv.pid, signal.SIGKILL)
        srv.wait()

    print(f"\n{'request':<26} {'class':<5} {'status':>6} {'OpenAI body':>11} {'s':>6}  answer")
    for label, cls, st, shaped, dt, data in out["bad"]:
        sh = "-" if shaped is None else ("yes" if shaped else "no")
        print(f"{label:<26} {cls:<5} {st:>6} {sh:>11} {dt:6.2f}  {data.decode(errors='replace')[:70]!r}")
    counts = {k: sum(r[1] == k for r in out["bad"]) for k in ("2xx", "4xx", "5xx", "hang", "conn")}
    shaped = sum(bool(r[3]) for r in out["bad"])
    print(f"\nbad requests: {len(out['bad'])}  " + "  ".join(f"{k}: {v}" for k, v in counts.items())
          + f"  (4xx with an OpenAI-style body: {shaped})")
    print(f"200 concurrent streams: {out['many'][0]} completed in {out['many'][1]:.1f} s")
    ok, cls, st = out["batch"]
    print(f"batch with one bad request: {ok}/12 good streams completed; the bad one: {cls} ({st})")
    print("non-streaming client left: engine idle again after "
          + (f"{out['disconnect_freed_s']:.1f} s" if out["disconnect_freed_s"] is not None else "> 30 s (still generating)"))
    cls, st, dt, data = out["big"]
    print(f"1 MB prompt: {cls} ({st}) in {dt} s {data.decode(errors='replace')[:100]!r}")
    print(f"  4-token request beside it: {out['big_small'][0]} in {out['big_small'][1]} s; /health meanwhile: {out['big_health']}")
    print("SIGINT during a stream: exited after " + (f"{sigint:.1f} s" if sigint is not None else "> 30 s (SIGKILLed)"))


if __name__ == "__main__":
    main()
