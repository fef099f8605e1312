"""In-process generation engine: one worker thread that batches concurrent requests (continuous batching).

The worker keeps a running batch with its KV cache. Before every decode step it takes queued requests (up to
``max_batch_size`` in the batch; when idle it waits for the first one and ``batch_wait_s`` more for others),
runs one left-padded batched prefill over their prompts and joins them to the running batch (the shorter
cache is left-padded and masked out). Each step picks every request's next token, streams it to that
request's callback, drops finished requests from the batch (and cache columns no one attends to any more)
and runs one batched decode step. Prefill of joining requests delays the running ones by that prefill (no
chunked prefill). Caches other than transformers' ``DynamicCache`` fall back to whole batches: new requests
wait until the running batch is done.

:class:`AsyncEngine` wraps the engine for asyncio users (the built-in server and the in-process backend):
``async for ev in engine.stream(...)`` yields :class:`TokenEvent` s on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmint.core.errors import UserError
from benchmint.llm.server_requests import Limits, model_limits


@dataclass
class TokenEvent:
    text: str  # new text since the previous event (may hold several tokens when bytes were held back)
    tokens: int  # new tokens since the previous event
    finished: bool = False
    finish_reason: str | None = None  # length | stop | cancelled | error
    prompt_tokens: int = 0
    error: str | None = None


@dataclass
class _Request:
    prompt_ids: list[int]
    max_tokens: int
    emit: Callable[[TokenEvent], None]
    ignore_eos: bool = True
    temperature: float = 0.0
    seed: int | None = None
    cancelled: bool = False
    out_ids: list[int] = field(default_factory=list)
    sent_text: str = ""
    pending_tokens: int = 0
    done: bool = False
    generator: Any = None


@dataclass
class EngineStats:
    requests_total: int = 0
    requests_finished: dict[str, int] = field(default_factory=dict)
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    batches_total: int = 0
    running: int = 0
    waiting: int = 0
    peak_running: int = 0  # largest batch so far


def _looks_local(model: str) -> bool:
    """A path rather than a hub name (``org/name``): absolute, ``./``, ``../``, ``~``, or with more than one
    slash (a hub name has at most one)."""
    return (os.path.isabs(model) or model.startswith(("./", "../", "~", ".\\", "..\\")) or model in (".", "..")
            or model.count("/") > 1 or "\\" in model)


def check_local_model(model: str, path: str) -> None:
    """Refuse, before anything loads, a local path that does not exist or a folder that holds no model."""
    p = os.path.expanduser(path)
    if os.path.isdir(p):
        if not os.path.isfile(os.path.join(p, "config.json")):
            raise UserError(f"model folder {model!r} has no config.json: give a folder saved by "
                            "save_pretrained (config, weights, tokenizer), 'tiny', or a hub name")
        return
    if os.path.exists(p):
        raise UserError(f"model {model!r} is a file: give the model's folder (config, weights, tokenizer), "
                        "'tiny', or a hub name")
    if _looks_local(model):
        raise UserError(f"model folder {model!r} does not exist: give an existing local model folder, 'tiny', "
                        "or a hub name (org/name)")


def load_model_and_tokenizer(model: str, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a hub name (``tiny`` builds the tiny model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmint.models.hf_progress import no_progress_bars
    from benchmint.models.tiny_llm import resolve_model_path

    path = resolve_model_path(model)
    check_local_model(model, path)
    path = os.path.expanduser(path)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        with no_progress_bars(os.path.isdir(path)):  # a local folder: no download to watch, only "Loading weights"
            m = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as e:  # transformers says "can't load" with either (a folder without a tokenizer)
        raise UserError(
            f"cannot load model {model!r}: {str(e).strip().splitlines()[0]}; give a local model folder, 'tiny', "
            "or a hub name with network access"
        ) from None
    m.to(device)
    m.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return m, tok


def _cache_kwarg(model: Any) -> str:
    """The name the model's forward takes its KV cache by: ``cache`` in newer transformers (which deprecate
    ``past_key_values`` with a warning on every call), ``past_key_values`` before."""
    try:
        return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


def _cache_of(out: Any) -> Any:
    """The KV cache a forward returned (``cache`` in newer transformers, ``past_key_values`` before)."""
    cache = getattr(out, "cache", None) if "cache" in out else None
    return cache if cache is not None else out.past_key_values


class BatchingEngine:
    """Runs a transformers causal LM on a worker thread, batching the requests queued at each step."""

    def __init__(
        self,
        model: str = "tiny",
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_batch_size: int = 16,
        batch_wait_s: float = 0.002,
        loaded: tuple[Any, Any] | None = None,
        max_model_len: int | None = None,
    ):
        self.model_name = model
        self.device = device
        self.max_batch_size = max(1, int(max_batch_size))
        self.batch_wait_s = batch_wait_s
        self.model, self.tokenizer = loaded or load_model_and_tokenizer(model, device, dtype)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self._cache_kw = _cache_kwarg(self.model)
        self.limits: Limits = model_limits(self.model, self.tokenizer, max_model_len)
        self.stats = EngineStats()
        self.step_started: float | None = None  # monotonic time the running prefill/decode step began
        self._queue: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    # ---- lifecycle
    def warm_up(self) -> None:
        """Run a small batch once so that first-call costs (kernel selection, allocations) stay out of results."""
        sink: list[TokenEvent] = []
        reqs = [_Request(prompt_ids=self.encode_prompt("warm up " * k), max_tokens=4, emit=sink.append) for k in (1, 3)]
        self._run_batch(reqs)
        self.stats = EngineStats()

    def start(self, warm_up: bool = True) -> None:
        if warm_up and self._thread is None:
            self.warm_up()
        if self._thread is None:
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="benchmint-engine", daemon=True)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the worker to end every request (cancelled) and stop after its current step; returns at once."""
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stop

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    # ---- tokenization helpers
    def encode_prompt(self, prompt: str | list[dict[str, str]], chat_template: bool | None = None) -> list[int]:
        """Token ids of a completion prompt (a string) or chat messages (through the chat template)."""
        tok = self.tokenizer
        if isinstance(prompt, list):
            if getattr(tok, "chat_template", None):
                ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                return list(ids)
            prompt = "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt) + "\nassistant:"
        return list(tok(prompt, add_special_tokens=True)["input_ids"])

    def check(self, ids: list[int], max_tokens: int) -> str | None:
        """Why a request cannot run on this model (a sentence), or None: checked before it joins a batch, so
        that it cannot fail the requests it would share the batch with."""
        lim = self.limits
        if not ids:
            return "the prompt is empty"
        if min(ids) < 0 or max(ids) >= lim.vocab_size:
            return f"the prompt holds token ids outside this model's vocabulary (0 to {lim.vocab_size - 1})"
        if len(ids) + max_tokens > lim.max_model_len:
            return (f"this model's maximum context length is {lim.max_model_len} tokens; the request asks for "
                    f"{len(ids) + max_tokens} ({len(ids)} in the prompt, {max_tokens} in the completion)")
        return None

    # ---- submission (any thread)
    def submit(self, req: _Request) -> None:
        with self._cv:
            self._queue.append(req)
            self.stats.requests_total += 1
            self.stats.waiting = len(self._queue)
            self._cv.notify()

    # ---- worker
    def _take(self, block: bool, room: int) -> list[_Request]:
        """Queued requests, at most ``room``; waits for the first one only when ``block``."""
        with self._cv:
            if block:
                while not self._queue and not self._stop:
                    self._cv.wait()
            if self._stop or room <= 0 or not self._queue:
                return []
        if block and self.batch_wait_s > 0 and len(self._queue) < room:
            time.sleep(self.batch_wait_s)  # let concurrent arrivals join this batch
        with self._cv:
            batch = []
            while self._queue and len(batch) < room:
                r = self._queue.popleft()
                if r.cancelled:
                    r.done = True
                    self._finish(r, "cancelled")
                    continue
                batch.append(r)
            self.stats.waiting = len(self._queue)
        return batch

    def _run(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        st: _State | None = None
        while True:
            room = self.max_batch_size - (len(st.reqs) if st else 0)
            if st is not None and not _mergeable(st.cache):
                room = 0  # a cache we cannot merge: new requests wait for the running batch to finish
            new = self._take(block=st is None, room=room)
            if self._stop:
                with self._cv:
                    rest = list(self._queue)
                    self._queue.clear()
                for r in rest + (st.reqs if st else []) + new:
                    if not r.done:
                        r.done = True
                        self._finish(r, "cancelled", error="the server is shutting down")
                return
            self.step_started = time.monotonic()
            try:
                if new:
                    self.stats.batches_total += 1
                    ns = self._prefill_isolated(new)
                    st = ns if st is None else (st if ns is None else _merge(st, ns))
                if st is not None:
                    self.stats.running = len(st.reqs)
                    self.stats.peak_running = max(self.stats.peak_running, len(st.reqs))
                    st = self._step(st)
            except Exception as e:  # the batched decode step itself failed (device, memory): no one request
                for r in (st.reqs if st else []) + new:  # is to blame, so every running one reports it
                    if not r.done:
                        r.done = True
                        self._finish(r, "error", error=f"{type(e).__name__}: {e}")
                st = None
            self.step_started = None
            self.stats.running = len(st.reqs) if st else 0

    def _prefill_isolated(self, reqs: list[_Request]) -> _State | None:
        """Prefill ``reqs`` together; when that fails, each alone, so that a request that cannot run fails by
        itself and the others go on (the running batch is untouched: prefill builds a new cache)."""
        try:
            return self._prefill(reqs)
        except Exception as e:
            if len(reqs) == 1:
                r = reqs[0]
                r.done = True
                self._finish(r, "error", error=f"{type(e).__name__}: {e}")
                return None
        st: _State | None = None
        for r in reqs:
            ns = self._prefill_isolated([r])
            if ns is not None:
                st = ns if st is None else _merge(st, ns)
        return st

    def _finish(self, r: _Request, reason: str, error: str | None = None) -> None:
        self.stats.requests_finished[reason] = self.stats.requests_finished.get(reason, 0) + 1
        text = ""
        if r.pending_tokens and reason != "error":
            text = self._decode(r)[len(r.sent_text) :]
        self._emit(r, TokenEvent(text, r.pending_tokens, True, reason, len(r.prompt_ids), error))
        r.pending_tokens = 0

    @staticmethod
    def _emit(r: _Request, ev: TokenEvent) -> None:
        try:
            r.emit(ev)
        except Exception:  # the consumer is gone (its event loop closed): stop generating for it
            r.cancelled = True

    def _advance(self, r: _Request, t: int) -> None:
        """Give ``r`` its next token ``t``: finish it (eos, length) or stream the new text."""
        if not r.ignore_eos and t in self.eos_ids:
            r.done = True
            self._finish(r, "stop")
            return
        r.out_ids.append(t)
        r.pending_tokens += 1
        self.stats.generation_tokens_total += 1
        if len(r.out_ids) >= r.max_tokens:
            r.done = True
            self._finish(r, "length")
            return
        text = self._decode(r)
        if text.endswith("\ufffd"):
            return  # an incomplete UTF-8 sequence: hold the bytes until the character is whole
        delta = text[len(r.sent_text) :]
        r.sent_text = text
        self._emit(r, TokenEvent(delta, r.pending_tokens, prompt_tokens=len(r.prompt_ids)))
        r.pending_tokens = 0

    def _decode(self, r: _Request) -> str:
        return self.tokenizer.decode(r.out_ids, skip_special_tokens=True)

    def _run_batch(self, batch: list[_Request]) -> None:
        """Run ``batch`` to completion on the calling thread (warm-up)."""
        st: _State | None = self._prefill(batch)
        while st is not None:
            st = self._step(st)

    def _prefill(self, reqs: list[_Request]) -> _State:
        """One left-padded batched forward pass over the prompts of ``reqs``."""
        import torch

        dev = self.device
        pad = self.tokenizer.pad_token_id or 0
        n = len(reqs)
        width = max(len(r.prompt_ids) for r in reqs)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(reqs):
            k = len(r.prompt_ids)
            ids[i, width - k :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - k :] = 1
            if r.temperature > 0:
                r.generator = torch.Generator(device=dev).manual_seed((r.seed or 0) % 2**64)
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        except TypeError:  # a model class without logits_to_keep
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        # counted once the forward pass ran: a batch that fails is prefilled again request by request
        self.stats.prompt_tokens_total += sum(len(r.prompt_ids) for r in reqs)
        return _State(_cache_of(out), mask, pos[:, -1:], out.logits[:, -1, :], list(reqs))

    def _step(self, st: _State) -> _State | None:
        """Pick each running request's next token, stream it, drop finished requests, run one decode step."""
        import torch

        logits = st.logits
        nxt = logits.argmax(-1)
        for i, r in enumerate(st.reqs):
            if r.temperature > 0 and not r.done:
                try:
                    nxt[i] = _sample(logits[i], r.temperature, r.generator)
                except Exception as e:  # this request's sampling failed: it fails alone
                    r.done = True
                    self._finish(r, "error", error=f"{type(e).__name__}: {e}")
        toks = nxt.tolist()
        for i, r in enumerate(st.reqs):
            if r.done:
                continue
            if r.cancelled:
                r.done = True
                self._finish(r, "cancelled")
                continue
            try:
                self._advance(r, toks[i])
            except Exception as e:  # decoding this request's text failed: it fails alone
                r.done = True
                self._finish(r, "error", error=f"{type(e).__name__}: {e}")
        keep = [i for i, r in enumerate(st.reqs) if not r.done]
        if not keep:
            return None
        cache, mask, pos, reqs = st.cache, st.mask, st.pos, st.reqs
        if len(keep) < len(reqs) and _mergeable(cache):  # (other cache types keep computing finished rows)
            idx = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(idx)
            mask, pos, nxt, reqs = mask[idx], pos[idx], nxt[idx], [reqs[i] for i in keep]
            _trim_left(cache, mask)
            mask = mask[:, mask.shape[1] - _cache_len(cache, mask) :]
        mask = torch.cat([mask, torch.ones((len(reqs), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        pos = pos + 1
        out = self.model(
            input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, use_cache=True, **{self._cache_kw: cache}
        )
        return _State(_cache_of(out), mask, pos, out.logits[:, -1, :], reqs)


@dataclass
class _State:
    """The running batch: KV cache, attention mask (cache length), last positions, next-token logits."""

    cache: Any
    mask: Any
    pos: Any
    logits: Any
    reqs: list[_Request]


def _sample(logits: Any, temperature: float, generator: Any) -> int:
    """A token drawn from softmax(logits / temperature), in float64 and shifted by the maximum so that a
    tiny temperature (1e-300) gives the argmax, not inf/NaN."""
    import torch

    z = logits.double()
    z = (z - z.max()) / temperature
    probs = torch.softmax(z, -1)
    if not bool(torch.isfinite(probs).all()):
        return int(logits.argmax())
    return int(torch.multinomial(probs, 1, generator=generator)[0])


def _mergeable(cache: Any) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and type(cache).__name__ == "DynamicCache" and all(
        type(la).__name__ == "DynamicLayer" and getattr(la, "keys", None) is not None for la in layers
    )


def _pad_left(t: Any, n: int, dim: int) -> Any:
    import torch

    if n <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def _merge(a: _State, b: _State) -> _State:
    """Join newly prefilled requests to the running batch: left-pad the shorter caches (masked out), concat."""
    import torch

    la, lb = a.mask.shape[1], b.mask.shape[1]
    n = max(la, lb)
    for x, y in zip(a.cache.layers, b.cache.layers, strict=True):
        x.keys = torch.cat([_pad_left(x.keys, n - la, 2), _pad_left(y.keys, n - lb, 2)], dim=0)
        x.values = torch.cat([_pad_left(x.values, n - la, 2), _pad_left(y.values, n - lb, 2)], dim=0)
    mask = torch.cat([_pad_left(a.mask, n - la, 1), _pad_left(b.mask, n - lb, 1)], dim=0)
    return _State(a.cache, mask, torch.cat([a.pos, b.pos]), torch.cat([a.logits, b.logits]), a.reqs + b.reqs)


def _trim_left(cache: Any, mask: Any) -> None:
    """Drop leading cache columns that no remaining request attends to (keeps the cache from growing)."""
    if not _mergeable(cache):
        return
    used = mask.any(0).nonzero()
    first = int(used[0]) if len(used) else 0
    if first > 0:
        for la in cache.layers:
            la.keys = la.keys[:, :, first:]
            la.values = la.values[:, :, first:]


def _cache_len(cache: Any, mask: Any) -> int:
    try:
        return int(cache.get_seq_length())
    except Exception:
        return mask.shape[1]


def _eos_ids(model: Any, tok: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, list | tuple):
            ids.update(int(x) for x in e)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    return ids


class AsyncEngine:
    """asyncio face of a :class:`BatchingEngine`: events cross from the worker thread with call_soon_threadsafe."""

    def __init__(self, engine: BatchingEngine):
        self.engine = engine

    @classmethod
    def create(cls, model: str = "tiny", **opts: Any) -> AsyncEngine:
        eng = BatchingEngine(model, **opts)
        eng.start()
        return cls(eng)

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def close(self) -> None:
        self.engine.stop()

    async def stream(
        self,
        prompt: str | list[dict[str, str]] | list[int],
        max_tokens: int,
        *,
        ignore_eos: bool = True,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> AsyncIterator[TokenEvent]:
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[TokenEvent] = asyncio.Queue()
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            ids = list(prompt)  # type: ignore[arg-type]
        else:
            ids = self.engine.encode_prompt(prompt)  # type: ignore[arg-type]
        max_tokens = max(1, int(max_tokens))
        why = self.engine.check(ids, max_tokens)
        if why is not None:  # refused before it joins a batch: it fails alone
            self.engine.stats.requests_finished["error"] = self.engine.stats.requests_finished.get("error", 0) + 1
            yield TokenEvent("", 0, True, "error", len(ids), why)
            return
        req = _Request(
            prompt_ids=ids,
            max_tokens=max_tokens,
            emit=lambda ev: loop.call_soon_threadsafe(q.put_nowait, ev),
            ignore_eos=ignore_eos,
            temperature=temperature,
            seed=seed,
        )
        self.engine.submit(req)
        try:
            while True:
                ev = await q.get()
                yield ev
                if ev.finished:
                    return
        finally:
            if not req.done:
                req.cancelled = True
