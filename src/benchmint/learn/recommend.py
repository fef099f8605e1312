"""Recommend configurations (accelerator, count, engine, precision) for a model under latency limits and a budget.

Every accelerator of the spec table (or the ones asked for) is a candidate, at 1, 2, 4 and 8 per replica and at
each precision its sheet gives a figure for, as long as the weights take at most ``WEIGHTS_SHARE`` (75%) of the
memory: above it the features take a stated precision to run narrower (too little room is left for a KV cache),
so a "bf16" candidate whose weights fill the memory was a quantized one under the wrong name. The throughput
predictor (``tokens_per_s_per_accelerator``) gives tokens/s with its 90% interval; the price table
(``benchmint/data/prices.csv``, per machine, divided per accelerator) gives $ per hour and so $ per million output
tokens; the TDP gives an upper bound on joules per token. Latency limits pick the MLPerf latency class the
prediction is for: ``standard`` (TTFT 2 s, TPOT 0.2 s at p99 for llama2-70b) or ``interactive`` (0.45 s /
0.04 s); limits tighter than every measured class are said so in a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from benchmint.core.errors import UserError
from benchmint.learn.features import WEIGHTS_SHARE, build_features
from benchmint.learn.models import find_model, model_family, model_table
from benchmint.learn.predictor import Predictor, _OneThread
from benchmint.learn.specs import Accelerator, find_accelerator, normalize_text, spec_table

COUNTS = (1, 2, 4, 8)
LATENCY_CLASSES = {"standard": {"ttft": 2.0, "tpot": 0.2}, "interactive": {"ttft": 0.45, "tpot": 0.04}}
PRECISIONS = (("fp4", "fp4_tflops"), ("fp8", "fp8_tflops"), ("bf16", "bf16_tflops"))
SCHEMA_VERSION = "1.0"
# why a configuration's figure is extrapolated, by the prediction's basis (``predictor.py``)
EXTRAPOLATED = {"new_configuration": "count or precision never measured for this model on this accelerator",
                "new_accelerator": "accelerator never measured", "new_model": "model family never measured",
                "new_round": "round never measured"}
SHORT = {"new_configuration": "new count/precision", "new_accelerator": "new accelerator",
         "new_model": "new model family", "new_round": "new round"}


def parse_slo(text: str | None) -> dict[str, float]:
    """``"ttft=0.5,tpot=0.05"`` -> ``{"ttft": 0.5, "tpot": 0.05}`` (seconds)."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, _, val = part.partition("=")
        key = key.strip().lower().removesuffix("_s")
        if key not in ("ttft", "tpot"):
            raise UserError(f"--slo {text!r}: unknown limit {key!r}; expected ttft=SECONDS,tpot=SECONDS")
        try:
            out[key] = float(val)
        except ValueError:
            raise UserError(f"--slo {text!r}: {val!r} is not a number of seconds") from None
        if out[key] <= 0:
            raise UserError(f"--slo {text!r}: limits must be positive seconds")
    return out


def latency_class(slo: dict[str, float]) -> tuple[str, str | None]:
    if not slo:
        return "standard", None
    std = LATENCY_CLASSES["standard"]
    if all(slo.get(k, v) >= v for k, v in std.items()):
        return "standard", None
    inter = LATENCY_CLASSES["interactive"]
    if all(slo.get(k, v) >= v for k, v in inter.items()):
        return "interactive", None
    return "interactive", ("the limits are tighter than any measured latency class (tightest: TTFT 0.45 s, "
                           "TPOT 0.04 s); the figures assume those and are optimistic")


@dataclass(frozen=True)
class Price:
    usd_per_hour_per_accelerator: float
    name: str
    as_of: str


def accelerator_prices() -> dict[str, Price]:
    """The cheapest listed price per accelerator of each accelerator in the price table."""
    import re

    from benchmint.llm.cost import price_table

    out: dict[str, Price] = {}
    for p in price_table().values():
        m = re.match(r"\s*(\d+)\s*x\s*(.+)", p.accelerators)
        if not m:
            continue
        acc = find_accelerator(m.group(2))
        if acc is None:
            continue
        per = p.usd_per_hour / int(m.group(1))
        if acc.name not in out or per < out[acc.name].usd_per_hour_per_accelerator:
            out[acc.name] = Price(per, p.name, p.date)
    return out


def _candidates(model: str, scenario: str, accs: list[Accelerator],
                engines: dict[str, str]) -> list[dict[str, Any]]:
    facts = find_model(model)
    params = facts.facts["params_b"] if facts else None
    rows = []
    for acc in accs:
        if acc.kind == "cpu" or not acc.specs.get("memory_gb"):
            continue
        for prec, col in PRECISIONS:
            if not acc.specs.get(col):
                continue
            for n in COUNTS:
                bpp = {"fp4": 0.5, "fp8": 1.0, "bf16": 2.0}[prec]
                # (fp4 has nothing narrower to run as: the 90% that weights and a KV cache may use)
                if params and params * bpp > (0.9 if prec == "fp4" else WEIGHTS_SHARE) * n * acc.specs["memory_gb"]:
                    continue
                rows.append({"model_name": model, "precision": prec, "accelerator": acc.name,
                             "accelerator_count": n, "nodes": 1, "scenario": scenario,
                             "engine": engines.get(acc.vendor, engines.get("*", ""))})
    return rows


def _per_million(usd_h: float | None):
    return lambda rate: usd_h / 3600 / rate * 1e6 if usd_h and rate > 0 else None


def _joules(tdp: float | None, n: int):
    return lambda rate: tdp * n / rate if tdp and rate > 0 else None


def check_question(model: str, scenario: str = "server", max_usd_per_hour: float | None = None,
                   accelerators: list[str] | None = None, top: int = 10) -> list[Accelerator]:
    """Check a recommendation's question before anything is fit; the candidate accelerators (the ones asked for,
    else the whole spec table). Each bad value is one UserError line."""
    if scenario.lower() not in ("server", "offline"):
        raise UserError(f"--scenario {scenario!r}: expected server or offline")
    if top < 1:
        raise UserError("--top must be at least 1")
    if max_usd_per_hour is not None and not (max_usd_per_hour > 0 and math.isfinite(max_usd_per_hour)):
        raise UserError(f"--max-usd-per-hour {max_usd_per_hour:g}: must be a positive number of US dollars per "
                        "replica-hour (leave it out for no budget)")
    if accelerators:
        accs = []
        for name in accelerators:
            acc = find_accelerator(name)
            if acc is None:
                known = ", ".join(a.name for a in spec_table())
                raise UserError(f"--accelerators: {name!r} is not in the spec table; known: {known}")
            accs.append(acc)
    else:
        accs = list(spec_table())
    if find_model(model) is None:
        raise UserError(f"--model {model!r}: not in the model table (benchmint/data/models.csv); known families: "
                        + ", ".join(sorted({f.family for _, f in model_table()})))
    return accs


def relevant_rows(feats: pd.DataFrame, model: str, accelerators: list[Accelerator]) -> pd.Series:
    """Rows that share something with the question: its model family, or one of the candidate accelerators
    (CPUs are never candidates). A tiny model measured on a host CPU teaches nothing about llama2-70b on GPUs."""
    fam = model_family(model)
    names = {a.name for a in accelerators if a.kind != "cpu"}
    return (feats["model_family"].astype(object) == fam) | feats["accelerator"].astype(object).isin(names)


def recommend(predictor: Predictor, model: str, scenario: str = "server", slo: dict[str, float] | None = None,
              max_usd_per_hour: float | None = None, accelerators: list[str] | None = None,
              top: int = 10) -> dict[str, Any]:
    if predictor.target != "tokens_per_s_per_accelerator":
        raise UserError(f"recommend needs a tokens_per_s_per_accelerator model, this one predicts "
                        f"{predictor.target}")
    accs = check_question(model, scenario, max_usd_per_hour, accelerators, top)
    scenario = scenario.lower()
    lat_class, lat_note = latency_class(slo or {})
    # the engine each vendor's results use most in the training rows; "vllm" when the rows do not say
    engines = {"NVIDIA": "TensorRT-LLM 10.8", "AMD": "vLLM 0.6", "*": "vLLM 0.6"}
    cands = _candidates(model, scenario, accs, engines)
    if not cands:
        raise UserError(f"no accelerator in the table holds {model!r} in 8 or fewer of them")
    df = pd.DataFrame(cands)
    # the latency class rides on the model name, as in MLPerf's benchmark names
    df["model_name"] = df["model_name"] + ("-interactive" if lat_class == "interactive" else "")
    feats = build_features(df)
    with _OneThread():
        pred = predictor.predict_features(feats)
    prices = accelerator_prices()
    rows, unpriced = [], 0
    over_budget: list[float] = []  # the $/h of the priced configurations above --max-usd-per-hour
    for c, (_, p), (_, f) in zip(cands, pred.iterrows(), feats.iterrows(), strict=True):
        if p["error"] or not math.isfinite(p["prediction"]):
            continue
        n = c["accelerator_count"]
        tok, lo, hi = (p[k] * n for k in ("prediction", "lower", "upper"))
        if not (math.isfinite(lo) and math.isfinite(hi)):  # too few residuals to calibrate an interval
            lo = hi = None
        price = prices.get(c["accelerator"])
        usd_h = price.usd_per_hour_per_accelerator * n if price else None
        if max_usd_per_hour is not None:
            if usd_h is None:
                unpriced += 1
                continue
            if usd_h > max_usd_per_hour:
                over_budget.append(usd_h)
                continue

        tdp = f["acc_tdp_w"]
        tdp = tdp if tdp and math.isfinite(tdp) else None
        per_m = _per_million(usd_h)
        j = _joules(tdp, n)
        rows.append({
            "accelerator": c["accelerator"], "count": n, "precision": c["precision"], "engine": c["engine"],
            "tokens_per_s": tok, "tokens_per_s_lower": lo, "tokens_per_s_upper": hi,
            "usd_per_hour": usd_h, "price_source": f"{price.name} (as of {price.as_of})" if price else None,
            "usd_per_million_tokens": per_m(tok), "usd_per_million_tokens_lower": per_m(hi) if hi else None,
            "usd_per_million_tokens_upper": per_m(lo) if lo else None,
            "joules_per_token_at_tdp": j(tok), "joules_per_token_at_tdp_lower": j(hi) if hi else None,
            "joules_per_token_at_tdp_upper": j(lo) if lo else None, "interval": p.get("interval") or "conformal",
            "basis": p["basis"], "extrapolated": p["basis"] != "seen",
            "extrapolated_why": EXTRAPOLATED.get(p["basis"], p["basis"]) if p["basis"] != "seen" else None,
            "note": p["note"],
        })
    rows.sort(key=lambda r: (r["usd_per_million_tokens"] is None, r["usd_per_million_tokens"] or 0.0,
                             -r["tokens_per_s"]))
    notes = [n for n in (lat_note,) if n]
    ahead = _extrapolated_ahead(rows[:top])
    if ahead:
        notes.append(ahead)
    if unpriced:
        notes.append(f"{unpriced} configuration(s) without a listed price were left out by --max-usd-per-hour "
                     "(prices: benchmint/data/prices.csv)")
    if not rows and over_budget:
        notes.append(f"none of the {len(over_budget)} priced configuration(s) is within --max-usd-per-hour "
                     f"{max_usd_per_hour:g}: the cheapest costs {min(over_budget):.4g} $/h")
    elif rows and not any(r["usd_per_hour"] for r in rows):
        notes.append("no listed price for these accelerators: ranked by predicted tokens/s")
    fam = model_family(model)
    if fam not in predictor.seen.get("model_family", []):
        notes.append(f"no measured row for model family {fam!r}: every figure extrapolates to a family the "
                     "predictor never saw (see each row's note)")
    return {"schema_version": SCHEMA_VERSION, "model": model, "model_family": fam, "scenario": scenario,
            "latency_class": lat_class, "slo": slo or {}, "max_usd_per_hour": max_usd_per_hour,
            "interval_level": 0.9, "configurations": rows[:top], "candidates": len(rows), "notes": notes,
            "engines_assumed": engines}


def _name(r: dict[str, Any]) -> str:
    return f"{r['count']} x {r['accelerator']} {r['precision']}"


def _extrapolated_ahead(rows: list[dict[str, Any]]) -> str | None:
    """A note when configurations whose figures are extrapolated rank above the best measured one: a ranking must
    not pass a guess off as a measurement."""
    first = next((i for i, r in enumerate(rows) if not r["extrapolated"]), None)
    ahead = [i for i, r in enumerate(rows[:first] if first is not None else rows) if r["extrapolated"]]
    if not ahead:
        return None
    which = ", ".join(f"#{i + 1} ({_name(rows[i])}: {rows[i]['extrapolated_why']})" for i in ahead[:5])
    if first is None:
        return (f"every listed configuration is extrapolated ({which}{', ...' if len(ahead) > 5 else ''}): no "
                "configuration like them was measured; measure one before relying on the ranking")
    return (f"{len(ahead)} configuration(s) ranked above the best measured one (#{first + 1}, {_name(rows[first])}) "
            f"are extrapolated, not measured: {which}{', ...' if len(ahead) > 5 else ''}; their figures are "
            "predictions with the wider interval of configurations never measured")


def normalize_list(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [t.strip() for t in text.split(",") if normalize_text(t)]


def recommend_table(res: dict[str, Any]):
    from rich.table import Table

    t = Table(title=f"{res['model']} ({res['scenario']}, {res['latency_class']} latency): top "
                    f"{len(res['configurations'])} of {res['candidates']} configurations, 90% intervals",
              title_justify="left")
    for c in ("#", "accelerator", "n", "precision", "tokens/s", "$/M tokens", "J/token (TDP)", "note"):
        t.add_column(c, justify="right" if c in ("#", "n", "tokens/s", "$/M tokens", "J/token (TDP)") else "left")

    def rng(v, lo, hi, fmt="{:.3g}"):
        if v is None:
            return "-"
        return fmt.format(v) + (" [no interval]" if lo is None or hi is None else
                                f" [{fmt.format(lo)}-{fmt.format(hi)}]")

    for i, r in enumerate(res["configurations"], 1):
        t.add_row(str(i), r["accelerator"], str(r["count"]), r["precision"],
                  rng(r["tokens_per_s"], r["tokens_per_s_lower"], r["tokens_per_s_upper"]),
                  rng(r["usd_per_million_tokens"], r["usd_per_million_tokens_lower"],
                      r["usd_per_million_tokens_upper"]),
                  rng(r["joules_per_token_at_tdp"], r["joules_per_token_at_tdp_lower"],
                      r["joules_per_token_at_tdp_upper"]),
                  f"extrapolated: {SHORT.get(r.get('basis'), r.get('basis'))}" if r["extrapolated"] else "")
    return t
