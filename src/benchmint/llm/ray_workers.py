"""``llm bench --ray [ADDRESS]``: the load workers of :mod:`benchmint.llm.workers` as Ray actors, spread over
the nodes of a Ray cluster (``pip install 'benchmint[ray]'``).

``--ray`` alone (or ``--ray local``) starts a local Ray instance in this process; ``--ray auto`` joins the
cluster this machine belongs to (``RAY_ADDRESS`` or the one ``ray start`` made); ``--ray HOST:PORT`` (or
``ray://HOST:PORT``) joins that one. Every node that runs a worker needs benchmint installed. A process that
is already connected to Ray (``llm sweep --ray``'s later trials, a notebook) keeps its connection.

Each actor asks for one CPU and the actors are spread (``SPREAD``) over the nodes. Before the start, the
driver measures each actor's clock against its own: seven round trips, the one with the shortest round trip
kept, offset = actor reading - midpoint of the driver's readings (uncertain by half that round trip). An actor
on the driver's node shares its clock (the offset measured there is recorded as a check and not applied); an
actor elsewhere gets the common start as a reading of its own clock, and its records are shifted back onto the
driver's time line. Latencies never mix clocks: each is a difference of two readings of one actor's clock.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from typing import Any

from benchmint.core.clock import now_ns
from benchmint.core.errors import UserError
from benchmint.llm.worker_run import WorkerRun, WorkerSpec

LOCAL = "local"
CONNECT_PROBE_S = 5.0
PINGS = 7


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, an optional extra: pip install 'benchmint[ray]' (or drop --ray and use "
                        "--workers N on this host)") from None
    return ray


def _probe(address: str) -> None:
    """A cluster address that does not answer fails in seconds (ray.init would retry for minutes)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address!r}: give HOST:PORT of the cluster's head (or ray://HOST:PORT), 'auto' to "
                        "join this machine's cluster, or no value to start a local one")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_PROBE_S):
            pass
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address} ({type(e).__name__}: {e}); start it with "
                        "`ray start --head` or fix --ray") from None


def connect(address: str | None) -> dict[str, Any]:
    """Join (or start) the Ray cluster; what the result records of it. UserError when Ray is missing or the
    cluster cannot be reached."""
    ray = _import_ray()
    address = address or LOCAL
    started = False
    if address not in (LOCAL, "auto"):
        _probe(address)  # also when this process is connected already: a wrong address is never ignored
    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address == LOCAL:
            started = True
        else:
            kw["address"] = address
        try:
            ray.init(**kw)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot join the Ray cluster at {address!r} ({msg}); start one with `ray start --head`, "
                            "give its HOST:PORT, or use --ray with no value for a local one") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return {"address": address, "started_local_cluster": started, "ray_version": ray.__version__,
            "alive_nodes": len(nodes), "driver_node_id": ray.get_runtime_context().get_node_id(),
            "cluster_cpus": ray.cluster_resources().get("CPU")}


class RayWorkerActor:
    """A load worker in a Ray actor (an async actor: its methods and the run share the actor's event loop)."""

    def __init__(self) -> None:
        self.w: WorkerRun | None = None
        self.task: asyncio.Task | None = None

    async def setup(self, spec: WorkerSpec) -> dict[str, Any]:
        import ray

        self.w = WorkerRun(spec)
        info = await self.w.setup()
        ctx = ray.get_runtime_context()
        info["node_id"] = ctx.get_node_id()
        info["node_ip"] = ray.util.get_node_ip_address()
        return info

    async def clock(self) -> int:
        return now_ns()

    async def go(self, start_ns: int | None) -> None:
        assert self.w is not None
        self.task = asyncio.ensure_future(self.w.run(start_ns))

    async def take(self) -> tuple[bytes | None, dict[str, Any] | None]:
        """The records finished since the last call, and the final facts once the run is over."""
        assert self.w is not None
        done = self.task is not None and self.task.done()
        b = self.w.take()
        if done:
            self.task.result()  # type: ignore[union-attr]  # a failed run reaches the driver as an error
        return b, self.w.final() if done else None

    async def stop(self) -> None:
        if self.w is not None:
            self.w.stop.set()
            if self.task is None:
                self.task = asyncio.ensure_future(self.w.run(None))


class RayFleet:
    kind = "ray"
    lead_ns = 500_000_000

    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.actors: dict[int, Any] = {}
        self.pending: dict[Any, tuple[int, str]] = {}  # object ref -> (worker, what)
        self.running: set[int] = set()
        self.next_take = 0.0

    def launch(self, specs: list[WorkerSpec]) -> None:
        ray = _import_ray()
        cls = ray.remote(RayWorkerActor)
        run = uuid.uuid4().hex[:8]
        for spec in specs:  # named, so that `ray list actors` (and a test) can find each worker of a run
            a = cls.options(num_cpus=1, scheduling_strategy="SPREAD", max_restarts=0,
                            name=f"benchmint-load-{run}-{spec.index}").remote()
            self.actors[spec.index] = a
            self.pending[a.setup.remote(spec)] = (spec.index, "setup")

    async def poll(self, timeout: float) -> list[tuple[str, int, Any]]:
        ray = _import_ray()
        now = time.monotonic()
        if self.running and now >= self.next_take:
            busy = {k for k, what in self.pending.values() if what == "take"}
            for k in self.running - busy:
                self.pending[self.actors[k].take.remote()] = (k, "take")
            self.next_take = now + timeout
        if not self.pending:
            await asyncio.sleep(timeout)
            return []
        refs = list(self.pending)
        done, _ = await asyncio.to_thread(ray.wait, refs, num_returns=len(refs), timeout=timeout)
        events: list[tuple[str, int, Any]] = []
        for ref in done:
            k, what = self.pending.pop(ref)
            try:
                value = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                self.running.discard(k)
                events.append(("lost", k, f"Ray actor died ({_first_line(e)})"))
                continue
            except ray.exceptions.RayError as e:
                self.running.discard(k)
                events.append(("error", k, _first_line(e)))
                continue
            if what == "setup":
                events.append(("ready", k, value))
            else:
                b, final = value
                if b is not None:
                    events.append(("records", k, b))
                if final is not None:
                    self.running.discard(k)
                    events.append(("done", k, final))
        return events

    async def clock_offsets(self, ready: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
        ray = _import_ray()

        def measure(actor: Any) -> tuple[int, int]:
            best: tuple[int, int] | None = None
            for _ in range(PINGS):
                t0 = now_ns()
                tw = ray.get(actor.clock.remote())
                t1 = now_ns()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, tw - (t0 + t1) // 2)
            assert best is not None
            return best

        out = {}
        for k, a in self.actors.items():
            rtt, off = await asyncio.to_thread(measure, a)
            same = ready[k].get("node_id") == self.info.get("driver_node_id")
            out[k] = {"offset_to_driver_s": off / 1e9, "round_trip_s": rtt / 1e9, "uncertainty_s": rtt / 2e9,
                      "applied_offset_ns": 0 if same else off, "same_host_as_driver": same,
                      "how": f"best of {PINGS} round trips through Ray: actor reading - midpoint of the driver's; "
                             + ("not applied: the actor shares the driver's node and clock" if same else
                                "applied to align the start and the records' time line")}
        return out

    def go(self, start_ns: int, offsets: dict[int, int]) -> None:
        for k, a in self.actors.items():
            a.go.remote(start_ns + offsets.get(k, 0))
            self.running.add(k)

    def stop_all(self) -> None:
        for k in list(self.running) or list(self.actors):
            self.actors[k].stop.remote()

    def not_ready_hint(self) -> str:
        cpus = self.info.get("cluster_cpus")
        return (f"each Ray worker needs 1 CPU (the cluster has {cpus:g}); use fewer --workers or add nodes"
                if cpus else "check the Ray cluster")

    async def close(self) -> None:
        ray = _import_ray()
        for a in self.actors.values():
            try:
                ray.kill(a)
            except Exception:  # already dead
                pass


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__
