"""The documentation's metric tables, generated from :mod:`benchmint.results.metric_table`.

``docs/metrics.md`` and ``docs/replay.md`` hold each table between two markers
(``<!-- metric-table:NAME -->`` and ``<!-- /metric-table:NAME -->``); everything between them is generated.

    python -m benchmint.results.metric_docs            # rewrite the tables in docs/
    python -m benchmint.results.metric_docs --check    # exit 1 and name the stale tables (what the test does)
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmint.results.metric_table import LLM_METRICS, REPLAY_FIGURES, REQUEST_COLUMNS, Metric


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _key(m: Metric) -> str:
    return f"`{m.key}`"


def _stats(m: Metric) -> str:
    return ", ".join(f"`{s}`" for s in m.stats) if m.stats else "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def llm_aliases() -> str:
    """Definitions and names elsewhere: the metrics other tools report too."""
    rows = [(f"{m.name} ({_key(m)})", m.definition, m.aliases.vllm, m.aliases.guidellm, m.aliases.aiperf,
             m.aliases.mlperf) for m in LLM_METRICS if m.aliases is not None]
    return _table(("benchmint (result key)", "definition", "vLLM `benchmark_serving`", "GuideLLM", "AIPerf",
                   "MLPerf LoadGen"), rows)


def llm_figures() -> str:
    """Every figure of an LLM result, with its unit, level and statistics."""
    rows = [(_key(m), m.name, m.unit or "-", m.level + (", optional" if m.optional else ""), _stats(m),
             m.definition) for m in LLM_METRICS]
    return _table(("result key", "name", "unit", "level", "statistics", "definition"), rows)


def request_columns() -> str:
    """The columns of requests.parquet."""
    rows = [(f"`{c.name}`", f"`{c.arrow}`", c.unit or "-", c.definition) for c in REQUEST_COLUMNS]
    return _table(("column", "type", "unit", "definition"), rows)


def replay_figures() -> str:
    """The figures of a replay result."""
    rows = [(_key(m), m.name, m.unit or "-", m.level, _stats(m), m.definition) for m in REPLAY_FIGURES]
    return _table(("result key", "name", "unit", "level", "statistics", "definition"), rows)


#: doc file (relative to the repository root) -> table name -> renderer
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "docs/metrics.md": {"llm-aliases": llm_aliases, "llm-figures": llm_figures, "request-columns": request_columns},
    "docs/replay.md": {"replay-figures": replay_figures},
}


def render(text: str, tables: dict[str, Callable[[], str]], doc: str = "the document") -> str:
    """``text`` with each marked table regenerated; a ValueError names a table whose markers are missing."""
    for name, fn in tables.items():
        pat = re.compile(rf"(<!-- metric-table:{name} -->\n)(.*?)(<!-- /metric-table:{name} -->)", re.S)
        if not pat.search(text):
            raise ValueError(f"{doc}: no <!-- metric-table:{name} --> ... <!-- /metric-table:{name} --> markers")
        text = pat.sub(lambda mo, fn=fn: mo.group(1) + fn() + "\n" + mo.group(3), text)
    return text


def stale(root: Path, write: bool = False) -> list[str]:
    """The doc files whose generated tables differ from the metric table (rewritten when ``write``)."""
    out = []
    for rel, tables in TABLES.items():
        path = root / rel
        text = path.read_text(encoding="utf-8")
        new = render(text, tables, rel)
        if new != text:
            out.append(rel)
            if write:
                path.write_text(new, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmint.results.metric_docs", description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="the repository root (default: the current folder)")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table is stale")
    a = ap.parse_args(argv)
    try:
        files = stale(Path(a.root), write=not a.check)
    except (OSError, ValueError) as e:
        print(f"metric_docs: {e}", file=sys.stderr)
        return 2
    if a.check and files:
        print("stale metric tables in " + ", ".join(files)
              + ": run python -m benchmint.results.metric_docs", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(files)) if files else "metric tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
