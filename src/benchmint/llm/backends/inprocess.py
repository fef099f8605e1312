"""In-process backend: HF transformers on benchmint's batching engine, no server (``kind="transformers"``)."""

from __future__ import annotations

from typing import Any

from benchmint.core.clock import now_ns
from benchmint.llm.engine import AsyncEngine, BatchingEngine
from benchmint.llm.types import FirstTokenHook, GenRequest, RequestRecord


class TransformersBackend:
    """``engine_opts`` (device, dtype, max_batch_size, ...) go to :class:`BatchingEngine`, whose defaults apply."""

    kind = "transformers"
    passes_options_to = BatchingEngine  # the registry's known options include the engine's
    internal_options = ("loaded",)

    def __init__(self, model: str = "tiny", temperature: float = 0.0, engine: AsyncEngine | None = None,
                 **engine_opts: Any):
        self.model = model
        self.opts = engine_opts
        self.temperature = temperature
        self.engine = engine
        self._own_engine = engine is None

    @property
    def tokenizer(self) -> Any:
        return self._ensure().tokenizer

    def _ensure(self) -> AsyncEngine:
        if self.engine is None:
            self.engine = AsyncEngine.create(self.model, **self.opts)
        return self.engine

    async def start(self) -> None:
        self._ensure()

    async def close(self) -> None:
        if self.engine is not None and self._own_engine:
            self.engine.close()
            self.engine = None

    async def generate(self, req: GenRequest, on_first_token: FirstTokenHook | None = None) -> RequestRecord:
        eng = self._ensure()
        rec = RequestRecord(id=req.id, input_tokens=req.input_tokens)
        texts: list[str] = []
        n_out = 0
        rec.sent_ns = now_ns()
        try:
            async for ev in eng.stream(
                req.prompt, req.max_tokens, ignore_eos=req.ignore_eos, temperature=self.temperature
            ):
                t = now_ns()
                if ev.error:
                    rec.error_kind, rec.error = "other", f"engine: {ev.error}"
                    break
                n_out += ev.tokens
                if ev.prompt_tokens:
                    rec.input_tokens = ev.prompt_tokens
                if ev.text:
                    if not rec.chunk_ns:
                        rec.first_token_ns = t
                        if on_first_token is not None:
                            on_first_token(rec)
                    rec.chunk_ns.append(t)
                    texts.append(ev.text)
        finally:
            rec.end_ns = now_ns()
        rec.text = "".join(texts)
        rec.chunk_count = len(rec.chunk_ns)
        rec.output_tokens, rec.output_tokens_source = n_out, "engine"
        return rec
