"""In-process generation engine: one worker thread that batches concurrent requests (dynamic batching).

The worker waits for queued requests, takes up to ``max_batch_size`` of them (waiting ``batch_wait_s`` for
more to arrive once the first is there), runs one left-padded batched prefill and then batched decode steps
with the KV cache, and streams each new token of each request to that request's callback. Requests that
arrive while a batch runs wait for the next batch (their wait shows up in TTFT, as it should).

:class:`AsyncEngine` wraps the engine for asyncio users (the built-in server and the in-process backend):
``async for ev in engine.stream(...)`` yields :class:`TokenEvent` s on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmint.core.errors import UserError


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


@dataclass
class EngineStats:
    requests_total: int = 0
    requests_finished: dict[str, int] = field(default_factory=dict)
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    batches_total: int = 0
    running: int = 0
    waiting: int = 0


def load_model_and_tokenizer(model: str, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer from a local folder or a hub name (``tiny`` builds the tiny model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmint.models.tiny_llm import resolve_model_path

    path = resolve_model_path(model)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as e:
        raise UserError(
            f"cannot load model {model!r}: {str(e).splitlines()[0]}; give a local model folder, 'tiny', "
            "or a hub name with network access"
        ) from None
    m.to(device)
    m.eval()
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return m, tok


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
    ):
        self.model_name = model
        self.device = device
        self.max_batch_size = max(1, int(max_batch_size))
        self.batch_wait_s = batch_wait_s
        self.model, self.tokenizer = loaded or load_model_and_tokenizer(model, device, dtype)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.stats = EngineStats()
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

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
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

    # ---- submission (any thread)
    def submit(self, req: _Request) -> None:
        with self._cv:
            self._queue.append(req)
            self.stats.requests_total += 1
            self.stats.waiting = len(self._queue)
            self._cv.notify()

    # ---- worker
    def _take_batch(self) -> list[_Request]:
        with self._cv:
            while not self._queue and not self._stop:
                self._cv.wait()
            if self._stop:
                return []
        if self.batch_wait_s > 0 and len(self._queue) < self.max_batch_size:
            time.sleep(self.batch_wait_s)  # let concurrent arrivals join this batch
        with self._cv:
            batch = []
            while self._queue and len(batch) < self.max_batch_size:
                r = self._queue.popleft()
                if r.cancelled:
                    r.emit(TokenEvent("", 0, True, "cancelled"))
                    continue
                batch.append(r)
            self.stats.waiting = len(self._queue)
        return batch

    def _run(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        while True:
            batch = self._take_batch()
            if self._stop:
                for r in list(self._queue):
                    r.emit(TokenEvent("", 0, True, "cancelled"))
                return
            if not batch:
                continue
            self.stats.running = len(batch)
            self.stats.batches_total += 1
            try:
                self._run_batch(batch)
            except Exception as e:  # report the failure to every request of the batch, keep serving
                for r in batch:
                    if not r.done:
                        r.done = True
                        self._finish(r, "error", error=f"{type(e).__name__}: {e}")
            finally:
                self.stats.running = 0

    def _finish(self, r: _Request, reason: str, error: str | None = None) -> None:
        self.stats.requests_finished[reason] = self.stats.requests_finished.get(reason, 0) + 1
        text = ""
        if r.pending_tokens and reason != "error":
            text = self._decode(r)[len(r.sent_text) :]
        r.emit(TokenEvent(text, r.pending_tokens, True, reason, len(r.prompt_ids), error))
        r.pending_tokens = 0

    def _decode(self, r: _Request) -> str:
        return self.tokenizer.decode(r.out_ids, skip_special_tokens=True)

    def _run_batch(self, batch: list[_Request]) -> None:
        import torch

        dev = self.device
        pad = self.tokenizer.pad_token_id or 0
        n = len(batch)
        width = max(len(r.prompt_ids) for r in batch)
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(batch):
            k = len(r.prompt_ids)
            ids[i, width - k :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - k :] = 1
            self.stats.prompt_tokens_total += k
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [
            torch.Generator(device=dev).manual_seed(r.seed if r.seed is not None else 0)
            if r.temperature > 0
            else None
            for r in batch
        ]
        try:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        except TypeError:  # a model class without logits_to_keep
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
        cache = out.past_key_values
        logits = out.logits[:, -1, :]
        steps = max(r.max_tokens for r in batch)
        for _ in range(steps):
            nxt = logits.argmax(-1)
            for i, r in enumerate(batch):
                if r.temperature > 0:
                    probs = torch.softmax(logits[i].float() / r.temperature, -1)
                    nxt[i] = torch.multinomial(probs, 1, generator=gens[i])[0]
            toks = nxt.tolist()
            for i, r in enumerate(batch):
                if r.done:
                    continue
                if r.cancelled:
                    r.done = True
                    self._finish(r, "cancelled")
                    continue
                t = toks[i]
                if not r.ignore_eos and t in self.eos_ids:
                    r.done = True
                    self._finish(r, "stop")
                    continue
                r.out_ids.append(t)
                r.pending_tokens += 1
                self.stats.generation_tokens_total += 1
                if len(r.out_ids) >= r.max_tokens:
                    r.done = True
                    self._finish(r, "length")
                    continue
                text = self._decode(r)
                if text.endswith("\ufffd"):
                    continue  # an incomplete UTF-8 sequence: hold the bytes until the character is whole
                delta = text[len(r.sent_text) :]
                r.sent_text = text
                r.emit(TokenEvent(delta, r.pending_tokens, prompt_tokens=len(r.prompt_ids)))
                r.pending_tokens = 0
            if all(r.done for r in batch):
                break
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=dev)], dim=1)
            pos = pos[:, -1:] + 1
            out = self.model(
                input_ids=nxt[:, None], attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True
            )
            cache = out.past_key_values
            logits = out.logits[:, -1, :]


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
        req = _Request(
            prompt_ids=ids,
            max_tokens=max(1, int(max_tokens)),
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
