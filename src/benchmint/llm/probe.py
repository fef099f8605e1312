"""Whether an HTTP backend's server answers, checked before a run starts."""

from __future__ import annotations

from typing import Any

from benchmint.core.errors import UserError


def check_reachable(spec: dict[str, Any], timeout_s: float = 10.0) -> None:
    """Fail fast, with one line, when an HTTP backend's server cannot be reached (before LoadGen starts)."""
    from benchmint.llm.backends.registry import backend_entry

    if spec.get("factory") or not backend_entry(str(spec.get("kind"))).server:
        return
    import urllib.error
    import urllib.request

    url = str(spec["options"]["url"]).rstrip("/")
    try:
        urllib.request.urlopen(url + "/models", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered (some servers have no /models): reachable
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise UserError(f"cannot reach the server at {url} ({reason}); start it or fix --url") from None

