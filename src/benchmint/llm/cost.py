"""Cost per output token from a price per hour: a flag, or the small table of public list prices in the repo.

``$ per million output tokens = price_per_hour / 3600 / output_tokens_per_s * 1e6``. The table
(``benchmint/data/prices.csv``) keeps each price with the date it was read and its source; list prices change,
so the result always says which price, from where, and as of when.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import Any

from benchmint.core.errors import UserError


@dataclass(frozen=True)
class Price:
    name: str
    usd_per_hour: float
    accelerators: str
    provider: str
    date: str
    source: str


def price_table() -> dict[str, Price]:
    text = resources.files("benchmint").joinpath("data/prices.csv").read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    return {
        r["name"]: Price(r["name"], float(r["usd_per_hour"]), r["accelerators"], r["provider"], r["date"], r["source"])
        for r in rows
    }


def resolve_price(price: str | float | None) -> dict[str, Any] | None:
    """A ``--price`` value: a number (USD per hour) or a name from the table; None when not given."""
    if price is None or price == "":
        return None
    try:
        value = float(price)
    except (TypeError, ValueError):
        table = price_table()
        p = table.get(str(price))
        if p is None:
            raise UserError(
                f"--price {price!r}: not a number of USD per hour nor a name in the price table; "
                f"known names: {', '.join(sorted(table))}"
            ) from None
        return {"usd_per_hour": p.usd_per_hour, "name": p.name, "accelerators": p.accelerators,
                "provider": p.provider, "as_of": p.date, "source": p.source}
    if value <= 0:
        raise UserError("--price must be a positive number of USD per hour")
    return {"usd_per_hour": value, "name": None, "source": "--price flag"}


def cost_per_million_tokens(usd_per_hour: float, tokens_per_s: float | None) -> float | None:
    if not tokens_per_s or tokens_per_s <= 0:
        return None
    return usd_per_hour / 3600.0 / tokens_per_s * 1e6


def cost_block(price: dict[str, Any] | None, output_tokens_per_s: float | None,
               total_tokens_per_s: float | None = None, throughput_source: str = "") -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "price": price,
        "usd_per_million_output_tokens": cost_per_million_tokens(price["usd_per_hour"], output_tokens_per_s),
        "usd_per_million_total_tokens": cost_per_million_tokens(price["usd_per_hour"], total_tokens_per_s),
        "output_tokens_per_s": output_tokens_per_s,
        "throughput_source": throughput_source,
        "formula": "usd_per_hour / 3600 / tokens_per_s * 1e6",
    }
