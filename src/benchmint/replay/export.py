"""``benchmint export``: a recorded step as a self-contained benchmark folder that needs only PyTorch.

The folder holds:

* ``trace/``: the execution trace trimmed to the replayed iteration (its ProfilerStep, everything under it,
  the ops other threads ran during it and the roots above them), the Kineto trace trimmed to the step's
  window, and ``capture.json`` when the capture has one; a trim that would change what the replay sees is
  not made (the files are copied whole and ``export.json`` says why);
* ``_benchmint_replay/``: benchmint's own replay engine (its ``core``, ``trace`` and ``replay`` modules,
  copied with their imports pointed at the folder), with standard-library stand-ins for orjson, msgspec and
  psutil used where those are not installed, so the runner replays with the same code as ``benchmint
  replay``;
* ``run.py``: the runner (``python run.py [--device] [--threads] [--warmup] [--iters] [--json]``);
* ``gaps.json`` (with ``--gaps-from``): the CPU work between ops that a ``benchmint replay --save-gaps``
  settled, which the runner spends by default instead of calibrating its own (:mod:`benchmint.replay.gaps_file`);
* ``export.json`` (what was exported: source, iteration, selection, versions) and ``README.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from benchmint.core.errors import UserError
from benchmint.core.outpaths import check_output_dir
from benchmint.core.redact import redact_text
from benchmint.replay import gaps_file
from benchmint.replay.api import (
    CAPTURE_JSON,
    find_inputs,
    last_whole_iteration,
    other_steps,
    refuse_other_kineto,
)
from benchmint.replay.index_skew import parse_spread
from benchmint.trace import damage

SCHEMA_VERSION = "1.0"
PACKAGE = "_benchmint_replay"
GAPS_FILE = "gaps.json"
VENDORED = ("core", "trace", "replay")  # the layers the replay engine is made of
NOT_VENDORED = ("trace/console.py",)  # the CLI's and the demo's tables (rich), never used by the runner
STUBS = {"orjson": "orjson_stub", "msgspec": "msgspec_stub", "psutil": "psutil_stub"}
_IMPORT_RE = re.compile(r"^(\s*)(from|import)\s+benchmint(?=[.\s])", re.MULTILINE)
_THIRD_RE = re.compile(r"^(\s*)import (" + "|".join(STUBS) + r")[ \t]*$", re.MULTILINE)


def vendor(dst: Path) -> list[str]:
    """Copy the replay engine's modules under ``dst`` (the ``_benchmint_replay`` package); returns the files."""
    import benchmint

    src = Path(benchmint.__file__).parent
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "__init__.py").write_text(
        f'"""benchmint {getattr(benchmint, "__version__", "?")}\'s replay engine, vendored by benchmint export '
        '(imports point at this package)."""\n\n'
        f'__version__ = {getattr(benchmint, "__version__", "")!r}\n')
    files = []
    for layer in VENDORED:
        for f in sorted((src / layer).rglob("*.py")):
            rel = f.relative_to(src)
            if "__pycache__" in rel.parts or rel.as_posix() in NOT_VENDORED:
                continue
            out = dst / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(rewrite(f.read_text()))
            files.append(str(rel))
    return files


def rewrite(text: str) -> str:
    """A module's source with ``benchmint`` imports pointed at the vendored package, and orjson / msgspec /
    psutil imports falling back to the standard-library stand-ins."""
    text = _IMPORT_RE.sub(lambda m: f"{m.group(1)}{m.group(2)} {PACKAGE}", text)

    def third(m: re.Match) -> str:
        ind, name = m.group(1), m.group(2)
        return (f"{ind}try:\n{ind}    import {name}\n{ind}except ImportError:  # exported runner without {name}\n"
                f"{ind}    from {PACKAGE}.replay.portable import {STUBS[name]} as {name}")

    return _THIRD_RE.sub(third, text)


def _json_bytes(path: Path) -> Any:
    from benchmint.trace.load import read_bytes

    data, _ = read_bytes(path)
    return json.loads(data)


def trim_et(doc: dict, tr: Any, within: Any) -> dict:
    """The ET document with only the nodes of one iteration: the ProfilerStep node, the nodes whose ids fall
    in its range (ops other threads ran during it), everything under those, and the roots above them."""
    hi = max((n.id for n in tr.descendants(within)), default=within.id)
    keep = {n.id for n in tr.nodes if within.id <= n.id <= hi}
    for nid in list(keep):
        n = tr.node(nid)
        keep.update(d.id for d in tr.descendants(n))
        keep.update(a.id for a in tr.ancestors(n))
    return {**doc, "nodes": [n for n in doc["nodes"] if n.get("id") in keep]}


def trim_kineto(doc: dict, start_s: float, span_s: float) -> dict:
    """The Kineto document with only the complete events that overlap the step (device events and every
    non-complete event, metadata and flows, are kept)."""
    t0, t1 = start_s * 1e6, (start_s + span_s) * 1e6
    device_cats = ("kernel", "gpu_memcpy", "gpu_memset", "Kernel", "Memcpy", "Memset")

    def keep(e: dict) -> bool:
        if e.get("ph") != "X" or e.get("cat") in device_cats:
            return True
        ts, dur = e.get("ts"), e.get("dur") or 0
        if not isinstance(ts, int | float):
            return True
        return ts + dur >= t0 - 1 and ts <= t1 + 1

    return {**doc, "traceEvents": [e for e in doc.get("traceEvents", []) if isinstance(e, dict) and keep(e)]}


def _view(et: Path, kineto: Path | None, iteration: int | None, inp: Any = None) -> Any:
    """The trace and its view; ``inp`` (the inputs as found): a Kineto trace given with --kineto that is of
    another run is refused, as replay refuses it."""
    from benchmint.replay.source import view_from_trace
    from benchmint.trace import load
    from benchmint.trace.kineto import join_kineto

    tr = load(et)
    join = join_kineto(tr, kineto) if kineto is not None else None
    view = view_from_trace(tr, join, iteration=iteration, device="cpu")
    if inp is not None and join is not None and view.ops:
        refuse_other_kineto(inp, view, join)
    return tr, view


def _join(kineto: Path | None, tr: Any) -> Any:
    from benchmint.trace.kineto import join_kineto

    return join_kineto(tr, kineto) if kineto is not None else None


def _same(a: Any, b: Any) -> str | None:
    """Why two views of a step differ for the replay (None: they do not)."""
    if [(o.name, o.schema, o.dur_s, o.start_s, o.subtree_nodes) for o in a.ops] != \
            [(o.name, o.schema, o.dur_s, o.start_s, o.subtree_nodes) for o in b.ops]:
        return "the trimmed trace's ops or their recorded times differ"
    if (a.step_span_s, a.step_start_s, a.total_nodes, a.non_op_nodes, a.scopes) != \
            (b.step_span_s, b.step_start_s, b.total_nodes, b.non_op_nodes, b.scopes):
        return "the trimmed trace's step span, node counts or scopes differ"
    return None


def export_benchmark(trace: str | os.PathLike, out: str | os.PathLike, kineto: str | os.PathLike | None = None,
                     *, select: str | None = None, what_if: list[str] | None = None, iteration: int | None = None,
                     force: bool = False, scale: list[str] | None = None,
                     gaps_from: str | os.PathLike | None = None, index_spread: str = "auto") -> dict[str, Any]:
    """Write the benchmark folder ``out`` for ``trace`` (a capture folder or an ET, with ``kineto``); returns
    what ``export.json`` holds. ``select`` / ``what_if``: the runner replays the step so adapted (as
    ``benchmint replay --select / --what-if``); ``gaps_from``: a gaps file (``benchmint replay --save-gaps`` of
    the same step and adaptation) that the runner spends between the ops by default, instead of calibrating
    its own; ``index_spread``: the made-up lookup indices' spread the runner uses by default (as ``benchmint
    replay --index-spread``). Refuses a non-empty ``out`` unless ``force``, and with it a folder that is not an
    earlier export (whole, or one cut short)."""
    from benchmint import __version__
    from benchmint.core.jsonio import write_json
    from benchmint.replay.adapt import adapt_view, gaps_step, unobserved_step_s

    inp = find_inputs(trace, kineto)
    parse_spread(index_spread)  # a bad spread stops before anything is written
    out = Path(out)
    check_output_dir("--out", out)  # (a file, /proc/x, a folder under a file, one this user cannot write)
    here = out.resolve()
    for src in (trace, inp.trace, inp.kineto, inp.capture_path, gaps_from):
        if src is not None and (here == (r := Path(src).resolve()) or here in r.parents):
            # --force would remove the folder, and the files the benchmark is made from with it
            raise UserError(f"{out}: --out holds {src}, which the benchmark is made from; choose another --out")
    replace = out.exists() and any(out.iterdir())
    if replace and not force:
        raise UserError(f"{out}: folder exists and is not empty; choose another --out or pass --force")
    if replace:  # what --force must never remove whole: a link's target, the working folder, home, benchmint
        import benchmint

        keep = [Path.cwd().resolve(), Path.home().resolve(), Path(benchmint.__file__).resolve().parent]
        if out.is_symlink() or any(here == k or here in k.parents for k in keep):
            raise UserError(f"{out}: --force would remove {'a link' if out.is_symlink() else 'a folder that holds '}"
                            f"{'' if out.is_symlink() else 'the working folder, home or benchmint itself'}; "
                            "give --out a folder of its own")
        earlier = (out / "export.json").is_file() or ((out / "trace").is_dir() and (
            (out / "run.py").is_file() or (out / "_benchmint_replay").is_dir()))  # (one cut short: no export.json)
        if not earlier:
            # --force replaces an earlier export; a folder of anything else (a user's notes) is not ours to empty
            raise UserError(f"{out}: the folder holds files that are not an earlier export; --force replaces an "
                            "export only: choose another --out")
    tr, view = _view(inp.trace, inp.kineto, iteration, inp)
    if iteration is None:
        iteration = last_whole_iteration(tr, inp.capture)
        if iteration is not None:
            tr, view = _view(inp.trace, inp.kineto, iteration, inp)
    if not view.ops:
        raise UserError(f"{inp.trace}: the trace has no operator with a schema to replay")
    # a selection that matches nothing, or a scale that cannot be applied, stops here
    adapted_view, adapted = adapt_view(view, select, what_if, scale,
                                       others=lambda: other_steps(tr, _join(inp.kineto, tr), iteration, inp.capture,
                                                                  "cpu"),
                                       unobserved_s=unobserved_step_s(inp.capture))
    gaps = None
    if gaps_from is not None:  # checked before anything is written
        gaps = gaps_file.read(gaps_from)
        gaps.check_steps(len(adapted_view.ops), gaps_step(adapted_view, adapted))
    its = tr.iterations
    within = None
    if its:
        match = [it for it in its if it.number == iteration] if iteration is not None else its[-1:]
        within = match[0].node if match else None
    number = None if within is None else next(it.number for it in its if it.node is within)

    if replace:  # only once every check has passed: a refused export leaves the old one as it was
        shutil.rmtree(out)
    tdir = out / "trace"
    tdir.mkdir(parents=True)
    et_doc = _json_bytes(inp.trace)
    k_doc = _json_bytes(inp.kineto) if inp.kineto is not None else None
    trimmed, why, tr2 = False, "the trace has no ProfilerStep to trim to", None
    if within is not None and select and len(its) > 1:
        why = "a selection's share of the step is the median over the recorded steps: every step kept"
    elif within is not None:
        et_t = trim_et(et_doc, tr, within)
        k_t = trim_kineto(k_doc, view.step_start_s, view.step_span_s) if (
            k_doc is not None and view.step_start_s is not None and view.step_span_s is not None) else k_doc
        _dump(tdir / "et.json", et_t)
        if k_t is not None:
            _dump(tdir / "kineto.json", k_t)
        tr2, view2 = _view(tdir / "et.json", tdir / "kineto.json" if k_t is not None else None, number)
        why = _same(view, view2)
        trimmed = why is None
    if not trimmed:  # the whole recorded files, so the replay sees what benchmint replay sees
        _dump(tdir / "et.json", et_doc)
        if k_doc is not None:
            _dump(tdir / "kineto.json", k_doc)
    cap = inp.capture
    if cap is not None:
        files = {k: v for k, v in (cap.get("files") or {}).items() if k != "kineto"}  # (none copied: none named)
        cap = {**cap, "files": {**files, "et": "et.json", **({"kineto": "kineto.json"} if k_doc is not None else {})}}
        write_json(tdir / CAPTURE_JSON, cap)
    if gaps is not None:
        shutil.copyfile(gaps.path, out / GAPS_FILE)
    files = vendor(out / PACKAGE)
    runner = Path(__file__).parent / "portable" / "runner.py"
    shutil.copyfile(runner, out / "run.py")
    meta = {
        "schema_version": SCHEMA_VERSION,
        "benchmint_version": __version__,
        "exported_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "source": {"trace": str(inp.trace), "kineto": str(inp.kineto) if inp.kineto else None,
                   "capture_json": str(inp.capture_path) if inp.capture_path else None},
        "trace": "trace/et.json",
        "kineto": "trace/kineto.json" if k_doc is not None else None,
        "iteration": number,
        "trimmed": trimmed,
        "trim_note": None if trimmed else why,
        "nodes": {"original": len(et_doc.get("nodes", [])),
                  "exported": len(_json_bytes(tdir / "et.json").get("nodes", []))},
        "ops": len(view.ops),
        "select": select,
        "what_if": list(what_if) if what_if else None,
        "scale": list(scale) if scale else None,
        "index_spread": index_spread,
        # the CPU work between ops the runner spends by default (settled by the replay that saved it)
        "gaps_file": GAPS_FILE if gaps is not None else None,
        "gaps_settled": ({**gaps.settled, "gap_time_s": sum(gaps.turns) * gaps.ns_per_turn / 1e9}
                         if gaps is not None else None),
        "adapted": [{"kind": a.kind, **a.info} for a in adapted],
        "ops_replayed_after_adaptation": len(adapted_view.ops),
        # what was captured, on what, and what the original measured (capture.json's; None without one)
        "original": _original(cap, view),
        "vendored_modules": files,
        "runner_needs": "python >= 3.10 and torch (nothing of benchmint; orjson, msgspec, psutil used when present)",
        # what the recording lost of the step (nested tensors): the benchmark replays what was recorded
        "trace_damage": damage.find(tr2 if trimmed else tr),  # of the trace exported, as the runner finds it
    }
    write_json(out / "export.json", meta)
    (out / "README.md").write_text(redact_text(readme(meta, cap, view)))  # the captured command line may hold a key
    return meta


def _original(cap: dict | None, view: Any) -> dict[str, Any]:
    """export.json's account of the original: the trace's devices, and capture.json's device, threads, torch,
    host, command line, model and un-observed step time (the keys are null without a capture.json)."""
    cap = cap or {}
    st = cap.get("step_time_s") or {}
    cl = cap.get("command_line")
    return {"trace_devices": list(view.devices), "device": cap.get("device"), "threads": cap.get("threads"),
            "torch_version": cap.get("torch_version"), "host": cap.get("host"),
            "command_line": redact_text(" ".join(cl) if isinstance(cl, list) else cl) if cl else None,
            "model": cap.get("model"),
            "step_time_s": {k: st.get(k) for k in ("median", "p10", "p90", "n", "noisy")} if st else None,
            "how_measured": cap.get("step_time_how") or cap.get("how_measured")}


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) else str(x)


def _dump(path: Path, doc: Any) -> None:
    with open(path, "w") as f:
        json.dump(doc, f)


def _fmt_s(x: Any) -> str:
    return f"{x * 1e3:.3f} ms" if isinstance(x, int | float) else "-"


def readme(meta: dict, cap: dict | None, view: Any) -> str:
    """What was captured, on what, what the original measured, and how to run it."""
    lines = ["# Exported benchmark", "",
             f"A step recorded with PyTorch's execution trace{' and Kineto profiler' if meta['kineto'] else ''}, "
             f"exported by benchmint {meta['benchmint_version']} on {meta['exported_at']}. It replays with PyTorch "
             "alone: the folder carries benchmint's replay engine (`_benchmint_replay/`).", "",
             "## What was captured", ""]
    ops = _top_ops(view)
    if meta.get("trace_damage"):
        lines.append(f"- **not the whole step**: {meta['trace_damage']}")
    lines.append(f"- trace: `{meta['source']['trace']}`" + (f", ProfilerStep#{meta['iteration']}"
                                                            if meta["iteration"] is not None else ""))
    lines.append(f"- {meta['ops']} top-level ops ({ops}); recorded step span "
                 f"{_fmt_s(view.step_span_s)} (under the recorders, which slow it)")
    lines.append(f"- trace devices: {', '.join(view.devices) or '-'}")
    if meta["trimmed"]:
        lines.append(f"- trimmed to the replayed iteration: {meta['nodes']['exported']} of "
                     f"{meta['nodes']['original']} trace nodes")
    else:
        lines.append(f"- not trimmed ({meta['trim_note']})")
    if cap:
        m = cap.get("model") or {}
        host = cap.get("host") or {}
        if cap.get("command_line"):
            cl = cap["command_line"]
            lines.append(f"- command: `{' '.join(cl) if isinstance(cl, list) else cl}`")
        if m:
            lines.append(f"- model: {m.get('architecture', '-')}, {m.get('parameter_count', '-')} parameters, "
                         f"{m.get('dtype', '-')}")
        lines += ["", "## On what", "",
                  f"- device {cap.get('device', '-')}, {cap.get('threads', '-')} intra-op threads, torch "
                  f"{cap.get('torch_version', '-')}",
                  f"- host: {host.get('cpu_model', '-')}, {host.get('hostname', host.get('host', '-'))}"]
        st = cap.get("step_time_s") or {}
        lines += ["", "## What the original measured", "",
                  f"- step time (un-observed, nothing attached): median {_fmt_s(st.get('median'))}, p10 "
                  f"{_fmt_s(st.get('p10'))}, p90 {_fmt_s(st.get('p90'))}, n={st.get('n', '-')}"
                  + ("; **noisy**: the steps spread too much for one figure to be the step's time" if st.get("noisy")
                     else ""),
                  f"- how: {cap.get('step_time_how') or cap.get('how_measured') or 'capture.json step_time_s'}"]
    else:
        gpu = [d for d in view.devices if d != "cpu"]
        lines += ["", "## What the original measured", "",
                  "- no capture.json: the original's un-observed step time is estimated by the runner from the "
                  "trace (the recorders' cost measured on the machine it runs on)"
                  + (f", when it replays on the trace's device ({', '.join(gpu)}); on the CPU it is not estimated "
                     "across devices, and the result has no original to compare with" if gpu else "")]
    for a in meta["adapted"]:
        if a["kind"] == "selection":
            sh = a.get("share_of_step")
            how = "the recorders' cost taken out" if a.get("recorders_cost_per_node_s") is not None else "as recorded"
            lines.append(f"- replays the selection `{a['spec']}`: {a['ops_selected']} of {a['ops_in_step']} ops"
                         + (f", {sh * 100:.1f}% of the step ({how})" if sh is not None else ""))
        elif a["kind"] == "scale":
            lines.append(f"- replays the step scaled ({' '.join(a['specs'])}): "
                         + ", ".join(f"{k} {_g(a['recorded'][k])} -> {_g(a['scaled'][k])}" for k in a["recorded"]))
        else:
            for c in a["changes"]:
                lines.append(f"- what-if `{c['spec']}`: {c['ops_matched']} ops")
    if meta.get("gaps_file"):
        g = meta.get("gaps_settled") or {}
        lines += ["", "## The CPU time between ops", "",
                  f"- `{meta['gaps_file']}`: {_fmt_s(g.get('gap_time_s'))} per iteration of CPU work between the ops, "
                  f"settled by `benchmint replay --save-gaps` on {g.get('device', '-')} with {g.get('threads', '-')} "
                  f"threads, aimed at {g.get('gap_target') or '-'}. The runner spends the same work (spin turns) "
                  "by default; `--gaps recorded` calibrates its own against the original instead, `--gaps none` "
                  "replays the ops back to back."]
    lines += ["", "## How to run", "", "```bash", "python run.py                       # device and threads as "
              "captured, 3 warmup + 20 timed iterations",
              "python run.py --device cuda --threads 4 --warmup 3 --iters 50 --json result.json", "```", "",
              "It needs Python >= 3.10 and PyTorch, nothing else. It prints coverage, the replayed iteration time and "
              "the original's; `--json` writes the keys of `benchmint replay --json` (`coverage`, `iter_time_s`, "
              "`original_iter_time_s`, `error`, `device`, `threads`, `schema_version`, ...). With benchmint "
              "installed, `benchmint replay trace/` replays the same files.", ""]
    return "\n".join(lines)


def _top_ops(view: Any) -> str:
    from collections import Counter

    c = Counter(o.name for o in view.ops)
    return ", ".join(f"{n} x{k}" for n, k in c.most_common(5)) + (", ..." if len(c) > 5 else "")
