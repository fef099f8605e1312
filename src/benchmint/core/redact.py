"""Secrets never persist: the one place that takes credentials out of what benchmint records.

Results are meant to be shared (run folders, the results store, reports, a public dataset), so everything
written passes through :func:`redact` (JSON files via :mod:`benchmint.core.jsonio`, the store's parts, the
report, LoadGen's settings file). It replaces with ``***``:

- the value of any mapping key that names a credential (``api_key``, ``Authorization``, ``hf_token``,
  ``password``, ``secret``, ``aws_secret_access_key`` ...; not ``max_tokens`` or ``model_key``);
- in command lines (lists of strings): the value after ``--api-key`` / ``--token`` / ``--password`` ... (or
  after ``=``);
- in any text: the user:password of a URL (``http://***@host``), ``Bearer ...`` / ``Basic ...``
  credentials, ``Authorization:`` / ``api_key=`` / ``?token=`` values, and every value it knows is secret:
  the ones given to :func:`register_secret` (``--api-key``) and the values of environment variables whose
  name has a part (between ``_``) KEY or CREDENTIALS, or one ending in TOKEN, SECRET, PASSWORD, PASSWD or
  APIKEY (``OPENAI_API_KEY``, ``HF_TOKEN``, ``PGPASSWORD``; not ``TOKENIZERS_PARALLELISM``), when the value has
  8 characters or more.

Only what is recorded changes: the backend still sends the real key to the server.
"""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***"

_SECRET_KEY = re.compile(
    r"^token$|(?:^|[_\-.])(?:api[_\-]?key|apikey|access[_\-]?key|secret(?:[_\-]?(?:access[_\-]?)?key)?|"
    r"private[_\-]?key|password|passwd|passphrase|auth|authorization|credentials?|bearer|cookie|"
    r"(?:access|auth|api|hf|hub|bearer|refresh|session|github|gh|secret)[_\-]?token)$",
    re.IGNORECASE,
)
_SECRET_FLAG = re.compile(
    r"^--?(?:[a-z0-9]+-)*(?:api-?key|access-?key|secret(?:-key)?|token|password|passwd|auth|authorization|"
    r"credentials?|bearer)$",
    re.IGNORECASE,
)
_ENV_ENDINGS = ("APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/@'\"<>]+@")
_TEXT_PATTERNS = (
    # Authorization: Bearer K, "api_key": "K", x-api-key=K
    (re.compile(r"(?i)\b(authorization|x-api-key|api[_\-]?key)(\"?\s*[:=]\s*\"?(?:(?:bearer|basic|token)\s+)?)"
                r"(?!null\b|none\b)[^\s\"',&}*]{4,}"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{8,}"), r"\1" + REDACTED),
    # a flag inside one string: "--api-key K"
    (re.compile(r"(?i)(--(?:[a-z0-9]+-)*(?:api-?key|token|password|secret|auth))(\s+|=)[^\s\"']+"),
     r"\1\2" + REDACTED),
    # URL query parameters: ?api_key=K&token=K
    (re.compile(r"(?i)([?&](?:api[_\-]?key|key|token|access[_\-]?token|password|secret)=)[^&\s\"'#]+"),
     r"\1" + REDACTED),
)
_QUICK = re.compile(r"(?i)://[^\s/]*@|bearer|authoriz|api[_\-]?key|token|key=|password|secret")
_MIN_ENV_SECRET = 8

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret value (an API key given on the command line) so that any text holding it is redacted.

    A value shorter than 8 characters is not replaced wherever it stands as a substring ("test", "EMPTY" or
    "dummy" would cut words and paths out of every file written); it is still taken out where it is a
    credential's value: after ``--api-key``, under a credential-named key, after ``Bearer``."""
    if value and len(value) >= _MIN_ENV_SECRET:
        _registered.add(value)


def is_secret_name(name: str) -> bool:
    """True for a mapping key or flag that names a credential (``api_key``, ``Authorization``, ``--token``)."""
    return bool(_SECRET_KEY.search(name) or _SECRET_FLAG.match(name))


def is_secret_env(name: str) -> bool:
    """True for an environment variable whose name says it holds a credential (``OPENAI_API_KEY``, ``HF_TOKEN``)."""
    return any(p in ("KEY", "CREDENTIALS") or p.endswith(_ENV_ENDINGS) for p in re.split(r"[_\-.]", name.upper()))


def known_secrets() -> list[str]:
    """Values to take out of any text, longest first: registered ones and credential environment variables'."""
    env = {v for k, v in os.environ.items() if len(v) >= _MIN_ENV_SECRET and is_secret_env(k)}
    return sorted(_registered | env, key=len, reverse=True)


def redact_text(s: str, secrets: list[str] | None = None) -> str:
    """``s`` with URL user:password, bearer tokens, ``key=`` values and known secret values replaced."""
    secrets = known_secrets() if secrets is None else secrets
    for v in secrets:
        if v in s:
            s = s.replace(v, REDACTED)
    if _QUICK.search(s) is None:
        return s
    s = _URL_USERINFO.sub(r"\1" + REDACTED + "@", s)
    for pat, repl in _TEXT_PATTERNS:
        s = pat.sub(repl, s)
    return s


def redact_argv(argv: list[str], secrets: list[str] | None = None) -> list[str]:
    """A command line with the values of credential flags (``--api-key K``, ``--token=K``) replaced."""
    secrets = known_secrets() if secrets is None else secrets
    out: list[str] = []
    hide_next = False
    for a in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = a.partition("=")
        if flag.startswith("-") and _SECRET_FLAG.match(flag):
            if eq:
                out.append(flag + "=" + REDACTED)
            else:
                out.append(a)
                hide_next = True
            continue
        out.append(redact_text(a, secrets))
    return out


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a JSON-like value (dicts, lists, tuples, strings) with every credential replaced by ``***``;
    other values are returned as they are."""
    secrets = known_secrets() if secrets is None else secrets
    return _redact(obj, secrets)


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, str):
        return redact_text(obj, secrets)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and v not in (None, "", False) and not isinstance(v, dict | list | bool) \
                    and _SECRET_KEY.search(k):
                out[k] = REDACTED
            else:
                out[k] = _redact(v, secrets)
        return out
    if isinstance(obj, list | tuple):
        if obj and all(isinstance(a, str) for a in obj):
            red = redact_argv(list(obj), secrets)
        else:
            red = [_redact(a, secrets) for a in obj]
        return red if isinstance(obj, list) else tuple(red)
    return obj
