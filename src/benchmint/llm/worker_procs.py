"""``llm bench --workers N`` on this host: N worker processes (multiprocessing, spawn), each with its own event
loop (uvloop when installed), driven by :class:`benchmint.llm.workers.FleetDriver`.

Each worker gets two one-way pipes: the driver sends ``("go", start_ns)`` and ``("stop",)`` on one; the worker
sends ``("ready", k, info)``, ``("records", k, msgpack)`` batches, ``("done", k, final)`` or
``("error", k, text)`` on the other, from a sender thread so that a full pipe never blocks its event loop. A
worker ignores SIGINT (a terminal's Ctrl-C reaches every process of the group): the driver handles it and
tells the workers to stop. A worker whose pipe closes before ``done`` is lost (killed, out of memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from benchmint.llm.worker_run import WorkerRun, WorkerSpec, clock_facts


class ProcessFleet:
    kind = "processes"
    lead_ns = 250_000_000  # from "go" to the common start: enough for every worker to get the message

    def __init__(self) -> None:
        self.procs: dict[int, Any] = {}
        self.ctrl: dict[int, Connection] = {}
        self.data: dict[int, Connection] = {}
        self.finished: set[int] = set()

    def launch(self, specs: list[WorkerSpec]) -> None:
        ctx = mp.get_context("spawn")
        with _main_not_reimported():
            self._start(ctx, specs)

    def _start(self, ctx: Any, specs: list[WorkerSpec]) -> None:
        for spec in specs:
            k = spec.index
            ctrl_r, ctrl_w = ctx.Pipe(duplex=False)
            data_r, data_w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=child_main, args=(spec, ctrl_r, data_w), name=f"benchmint-worker-{k}", daemon=True)
            p.start()
            ctrl_r.close()  # the child holds these ends now: its pipe closes when it exits
            data_w.close()
            self.procs[k], self.ctrl[k], self.data[k] = p, ctrl_w, data_r

    def _read(self, timeout: float) -> list[tuple[str, int, Any]]:
        by_conn = {c: k for k, c in self.data.items()}
        events: list[tuple[str, int, Any]] = []
        for c in wait(list(by_conn), timeout):
            k = by_conn[c]  # type: ignore[index]
            try:
                while c.poll():  # type: ignore[union-attr]
                    msg = c.recv()  # type: ignore[union-attr]
                    events.append(msg)
                    if msg[0] in ("done", "error"):
                        self.finished.add(k)
            except (EOFError, OSError):
                del self.data[k]
                if k not in self.finished:
                    p = self.procs[k]
                    p.join(2)
                    code = p.exitcode
                    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                    events.append(("lost", k, f"worker process {p.pid} ended without its result ({how})"))
        return events

    async def poll(self, timeout: float) -> list[tuple[str, int, Any]]:
        if not self.data:
            await asyncio.sleep(timeout)
            return []
        return await asyncio.to_thread(self._read, timeout)

    async def clock_offsets(self, ready: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        here = clock_facts()
        return {k: {"offset_to_driver_s": 0.0, "applied_offset_ns": 0, "same_host_as_driver": True,
                    "how": f"one host: {here['clock']} is {here['implementation']}, one clock for every process"}
                for k in ready}

    def go(self, start_ns: int, offsets: dict[int, int]) -> None:
        for k, c in self.ctrl.items():
            self._send(c, ("go", start_ns + offsets.get(k, 0)))

    def stop_all(self) -> None:
        for c in self.ctrl.values():
            self._send(c, ("stop",))

    @staticmethod
    def _send(c: Connection, msg: Any) -> None:
        try:
            c.send(msg)
        except OSError:  # that worker is gone; its pipe says so
            pass

    def not_ready_hint(self) -> str:
        return "this host may be too loaded to start them; try fewer --workers"

    async def close(self) -> None:
        self.stop_all()
        for p in self.procs.values():
            await asyncio.to_thread(p.join, 10)
            if p.is_alive():
                p.kill()
                p.join(5)
        for c in (*self.ctrl.values(), *self.data.values()):
            c.close()


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While the workers are spawned, the driving program's ``__main__`` shows no module name or file, so that
    a spawned worker imports only what its work needs (spawn otherwise re-imports ``__main__`` in every child:
    for ``benchmint``'s CLI, every command's imports, torch among them, 10 s and more per worker on a busy
    host). The worker's target and spec never live in ``__main__``."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


# ---------------------------------------------------------------- in the worker process
def child_main(spec: WorkerSpec, ctrl: Connection, data: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and tells the workers to stop
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as r:
        r.run(_child(spec, ctrl, data))
    data.close()


async def _child(spec: WorkerSpec, ctrl: Connection, data: Connection) -> None:
    loop = asyncio.get_running_loop()
    k = spec.index
    out: queue.SimpleQueue = queue.SimpleQueue()

    def sender() -> None:
        while (m := out.get()) is not None:
            try:
                data.send(m)
            except OSError:
                return

    send_thread = threading.Thread(target=sender, name="benchmint-worker-send", daemon=True)
    send_thread.start()
    w = WorkerRun(spec)
    start: asyncio.Future = loop.create_future()

    def on_msg(msg: tuple) -> None:
        if msg[0] == "go" and not start.done():
            start.set_result(msg[1])
        elif msg[0] == "stop":
            w.stop.set()
            if not start.done():
                start.set_result(None)

    def control() -> None:
        while True:
            try:
                msg = ctrl.recv()
            except (EOFError, OSError):  # the driver is gone: stop
                msg = ("stop",)
            loop.call_soon_threadsafe(on_msg, msg)
            if msg[0] == "stop":
                return

    threading.Thread(target=control, name="benchmint-worker-control", daemon=True).start()
    try:
        out.put(("ready", k, await w.setup()))
        await w.run_streaming(await start, lambda b: out.put(("records", k, b)))
        out.put(("done", k, w.final()))
    except Exception as e:  # the driver names the worker and keeps the others' records
        out.put(("error", k, f"{type(e).__name__}: {e}"))
    finally:
        out.put(None)
        await asyncio.to_thread(send_thread.join, 60)
