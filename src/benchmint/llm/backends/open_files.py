"""How many connections a client process may hold open: each is a file descriptor.

An open loop or LoadGen's Offline scenario can put thousands of requests in flight at once (Offline issues
every query at the start: 24,576 for llama2-70b). One connection per request runs into the process's limit on
open files (``ulimit -n``, often 1024 soft): the requests past it failed at once with ``[Errno 24] Too many
open files`` while the run went on and LoadGen called it VALID. So, as load generators do, the client raises
its soft limit to the hard one (at most :data:`WANTED`), and no more requests than :func:`connection_cap`
hold a connection at a time: the others wait for one, before they are sent (their wait shows as the client's
lag behind the schedule, not as the server's latency).
"""

from __future__ import annotations

WANTED = 65536  # soft limit asked for when the hard limit allows it
RESERVE = 256  # descriptors left for everything else (logs, records, the tokenizer's files, the event loop)


def raise_soft_limit() -> int | None:
    """Raise this process's soft limit on open files towards the hard one (at most :data:`WANTED`; where the
    system refuses that, as macOS does above its per-process maximum, the largest of a few smaller steps it
    takes); the soft limit now, or None where there is no such limit (no ``resource`` module)."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    top = WANTED if hard == resource.RLIM_INFINITY else min(hard, WANTED)
    for want in (top, 10240, 4096):
        if soft >= want or want > top:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
            break
        except (ValueError, OSError):
            continue
    return int(soft)


def connection_cap(max_connections: int = 0) -> int | None:
    """The most connections to hold at once: ``max_connections`` when given (> 0), else what the open-files
    limit leaves after a reserve for the rest of the process (a quarter of the limit, at most :data:`RESERVE`);
    None: no limit known."""
    soft = raise_soft_limit()
    if max_connections > 0:
        return max_connections  # the user's word; past the limit, the connections fail and say why
    return None if soft is None else max(1, soft - min(RESERVE, soft // 4))
