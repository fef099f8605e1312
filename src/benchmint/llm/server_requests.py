"""Typed requests of the built-in server's OpenAI routes, checked before anything reaches the engine.

``decode_request`` turns a request body into a :class:`CompletionRequest` or :class:`ChatRequest` (msgspec
Structs: a wrong type or an out-of-range value is a :class:`RequestError` naming the field, answered 400 with
an OpenAI-style error body). ``Limits.check`` then applies what depends on the model: token ids inside the
vocabulary, the prompt inside the context (a cheap check on characters first, so a megabyte of text is refused
without tokenizing it), and ``max_tokens`` within the context left after the prompt. As in vLLM and the OpenAI
API, a request whose prompt plus ``max_tokens`` exceeds the context is refused, never silently shortened;
without ``max_tokens`` the default (16) is capped at the context left.

Chat messages are a list of role/content structs so that multi-turn history (roles system, user, assistant)
goes to the chat template as is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

DEFAULT_MAX_TOKENS = 16
INT64 = 2**63
TokenId = Annotated[int, msgspec.Meta(ge=0)]


class RequestError(ValueError):
    """A request the server refuses: answered with ``status`` and an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, code: str | int = "invalid_value", status: int = 400,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class TextPart(msgspec.Struct, tag_field="type", tag="text"):
    text: str


class ChatMessage(msgspec.Struct):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class _Common(msgspec.Struct, kw_only=True):
    """Fields both routes share; fields not listed here (top_p, user, ...) are accepted and ignored."""

    model: str | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    seed: Annotated[int, msgspec.Meta(ge=-INT64, le=INT64 - 1)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] = 1

    @property
    def asked_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Common, kw_only=True):
    # a text, one text in a list, token ids, or one list of token ids (the API's batch forms with one prompt)
    prompt: str | list[str | TokenId | list[TokenId]]

    def engine_prompt(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, str):
            return p
        if p and all(isinstance(t, int) for t in p):
            return p  # type: ignore[return-value]
        if len(p) == 1 and isinstance(p[0], str | list):
            return p[0]  # type: ignore[return-value]
        if not p:
            raise RequestError("`prompt` is empty: give a text or a list of token ids", "prompt")
        raise RequestError("`prompt` must be one text or one list of token ids; this server takes one prompt per "
                           "request", "prompt")


class ChatRequest(_Common, kw_only=True):
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]

    def engine_prompt(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


# what each field must be, for the error sentence
_RULES = {
    "prompt": "a text or a list of token ids (integers >= 0)",
    "messages": "a non-empty list of {role, content} objects (role: system, developer, user, assistant or tool; "
                "content: a text or a list of {type: text, text} parts)",
    "max_tokens": "an integer >= 1",
    "max_completion_tokens": "an integer >= 1",
    "temperature": "a number from 0 to 2",
    "seed": "an integer from -2**63 to 2**63-1",
    "stream": "true or false",
    "stream_options": "an object such as {\"include_usage\": true}",
    "ignore_eos": "true or false",
    "n": "1 (this server makes one choice per request)",
    "model": "a text",
}
_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode_request(body: bytes, chat: bool) -> CompletionRequest | ChatRequest:
    """The typed request in ``body``; a :class:`RequestError` naming the field when it does not fit."""
    typ = ChatRequest if chat else CompletionRequest
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as e:
        text = str(e)
        m = _PATH.search(text)
        param = m.group(1) if m else None
        detail = _PATH.sub("", text)
        if not param:
            if "missing required field" in detail:
                name = detail.split("`")[1]
                raise RequestError(f"missing field `{name}`: it must be {_RULES[name]}", name) from None
            raise RequestError(f"the body must be a JSON object ({detail})") from None
        top = re.split(r"[.\[]", param, maxsplit=1)[0]
        rule = _RULES.get(top)
        raise RequestError(f"invalid `{param}`: {detail}" + (f"; `{top}` must be {rule}" if rule else ""), param) from None
    except msgspec.DecodeError as e:
        raise RequestError(f"the body is not valid JSON ({e})") from None


@dataclass
class Limits:
    """What the served model allows: context length (tokens), vocabulary size, an upper bound of characters per
    token (for the cheap pre-check; 0 turns it off)."""

    max_model_len: int
    vocab_size: int
    max_chars_per_token: int = 0

    def precheck(self, req: CompletionRequest | ChatRequest) -> str | list[int] | list[dict[str, str]]:
        """The engine's prompt, after every check that needs no tokenizer."""
        prompt = req.engine_prompt()
        param = "messages" if isinstance(req, ChatRequest) else "prompt"
        if not prompt:
            raise RequestError("`prompt` is empty: give a text or a list of token ids", "prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
            if max(prompt) >= self.vocab_size:  # type: ignore[type-var]
                raise RequestError(f"`prompt` holds token id {max(prompt)}, beyond this model's vocabulary "  # type: ignore[type-var]
                                   f"(ids 0 to {self.vocab_size - 1})", "prompt")
            return prompt  # type: ignore[return-value]
        if self.max_chars_per_token > 0:
            chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)  # type: ignore[arg-type]
            if chars > 2 * self.max_model_len * self.max_chars_per_token:  # 2: room for dropped whitespace
                raise RequestError(
                    f"This model's maximum context length is {self.max_model_len} tokens; the {param} "
                    f"{'hold' if param == 'messages' else 'holds'} {chars:,} characters, more than {self.max_model_len} tokens can hold. Shorten the {param}.",
                    param, "context_length_exceeded")
        return prompt

    def max_tokens(self, req: CompletionRequest | ChatRequest, prompt_tokens: int) -> int:
        """``max_tokens`` of ``req`` once the prompt is known to have ``prompt_tokens`` tokens."""
        param = "messages" if isinstance(req, ChatRequest) else "prompt"
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise RequestError(
                f"This model's maximum context length is {self.max_model_len} tokens; the {param} "
                f"{'have' if param == 'messages' else 'has'} {prompt_tokens} tokens, which leaves no room for "
                f"output. Shorten the {param}.", param, "context_length_exceeded")
        asked = req.asked_tokens
        if asked is None:
            return min(DEFAULT_MAX_TOKENS, room)
        if asked > room:
            name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
            raise RequestError(
                f"This model's maximum context length is {self.max_model_len} tokens; you asked for "
                f"{prompt_tokens + asked} ({prompt_tokens} in the {param}, {asked} in the completion). Ask for "
                f"at most {room} `{name}` or shorten the {param}.", name, "context_length_exceeded")
        return asked


def model_limits(model: Any, tokenizer: Any, max_model_len: int | None = None) -> Limits:
    """The :class:`Limits` of a loaded transformers model and tokenizer (``max_model_len`` overrides the
    context length read from the model's config)."""
    cfg = getattr(model, "config", None)
    ctx = max_model_len
    if ctx is None:
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            v = getattr(cfg, name, None)
            if isinstance(v, int) and v > 0:
                ctx = v
                break
    if ctx is None:
        v = getattr(tokenizer, "model_max_length", None)
        ctx = v if isinstance(v, int) and 0 < v < 10**8 else 2048
    try:
        vocab = int(model.get_input_embeddings().num_embeddings)
    except Exception:
        vocab = int(getattr(cfg, "vocab_size", 0) or len(tokenizer))
    try:  # a token's text is never longer than its vocabulary entry (byte-level or sentencepiece pieces)
        chars = max(len(t) for t in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))) if t)
    except Exception:
        chars = 0
    return Limits(int(ctx), vocab, chars)
