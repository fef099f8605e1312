"""Run a benchmark: workload -> schedule -> backend -> request records -> metrics -> outputs.

:func:`run_bench` is the Python API behind ``benchmint llm bench``. The driver is built for a fast client:
the schedule and every request are made before the clock starts; an open-loop dispatcher sleeps until the
next scheduled send and then starts the request as a task; per-request work is a few counter updates;
the live progress display renders from its own timer thread, never from the request path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core.clock import ClockAnchor, now_ns
from benchmint.core.errors import UserError
from benchmint.core.gcpause import gc_paused
from benchmint.core.redact import register_secret
from benchmint.llm import traffic
from benchmint.llm.metrics import compute_metrics, parse_slo
from benchmint.llm.requests_driver import cancelled as _cancelled
from benchmint.llm.requests_driver import generate as _generate
from benchmint.llm.requests_driver import wait_or_cancel
from benchmint.llm.schedule import SCENARIOS, Schedule
from benchmint.llm.token_counts import count_after_run
from benchmint.llm.types import Backend, GenRequest, RequestRecord
from benchmint.llm.workload import Workload, load_workload

RESULT_SCHEMA_VERSION = "1.0"


@dataclass
class BenchConfig:
    backend: str = "openai-http"  # a kind of llm/backends/registry.py: openai-http, transformers, sim
    url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None
    api: str = "completions"  # completions | chat
    stream: bool = True
    scenario: str = "server"
    rate: float | None = None
    burstiness: float = 1.0
    concurrency: int | None = None
    num_requests: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    dataset: str = "sample"
    split: str = "train"
    dataset_config: str | None = None
    input_tokens: str | None = None
    output_tokens: str | None = "64"
    prompt_column: str | None = None
    input_column: str | None = None
    reference_column: str | None = None
    system_prompt: str | None = None
    chat_template: bool = True
    tokenizer: str | None = None
    seed: int = 0
    slo: str | None = None
    anchor: str = "scheduled"  # scheduled | sent
    timeout_s: float = 600.0
    api_key: str | None = None
    ignore_eos: bool = True
    include_usage: bool = True
    adapt_request: bool = True  # drop extensions the server rejects (llm/backends/adapt.py)
    server_metrics: bool = True  # scrape the server's /metrics during an HTTP run (llm/server_metrics.py)
    server_metrics_interval_s: float = 1.0
    max_batch_size: int = 16
    device: str = "cpu"
    out: str | None = None
    json_path: str | None = None
    progress: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)  # --backend-option: the backend's own options
    # workload shapes (llm.traffic; docs/workloads.md): sessions, shared prefixes, trace replay, ramps
    sessions: str | None = None  # PATH (ShareGPT-style) | synthetic
    num_sessions: int | None = None
    session_turns: str = "4"
    think_time: str = "1"
    prefix_groups: int | None = None
    prefix_tokens: int | None = None
    trace: str | None = None  # Mooncake .jsonl | BurstGPT .csv
    trace_speed: float = 1.0
    trace_window: str | None = None
    trace_block_tokens: int = 512
    rate_start: float | None = None
    rate_end: float | None = None
    ramp_duration_s: float | None = None
    concurrency_start: int | None = None
    concurrency_end: int | None = None
    # load from several processes (llm.workers) or Ray actors (llm.ray_workers); None: this process drives it
    workers: int | None = None
    ray: str | None = None  # local (start a local cluster) | auto | ADDRESS of an existing one

    def check(self) -> None:
        """Numbers a run cannot mean (a rate of nan, a timeout of 0, no sessions) refused in one line, before any
        server is contacted: every given number finite, each within its range."""
        for name, flag in _FLOATS.items():
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise UserError(f"{flag} {v}: give a finite number")
        for name, (flag, least) in _AT_LEAST.items():
            v = getattr(self, name)
            if v is not None and v < least:
                raise UserError(f"{flag} {v}: must be at least {least}")
        for name, flag in _POSITIVE.items():
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise UserError(f"{flag} {v}: must be > 0")
        sc = self.scenario.lower().replace("_", "-")
        known = (*SCENARIOS, "singlestream", "ramp", "concurrency-ramp")
        if sc not in known:
            raise UserError(f"unknown --scenario {self.scenario!r}; choose one of "
                            f"{', '.join(x for x in known if x not in ('poisson', 'singlestream'))}")


_FLOATS = {"rate": "--rate", "burstiness": "--burstiness", "duration_s": "--duration", "timeout_s": "--timeout",
           "server_metrics_interval_s": "--server-metrics-interval", "trace_speed": "--trace-speed",
           "rate_start": "--rate-start", "rate_end": "--rate-end", "ramp_duration_s": "--ramp-duration"}
_AT_LEAST = {"warmup": ("--warmup", 0), "num_sessions": ("--num-sessions", 1), "concurrency": ("--concurrency", 1),
             "max_batch_size": ("--max-batch-size", 1), "workers": ("--workers", 1),
             "prefix_groups": ("--prefix-groups", 1), "prefix_tokens": ("--prefix-tokens", 1),
             "trace_block_tokens": ("--trace-block-tokens", 1)}
_POSITIVE = {"timeout_s": "--timeout", "trace_speed": "--trace-speed"}


@dataclass
class BenchResult:
    result: dict[str, Any]
    records: list[RequestRecord]
    start_ns: int
    anchor: ClockAnchor
    paths: dict[str, Path] = field(default_factory=dict)
    run_record: Any = None
    server_metrics_series: dict[str, Any] | None = None  # written as server_metrics.json

    @property
    def all_failed(self) -> bool:
        return self.result["requests"]["completed"] == 0


class Counters:
    __slots__ = ("done", "failed", "in_flight", "sent", "planned")

    def __init__(self, planned: int):
        self.done = self.failed = self.in_flight = self.sent = 0
        self.planned = planned

    def count(self, rec: RequestRecord) -> None:
        if rec.error_kind is None:
            self.done += 1
        else:
            self.failed += 1


# ---------------------------------------------------------------- setup
def load_tokenizer(name: str | None) -> Any:
    """The tokenizer used to count tokens client-side; None if absent. A local folder (``tiny`` too) or a hub
    name already in the cache loads without the network; the hub is asked only when it can be reached (offline,
    huggingface_hub would retry a failed lookup for ~20 s, twice, before giving up)."""
    if not name:
        return None
    from benchmint.models.tiny_llm import resolve_model_path

    path = resolve_model_path(name)
    try:
        from transformers import AutoTokenizer
    except Exception:
        return None
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception:
        pass
    if Path(path).exists() or not _hub_reachable():
        return None
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception:
        return None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face hub can be asked at all: False when it is set offline or its host does not
    answer a TCP connection within ``timeout_s``; True behind a proxy for the hub's host (the proxy decides).
    The proxy and its ``NO_PROXY`` bypass are read as urllib reads them; the hub's HTTP client matches some
    ``NO_PROXY`` patterns otherwise (a leading-dot domain, a ``*`` among other entries), where this guess can
    differ: a wrong "unreachable" runs without a tokenizer, a wrong "reachable" waits through the retries."""
    import socket
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    try:
        from huggingface_hub import constants
    except Exception:
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    url = urlsplit(constants.ENDPOINT)
    proxies = getproxies()
    if (proxies.get(url.scheme) or proxies.get("all")) and not proxy_bypass(url.hostname or ""):
        return True
    try:
        with socket.create_connection((url.hostname or "", url.port or (443 if url.scheme == "https" else 80)),
                                      timeout=timeout_s):
            return True
    except OSError:
        return False


async def probe_server(url: str, api_key: str | None = None, timeout_s: float = 5.0) -> tuple[list[str], str]:
    """GET ``{url}/models``: model ids served (empty when the route is missing), and what the server answered
    when it listed none (for the message); UserError when unreachable."""
    import aiohttp

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s), headers=headers) as s:
            async with s.get(url + "/models") as r:
                if r.status != 200:
                    return [], f"GET {url}/models answered HTTP {r.status}"
                data = await r.json(content_type=None)
                return ([m.get("id") for m in (data.get("data") or []) if isinstance(m, dict) and m.get("id")],
                        f"GET {url}/models listed none")
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, TimeoutError, OSError) as e:
        raise UserError(f"cannot reach the server at {url} ({type(e).__name__}: {e}); start it or fix --url") from None
    except (aiohttp.ClientError, ValueError, AttributeError) as e:
        return [], f"GET {url}/models gave no model list ({type(e).__name__})"


def make_requests(workload: Workload, schedule: Schedule, warmup: int) -> tuple[list[GenRequest], list[GenRequest]]:
    """Measured and warm-up requests, cycling through the workload's prompts."""
    tpl = workload.requests
    if not tpl:
        raise UserError("the workload has no prompts")
    n = schedule.count if schedule.open_loop else min(schedule.count, 10**6)
    if not schedule.open_loop and schedule.duration_s is not None and schedule.count >= 10**9:
        n = 0  # made lazily: a duration-bound closed loop has no fixed count
    measured = [dataclasses.replace(tpl[i % len(tpl)], id=i) for i in range(n)]
    warm = [dataclasses.replace(tpl[i % len(tpl)], id=-(i + 1)) for i in range(warmup)]
    return measured, warm


# how every client-side percentile of a result is computed (benchmint.core.stats.percentiles)
PERCENTILE_RULE = "linear interpolation between closest ranks (numpy's default; benchmint.core.stats)"


# ---------------------------------------------------------------- drivers
# The event loop's timers count whole milliseconds (libuv's, and epoll's timeout under the stdlib loop): uvloop
# rounds a sleep to the nearest one, so a sleep under half a millisecond returns at once and a dispatcher
# sleeping "the rest" would go round the loop dozens of times per request, burning the CPU that the requests and
# the server need. The open loop sleeps whole ticks instead, and goes round the loop only for the last
# SPIN_NS before a send: a send is never early and late by less than a tick minus SPIN_NS (on an idle host),
# for one or two timer wake-ups per request; requests due in the same tick go out together.
TIMER_TICK_NS = 1_000_000
SPIN_NS = 200_000
async def _run_open_loop(
    backend: Backend, reqs: list[GenRequest], offsets_s: Any, c: Counters, stop: asyncio.Event, records: list,
    start_ns: int | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    offs = (offsets_s * 1e9).astype("int64").tolist()
    tasks: set[asyncio.Task] = set()
    gen = backend.generate
    append = records.append

    async def one(req: GenRequest, target: int) -> None:
        c.in_flight += 1
        try:
            rec = await _generate(gen, req)
        except asyncio.CancelledError as e:
            append(_cancelled(req, target, sent=e))
            raise
        finally:
            c.in_flight -= 1
        rec.scheduled_ns = target
        append(rec)
        c.count(rec)

    # 5 ms of lead so that the first sends are not late by construction (workers: the common start)
    start = now_ns() + 5_000_000 if start_ns is None else start_ns
    create = loop.create_task
    discard = tasks.discard
    stop_waiter = asyncio.ensure_future(stop.wait())
    dispatched = 0
    for req, off in zip(reqs, offs, strict=True):
        target = start + off
        delay = target - now_ns()
        while delay > 0:
            if delay > 20_000_000:  # a long gap: wake early on Ctrl-C
                await asyncio.wait((stop_waiter,), timeout=delay / 1e9)
                if stop.is_set():
                    break
            elif delay <= SPIN_NS:  # the last moments: go round the loop (answers are still read meanwhile)
                await asyncio.sleep(0)
            else:  # whole timer ticks, waking at or before the target when they can
                await asyncio.sleep(max(1, delay // TIMER_TICK_NS) * TIMER_TICK_NS / 1e9)
            delay = target - now_ns()
        if stop.is_set():
            break
        c.sent += 1
        dispatched += 1
        t = create(one(req, target))
        tasks.add(t)
        t.add_done_callback(discard)
    stop_waiter.cancel()
    # requests the interrupt stopped before they were sent are in the records too, as cancelled
    for req, off in zip(reqs[dispatched:], offs[dispatched:], strict=True):
        append(_cancelled(req, start + off, sent=False))
    await _finish(tasks, stop)
    return start


async def _run_closed_loop(
    backend: Backend, reqs: list[GenRequest], sched: Schedule, tpl: list[GenRequest], c: Counters,
    stop: asyncio.Event, records: list, start_ns: int | None = None,
) -> int:
    if start_ns is not None and start_ns > now_ns():  # workers: wait for the common start
        await asyncio.sleep((start_ns - now_ns()) / 1e9)
    start = now_ns() if start_ns is None else start_ns
    deadline = start + int(sched.duration_s * 1e9) if sched.duration_s else None
    it = iter(range(sched.count))

    gen = backend.generate

    async def worker() -> None:
        for i in it:
            if stop.is_set():
                if deadline is None and i < len(reqs):  # a count-bound run: this one was scheduled
                    records.append(_cancelled(reqs[i], 0, sent=False))
                return
            if deadline is not None and now_ns() >= deadline:
                return
            req = reqs[i] if i < len(reqs) else dataclasses.replace(tpl[i % len(tpl)], id=i)
            c.sent += 1
            c.in_flight += 1
            sched_ns = now_ns()
            try:
                rec = await _generate(gen, req)
            except asyncio.CancelledError as e:
                records.append(_cancelled(req, sched_ns, sent=e))
                raise
            finally:
                c.in_flight -= 1
            rec.scheduled_ns = sched_ns
            records.append(rec)
            c.count(rec)

    tasks = {asyncio.ensure_future(worker()) for _ in range(sched.concurrency)}
    await _finish(tasks, stop)
    if stop.is_set() and deadline is None:  # a count-bound run: the requests no worker reached were cancelled
        records.extend(_cancelled(reqs[i], 0, sent=False) for i in it if i < len(reqs))
    return start


async def _finish(tasks: set[asyncio.Task], stop: asyncio.Event) -> None:
    """Wait for in-flight requests; on interrupt, cancel them."""
    if tasks:
        await wait_or_cancel(list(tasks), stop)


class _Progress:
    """Live display (requests done, in flight, errors, current rate) rendered by rich's own refresh thread."""

    def __init__(self, c: Counters, enabled: bool):
        self.c = c
        self.live = None
        self.last = (time.monotonic(), 0)
        self.rate = 0.0
        if enabled:
            from rich.console import Console
            from rich.live import Live

            err_console = Console(stderr=True, emoji=False)
            if err_console.is_terminal:
                self.live = Live(get_renderable=self._render, console=err_console, refresh_per_second=2, transient=True)

    def _render(self) -> Any:
        from rich.text import Text

        now = time.monotonic()
        t0, n0 = self.last
        n = self.c.done + self.c.failed
        if now - t0 >= 0.5:
            self.rate = (n - n0) / (now - t0)
            self.last = (now, n)
        planned = f"/{self.c.planned}" if self.c.planned else ""
        return Text(
            f"requests done {self.c.done}{planned}  in flight {self.c.in_flight}  errors {self.c.failed}  "
            f"rate {self.rate:.1f}/s"
        )

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


async def warm_up(backend: Backend, warm: list[GenRequest], concurrency: int, stop: asyncio.Event,
                  records: list[RequestRecord]) -> None:
    """The warm-up requests (``concurrency`` in flight, 8 when 0), recorded as warm-up."""
    sem = asyncio.Semaphore(max(1, concurrency or 8))

    async def w(req: GenRequest) -> None:
        async with sem:
            if stop.is_set():  # Ctrl-C during the warm-up: the measured requests are all cancelled
                return
            rec = await _generate(backend.generate, req)
        rec.warmup = True
        rec.scheduled_ns = rec.sent_ns
        records.append(rec)

    await asyncio.gather(*(w(r) for r in warm))


async def drive(
    backend: Backend,
    sched: Schedule,
    measured: list[GenRequest],
    warm: list[GenRequest],
    tpl: list[GenRequest],
    *,
    progress: bool = False,
    stop: asyncio.Event | None = None,
    records: list[RequestRecord] | None = None,
    start_ns: int | None = None,
    after_warmup: Callable[[], None] | None = None,
) -> tuple[list[RequestRecord], int, bool]:
    """Run warm-up then the measured requests; returns (records, start_ns, interrupted). ``records``: the list
    to append to (a worker reads it while the run goes on); ``start_ns``: the common start of several workers;
    ``after_warmup``: called between the warm-up and the measured requests (a server-metrics snapshot)."""
    stop = stop or asyncio.Event()
    records = [] if records is None else records
    if warm:
        await warm_up(backend, warm, sched.concurrency, stop, records)
        if after_warmup is not None:
            after_warmup()
    c = Counters(len(measured) if sched.open_loop or sched.duration_s is None else 0)
    # no cyclic-GC pauses while measuring: records are plain data; collect once before and after instead
    with gc_paused(freeze=True), _Progress(c, progress):
        if sched.open_loop:
            start = await _run_open_loop(backend, measured, sched.offsets_s, c, stop, records, start_ns)
        else:
            start = await _run_closed_loop(backend, measured, sched, tpl, c, stop, records, start_ns)
    return records, start, stop.is_set()


def _make_backend(cfg: BenchConfig, tokenizer: Any) -> Backend:
    from benchmint.llm.backends import backend_entry

    entry = backend_entry(cfg.backend)
    flags = {k: getattr(cfg, k) for k in entry.flags if hasattr(cfg, k)} | {"adapt": cfg.adapt_request,
                                                                           "tokenizer": tokenizer}
    return entry.create(**{**entry.options_from(flags), **cfg.backend_options})


async def run_async(cfg: BenchConfig, stop: asyncio.Event | None = None, driver: Any = None) -> BenchResult:
    """Everything up to the metrics, in the running event loop. ``driver``: a
    :class:`benchmint.llm.workers.FleetDriver` that sends the requests from worker processes or Ray actors."""
    from benchmint.llm.backends.http import normalize_base_url

    register_secret(cfg.api_key)  # recorded files never hold it (core/redact.py); the backend still sends it
    cfg.check()
    slo = parse_slo(cfg.slo)
    if cfg.anchor not in ("scheduled", "sent"):
        raise UserError("--anchor must be 'scheduled' or 'sent'")
    from benchmint.llm.backends import backend_entry

    entry = backend_entry(cfg.backend)  # an unknown kind or option is a user error before any server is contacted
    entry.check_options(cfg.backend_options)
    if cfg.api not in entry.apis:
        raise UserError(f"--api must be {' or '.join(repr(a) for a in entry.apis)}")
    sched = traffic.schedule_for(cfg)  # make_schedule, or a trace's, a ramp's, the sessions' arrivals
    http = entry.server
    served: list[str] = []
    if http:
        cfg.url = normalize_base_url(cfg.url)
        served, answer = await probe_server(cfg.url, cfg.api_key)
        if not cfg.model:
            if not served:
                hint = " (an OpenAI-compatible base URL usually ends in /v1)" if "HTTP 404" in answer else ""
                raise UserError(f"the server at {cfg.url} lists no models ({answer}{hint}); name one with --model "
                                "or fix --url")
            cfg.model = served[0]
        elif served and cfg.model not in served:
            # some servers (llama.cpp) answer under any name: say so rather than fail here
            _warn(f"--model {cfg.model!r} is not among the models {cfg.url} lists ({', '.join(served)})")
    tokenizer = None
    backend: Backend
    if entry.tokenizer == "backend":  # the in-process engine's own
        backend = _make_backend(cfg, None)
        await backend.start()
        tokenizer = backend.tokenizer  # type: ignore[attr-defined]
    else:
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model) if entry.tokenizer == "load" else None
        backend = _make_backend(cfg, tokenizer)
    if sched.concurrency and sched.duration_s is None and 0 < sched.count < sched.concurrency:
        _warn(f"--concurrency {sched.concurrency} with {sched.count} requests: at most {sched.count} are ever in "
              "flight; raise -n or lower --concurrency")
    cap = getattr(backend, "connection_cap", None)
    wanted = max(sched.concurrency or 0, cfg.concurrency_end or 0)
    procs = cfg.workers or 1  # each worker process holds its share, under the same limit (Ray actors: their own)
    if cap and cfg.ray is None and -(-wanted // procs) > cap:
        # the rest wait for a connection: the load on the wire is not what was asked
        per = f" ({-(-wanted // procs)} per worker process)" if procs > 1 else ""
        _warn(f"{wanted} requests in flight were asked for{per}, and a process can hold {cap} connections (its "
              "open-files limit, ulimit -n): the others wait in the client; raise the limit"
              + (" or use more --workers" if procs > 1 else " or use --workers"))
    try:
        return await _run_with(cfg, backend, tokenizer, sched, slo, entry, served, stop, driver)
    finally:
        await backend.close()


async def _run_with(
    cfg: BenchConfig, backend: Backend, tokenizer: Any, sched: Schedule, slo: dict, entry: Any, served: list[str],
    stop: asyncio.Event | None, driver: Any = None,
) -> BenchResult:
    http = entry.server  # what the registry entry says the backend can do (llm/backends/registry.py)
    api = cfg.api
    wl = traffic.workload_for(cfg, api, tokenizer) or load_workload(
        cfg.dataset, api=api, tokenizer=tokenizer, input_tokens=cfg.input_tokens, output_tokens=cfg.output_tokens,
        prompt_hook=traffic.prompt_hook(cfg, tokenizer),  # shared prefixes
        prompt_column=cfg.prompt_column, input_column=cfg.input_column, reference_column=cfg.reference_column,
        system_prompt=cfg.system_prompt, chat_template=cfg.chat_template, seed=cfg.seed, ignore_eos=cfg.ignore_eos,
        split=cfg.split, dataset_config=cfg.dataset_config,
        num_prompts=None if cfg.dataset != "synthetic" else max(64, min(cfg.num_requests or 256, 4096)),
    )
    measured, warm = make_requests(wl, sched, cfg.warmup)
    clock = ClockAnchor.take()
    await backend.start()
    scraper = _start_scraper(cfg) if entry.server_metrics and cfg.server_metrics else None
    before = await traffic.before_run(cfg, entry.server_metrics, scraping=scraper is not None)
    try:
        if traffic.drives(cfg, sched):  # sessions, concurrency ramp
            records, start, interrupted = await traffic.drive(cfg, backend, sched, wl, warm, stop or asyncio.Event(),
                                                              after_warmup=scraper.mark if scraper else None)
        elif driver is not None:  # worker processes or Ray actors, each with a shard of the schedule
            records, start, interrupted = await driver.drive(sched, measured, warm, wl.requests, stop or asyncio.Event(),
                                                             tokenizer, after_warmup=scraper.mark if scraper else None)
        else:
            records, start, interrupted = await drive(
                backend, sched, measured, warm, wl.requests, progress=cfg.progress, stop=stop,
                after_warmup=scraper.mark if scraper else None,
            )
    finally:
        if scraper is not None:
            scraper.stop()
    check = count_after_run(records, tokenizer) if entry.usage else None  # tokenizing waits for the run's end
    metrics = compute_metrics(records, start, anchor=cfg.anchor, slo=slo, interrupted=interrupted)
    if check is not None:
        metrics["token_counts"]["tokenizer_vs_usage"] = check
    series = None
    server_block = None
    if scraper is not None:
        from benchmint.llm.server_metrics import summarize

        server_block, series = summarize(scraper, start)
    metrics.update(await traffic.after_run(cfg, records, start, sched, wl, measured, before, entry.server_metrics, server_block))
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "llm-bench",
        **metrics,
        "config": {**dataclasses.asdict(cfg), "api_key": "***" if cfg.api_key else None},
        "schedule": sched.describe(),
        "workload": {**wl.describe(), **traffic.fingerprint(cfg, wl, sched)},
        "backend": {
            "kind": cfg.backend,
            "url": cfg.url if http else None,
            "model": cfg.model or "tiny",
            "served_models": served,
            "tokenizer_for_counting": bool(tokenizer) if http else "engine",
            "model_info": _model_info(cfg, backend, entry.in_process),
        },
        "measurement": {
            **clock.describe(),
            "start_wall_s": clock.to_wall_s(start),
            "latency_anchor": cfg.anchor,
            "warmup_requests": len(warm),
            "percentiles": PERCENTILE_RULE,
            "client": f"{_client_name(backend)}, one process" if http else "in-process engine",
            # requests that waited in the client for a connection (its open-files limit): client-bound
            **({"requests_waited_for_connection": backend.requests_waited}  # type: ignore[attr-defined]
               if http and hasattr(backend, "requests_waited") else {}),
        },
    }
    adapter = getattr(backend, "adapter", None)
    if adapter is not None:
        result["request_adaptation"] = adapter.describe()
    if server_block is not None:
        result["server_metrics"] = server_block
    if driver is not None:
        driver.annotate(result)  # `workers`, the merged request adaptation, how the clocks were aligned
    if http:  # after the workers block: the verdict judges each worker's share of the rate
        from benchmint.llm.client_bound import client_bound_verdict, load_calibration

        result["client_bound"] = client_bound_verdict(result, load_calibration())
    return BenchResult(result=result, records=records, start_ns=start, anchor=clock, server_metrics_series=series)


def _client_name(backend: Backend) -> str:
    describe = getattr(backend, "describe_client", None)
    return describe() if describe is not None else "benchmint asyncio + aiohttp"


def _start_scraper(cfg: BenchConfig) -> Any:
    from benchmint.llm.server_metrics import MetricsScraper, metrics_url

    if cfg.server_metrics_interval_s <= 0:
        raise UserError("--server-metrics-interval must be > 0 seconds")
    return MetricsScraper(metrics_url(cfg.url), cfg.server_metrics_interval_s, api_key=cfg.api_key).start()


def _warn(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, emoji=False).print(f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True)


def _model_info(cfg: BenchConfig, backend: Backend, in_process: bool) -> dict[str, Any]:
    """Architecture, parameter count and dtype of the model under test, where this process can see them:
    the in-process engine's model, or the config of a local model folder named by --model/--tokenizer."""
    from benchmint.results.metadata import workload_from_model

    try:
        if in_process:
            model = backend.engine.engine.model  # type: ignore[attr-defined]  (AsyncEngine -> BatchingEngine)
            info = workload_from_model(None, model=model)
        else:
            folder = next((Path(p) for p in (cfg.tokenizer, cfg.model) if p and (Path(p) / "config.json").is_file()),
                          None)
            if folder is None:
                return {}
            from transformers import AutoConfig

            info = workload_from_model(None, config=AutoConfig.from_pretrained(folder))
    except Exception:  # best effort: a record without model facts is still a valid record
        return {}
    return {k: info.get(k) for k in ("architecture", "parameter_count", "dtype") if info.get(k) is not None}


def run_bench(cfg: BenchConfig, *, write: bool = True, results_dir: str | Path | None = None,
              store: bool = True) -> BenchResult:
    """Run a benchmark to completion (Ctrl-C stops it and keeps the partial result), then write the outputs
    (``store``: also append the run to the results store)."""
    try:
        import uvloop

        runner_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - windows
        runner_factory = None

    driver = None
    if cfg.workers is not None or cfg.ray is not None:
        from benchmint.llm.worker_run import DriveKit
        from benchmint.llm.workers import FleetDriver

        driver = FleetDriver(cfg, DriveKit(drive, warm_up, _make_backend))  # checks the flags

    async def main() -> BenchResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = False
        if threading.current_thread() is threading.main_thread():
            try:
                def on_int() -> None:
                    stop.set()
                    loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C aborts at once

                loop.add_signal_handler(signal.SIGINT, on_int)
                installed = True
            except (NotImplementedError, RuntimeError):
                pass
        try:
            return await run_async(cfg, stop, driver)
        finally:
            if installed:
                loop.remove_signal_handler(signal.SIGINT)

    with asyncio.Runner(loop_factory=runner_factory) as runner:
        res = runner.run(main())
    if write:
        from benchmint.llm.output import write_outputs

        write_outputs(res, cfg, results_dir=results_dir, store=store)
    return res
