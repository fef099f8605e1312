"""benchmint beside its peers: GuideLLM, AIPerf and inference-perf against the same server, judged by the server.

Each peer is installed into its own virtual environment under ``--cache`` (default
``~/.cache/benchmint-peers/<tool>/venv``), reused when present (a marker file says the install finished). A
tool that pulls torch gets ``torch==2.13.0`` first (as the Makefile installs it: the CPU build here) and is then
installed under a constraint that pins that torch, so no venv ever resolves a CUDA torch; a venv whose torch
reports CUDA is removed. inference-perf needs Python >= 3.12: the first of ``--python312``, ``python3.12`` /
``python3.13`` on PATH and ``~/.pyenv/versions/3.1[2-9]*`` is used. ``--no-install`` uses what is present and
skips a missing tool with a line saying so; a tool that fails to install or to run is reported and the others
go on (a failed install's venv is removed).

Then, one tool after another, each against a fresh ``benchmarks/mock_openai_server.py --log`` on loopback (``--tokens``
chunks per answer, ``--itl-ms`` apart, the first ``--ttft-ms`` after the request was read; or, with ``--server
builtin``, benchmint's own server ``benchmint llm serve --model tiny --request-log``, which logs the same
per-request times), with the same
prompts (the shipped instruction sample, cycled; ``max_tokens`` = ``--tokens``), the same arrivals (``--arrivals``
poisson or constant at ``--rate`` req/s) for ``--duration`` seconds, streamed ``/v1/completions``; the tiny local
tokenizer (``benchmint.models.tiny_llm``, built on this machine; ``HF_HUB_OFFLINE=1``) is given to the tools that
need one. Printed per tool: what the tool itself reported (parsed from its own output files:
``benchmarks/peers_parse.py``): completed / failed requests, achieved rate, TTFT / TPOT / ITL p50 and p99 (ms),
and the tool's CPU: ``CPU s`` and ``ms/req``, user + system seconds of its whole process tree from
``os.wait4`` (start-up and shut-down included), in all and per completed request; ``load ms/req``, the tree's
CPU between the first and the last request the server received (sampled with psutil every 0.1 s on the same
monotonic clock, interpolated) per request: the steady cost of load generation. Under each tool's line, the
server's truth for that run (its own per-request times on CLOCK_MONOTONIC: TTFT = first chunk written - request
read, TPOT, ITL; the arrival rate). The headline column,
``dTTFT``, is the tool's TTFT minus the server's at p50 and at p99: the latency the client itself added.
benchmint's TTFT is its ``ttft_from_send_s`` (from its send, as the peers measure it). For benchmint a
``paths`` line splits the added TTFT request by request (its ``requests.parquet`` paired in send order with the
server's log, through the wall-clock send / read times both record): request path (client send -> server
read, which includes the server's loop being late to read) and response path (server's first chunk written ->
client's first token).

    python benchmarks/peers.py [--rate 50] [--duration 20] [--tools benchmint,guidellm,aiperf,inference-perf]
        [--arrivals poisson] [--rounds 1] [--server mock|builtin] [--no-install] [--cache DIR] [--work DIR]
        [--json OUT.json]

``--rounds N`` runs every tool N times, the tools alternating (A B C D, A B C D, ...), and prints per tool the
median over rounds of dTTFT p50 / p99 and of the load-window CPU per request.

docs/peers.md has a measured table and notes on each peer. Loopback only; every run is bounded by ``--timeout`` (seconds per tool, start-up included). The figures are
noisy on a shared machine: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from local_port import free_port, wait_port  # noqa: E402
from peers_parse import PARSERS, Figures, Truth, benchmint_paths, cpu_between, parse_truth  # noqa: E402

SCHEMA_VERSION = 1
TORCH_SPEC = "torch==2.13.0"
ALL_TOOLS = ("benchmint", "guidellm", "aiperf", "inference-perf")
# tool -> (PyPI package, lowest Python it runs on)
PEERS = {"guidellm": ("guidellm", (3, 10)), "aiperf": ("aiperf", (3, 10)), "inference-perf": ("inference-perf", (3, 12))}
MARKER = ".benchmint-peers-installed"


@dataclass
class Outcome:
    tool: str
    status: str  # ok, skipped, failed
    reason: str = ""
    version: str = ""
    figures: Figures | None = None
    truth: Truth | None = None
    cpu_s: float | None = None
    cpu_load_ms_per_req: float | None = None  # the tree's CPU between the first and last arrival, per request
    wall_s: float | None = None
    log: str = ""
    round: int = 0
    paths: dict | None = None  # benchmint only: its added TTFT split into request and response paths


# ---------------------------------------------------------------------------------------------------- installing
def _py_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30).stdout.split()
        return int(out[0]), int(out[1])
    except Exception:
        return None


def find_python(minimum: tuple[int, int], given: str | None) -> str | None:
    cands = [given] if given else []
    cands += [sys.executable] + [shutil.which(n) for n in ("python3", "python3.12", "python3.13", "python3.14")]
    cands += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    for c in cands:
        if c and (v := _py_version(c)) and v >= minimum:
            return c
    return None


def _pip(venv: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], capture_output=True, text=True,
                          timeout=timeout)


def _tail(p: subprocess.CompletedProcess, n: int = 3) -> str:
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return " | ".join(lines[-n:])


def install(tool: str, cache: Path, no_install: bool, python312: str | None) -> tuple[Path | None, str]:
    """The venv of ``tool`` (installed when missing) or None and the reason."""
    pkg, minimum = PEERS[tool]
    venv = cache / tool / "venv"
    if (venv / MARKER).exists():
        return venv, ""
    if no_install:
        return None, f"not installed under {venv} (--no-install given)"
    python = find_python(minimum, python312 if minimum >= (3, 12) else None)
    if python is None:
        return None, f"needs Python >= {minimum[0]}.{minimum[1]}, none found (give --python312 PATH)"
    shutil.rmtree(venv, ignore_errors=True)
    print(f"[{tool}] installing {pkg} into {venv} with {python} ...", flush=True)
    try:
        subprocess.run([python, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        _pip(venv, "install", "-q", "-U", "pip")
        dry = _pip(venv, "install", "--dry-run", "-q", "--report", "-", pkg)
        if dry.returncode != 0:
            raise RuntimeError(f"pip cannot resolve {pkg}: {_tail(dry)}")
        names = {i["metadata"]["name"].lower() for i in json.loads(dry.stdout)["install"]}
        cons = cache / tool / "constraints.txt"
        cons.write_text("")
        if "torch" in names:  # CPU torch first, pinned, so that the tool's resolve cannot pull a CUDA build
            p = _pip(venv, "install", "-q", TORCH_SPEC)
            if p.returncode != 0:
                raise RuntimeError(f"{TORCH_SPEC} did not install: {_tail(p)}")
            q = subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import torch; print(torch.__version__, torch.version.cuda)"],
                               capture_output=True, text=True, timeout=300)
            ver, cuda = (q.stdout.split() + ["?", "?"])[:2]
            if cuda != "None":
                raise RuntimeError(f"the torch installed is a CUDA build ({ver}, CUDA {cuda}); give a CPU index")
            cons.write_text(f"torch=={ver}\n")
        p = _pip(venv, "install", "-q", "-c", str(cons), pkg)
        if p.returncode != 0:
            raise RuntimeError(f"pip install {pkg} failed: {_tail(p)}")
    except Exception as e:  # a failed install leaves nothing behind
        shutil.rmtree(venv, ignore_errors=True)
        return None, f"install failed: {e}"
    (venv / MARKER).write_text(pkg + "\n")
    return venv, ""


def tool_version(venv: Path, pkg: str) -> str:
    p = subprocess.run([str(venv / "bin" / "python"), "-c",
                        f"from importlib.metadata import version; print(version({pkg!r}))"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip()


# ------------------------------------------------------------------------------------------------------ prompts
def write_prompts(work: Path, n: int, tokens: int) -> dict[str, Path]:
    """The same ``n`` prompts (the shipped instruction sample, cycled) in each tool's input format."""
    from benchmint.data import instruct_sample_path

    rows = [json.loads(x) for x in instruct_sample_path().read_text().splitlines() if x.strip()]
    texts = [(r["instruction"] + ("\n" + r["input"] if r.get("input") else "")) for r in rows]
    prompts = [texts[i % len(texts)] for i in range(n)]
    files = {k: work / f"prompts-{k}.jsonl" for k in ("benchmint", "guidellm", "aiperf")}
    with open(files["benchmint"], "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p}) + "\n")
    with open(files["guidellm"], "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt": p, "output_tokens_count": tokens}) + "\n")
    with open(files["aiperf"], "w") as f:
        for p in prompts:
            f.write(json.dumps({"text": p, "output_length": tokens}) + "\n")
    # inference-perf reads ShareGPT-shaped JSON (a list of conversations); the answer sets the output length
    files["inference-perf"] = work / "prompts-inference-perf.json"
    files["inference-perf"].write_text(json.dumps([
        {"id": str(i), "conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": " the" * tokens}]}
        for i, p in enumerate(prompts)]))
    return files


# ------------------------------------------------------------------------------------------------------ commands
def command(tool: str, venv: Path | None, url: str, a: argparse.Namespace, out: Path, prompts: dict[str, Path],
            tokenizer: str) -> tuple[list[str], Path]:
    """The command line that runs ``tool`` and the output file it writes (or a folder to search)."""
    poisson = a.arrivals == "poisson"
    if tool == "benchmint":
        return ([sys.executable, "-m", "benchmint.cli.main", "llm", "bench", "--url", f"{url}/v1", "--model", "tiny",
                 "--scenario", "server" if poisson else "constant", "--rate", str(a.rate), "--duration",
                 str(a.duration), "--dataset", str(prompts["benchmint"]), "--prompt-column", "prompt",
                 "--output-tokens", str(a.tokens), "--seed", "0", "--warmup", "0", "--no-progress", "--quiet",
                 "--out", str(out), "--results", str(out / "store"), "--no-server-metrics"], out / "result.json")
    bin_ = venv / "bin"  # type: ignore[operator]
    if tool == "guidellm":
        report = out / "report.json"
        return ([str(bin_ / "guidellm"), "run",
                 "--backend", f"kind=openai_http,target={url},model=tiny,request_format=/v1/completions",
                 "--profile", f"kind={'poisson' if poisson else 'constant'},rate={a.rate}",
                 "--constraint", f"kind=max_duration,seconds={a.duration:g}",
                 "--data", f"kind=json_file,path={prompts['guidellm']}",
                 "--tokenizer", f"kind=huggingface_auto,model={tokenizer}",
                 "--output", f"kind=json,path={report}", "--disable-console-interactive"], report)
    if tool == "aiperf":
        return ([str(bin_ / "aiperf"), "profile", "--model", "tiny", "--url", url, "--endpoint-type", "completions",
                 "--streaming", "--request-rate", str(a.rate), "--arrival-pattern", a.arrivals,
                 "--benchmark-duration", f"{a.duration:g}", "--benchmark-grace-period", "10",
                 "--input-file", str(prompts["aiperf"]), "--custom-dataset-type", "single_turn",
                 "--output-tokens-mean", str(a.tokens), "--tokenizer", tokenizer, "--artifact-dir", str(out),
                 "--ui-type", "none", "--random-seed", "0"], out)
    if tool == "inference-perf":
        cfg = out / "config.yml"
        cfg.write_text(json.dumps({  # JSON is YAML
            "load": {"type": a.arrivals, "stages": [{"rate": a.rate, "duration": int(math.ceil(a.duration))}],
                     "base_seed": 0},
            "api": {"type": "completion", "streaming": True},
            "server": {"type": "vllm", "model_name": "tiny", "base_url": url, "ignore_eos": True},
            "tokenizer": {"pretrained_model_name_or_path": tokenizer},
            "data": {"type": "shareGPT", "path": str(prompts["inference-perf"])},
            "report": {"request_lifecycle": {"summary": True, "per_stage": False, "per_request": False}},
            "storage": {"local_storage": {"path": str(out / "reports")}},
        }, indent=1))
        return ([str(bin_ / "inference-perf"), "--config_file", str(cfg)], out)
    raise ValueError(tool)


def find_output(tool: str, where: Path) -> Path | None:
    if where.is_file():
        return where
    name = {"aiperf": "profile_export_aiperf.json", "inference-perf": "summary_lifecycle_metrics.json"}.get(tool)
    hits = sorted(where.rglob(name)) if name and where.is_dir() else []
    return hits[-1] if hits else None


# ------------------------------------------------------------------------------------------------------- running
def _tree_cpu(root: psutil.Process) -> float:
    """User + system CPU seconds of ``root`` and its live descendants, plus what each has reaped."""
    total = 0.0
    try:
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return float("nan")
    for p in procs:
        try:
            c = p.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
        except psutil.Error:
            pass
    return total


def run_measured(cmd: list[str], env: dict, log: Path, timeout_s: float) -> dict:
    """Run ``cmd`` in its own session. Returns exit status ``rc``, ``cpu_s`` (user + system of its whole process
    tree: ``os.wait4``'s figure, the child plus every descendant it waited for), ``wall_s``, ``timed_out`` and
    ``samples``: (``time.monotonic_ns()``, CPU seconds of the tree so far) every 0.1 s while it runs."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                             cwd=log.parent)
    root = psutil.Process(p.pid)
    timed_out, done = threading.Event(), threading.Event()
    samples: list[tuple[int, float]] = []

    def sample() -> None:
        while not done.wait(0.1):
            v = _tree_cpu(root)
            if v == v:  # not nan
                samples.append((time.monotonic_ns(), v))
            if time.monotonic() - t0 > timeout_s and not timed_out.is_set():
                timed_out.set()
                for sig in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(p.pid, sig)
                    except ProcessLookupError:
                        break
                    if done.wait(5):
                        break

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        done.set()
        th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    try:  # helpers the tool left running in its session (the tool has exited: they are orphans)
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"rc": p.returncode, "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": time.monotonic() - t0,
            "timed_out": timed_out.is_set(), "samples": samples}


def run_tool(tool: str, venv: Path | None, a: argparse.Namespace, work: Path, prompts: dict[str, Path],
             tokenizer: str, env: dict, rnd: int = 0) -> Outcome:
    out = work / (f"{tool}-r{rnd}" if a.rounds > 1 else tool)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    port = free_port()
    truth_log = out / "truth.jsonl"
    if a.server == "builtin":  # benchmint's own server over the tiny model, logging its own per-request times
        srv_cmd = [sys.executable, "-m", "benchmint.cli.main", "llm", "serve", "--model", "tiny", "--port", str(port),
                   "--request-log", str(truth_log)]
    else:
        srv_cmd = [sys.executable, str(ROOT / "benchmarks" / "mock_openai_server.py"), "--port", str(port), "--log",
                   str(truth_log), "--tokens", str(a.tokens), "--itl-ms", str(a.itl_ms), "--ttft-ms", str(a.ttft_ms),
                   "--model", "tiny", "--loop", "asyncio"]
    with open(out / "server.log", "w") as slog:  # a file, not a pipe nobody reads: a chatty server never blocks
        server = subprocess.Popen(srv_cmd, stdout=slog, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1"))
    o = Outcome(tool, "failed", log=str(out / "tool.log"), round=rnd)
    try:
        wait_port(port, server, timeout_s=120.0)  # the built-in server loads its model first
        cmd, where = command(tool, venv, f"http://127.0.0.1:{port}", a, out, prompts, tokenizer)
        print(f"[{tool}] running for {a.duration:g} s at {a.rate:g} req/s ...", flush=True)
        if tool != "benchmint":  # a peer's venv sees nothing of this tree
            env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        if tool == "aiperf":  # aiperf 0.13 in offline mode takes a local tokenizer folder for a hub repo id
            env = {k: v for k, v in env.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
        m = run_measured(cmd, env, out / "tool.log", a.timeout)
        rc, o.cpu_s, o.wall_s, timed_out = m["rc"], m["cpu_s"], m["wall_s"], m["timed_out"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if truth_log.exists():
        o.truth = parse_truth(truth_log)
        t = o.truth
        if t.requests > 1 and t.first_in_ns is not None and t.last_in_ns is not None:
            c = cpu_between(m["samples"], t.first_in_ns, t.last_in_ns)
            o.cpu_load_ms_per_req = None if c is None else 1e3 * c / (t.requests - 1)
    found = find_output(tool, where)
    if found is None:
        tail = " | ".join((out / "tool.log").read_text(errors="replace").strip().splitlines()[-3:])[-400:]
        o.reason = (f"timed out after {a.timeout:g} s" if timed_out else f"exit {rc}") + f", no output file: {tail}"
        return o
    try:
        o.figures = PARSERS[tool](found)
    except Exception as e:  # an output format this parser does not know
        o.reason = f"could not read {found.name}: {type(e).__name__}: {e}"
        return o
    o.status = "ok"
    if tool == "benchmint" and (out / "requests.parquet").exists() and truth_log.exists():
        try:
            o.paths = benchmint_paths(out / "requests.parquet", truth_log)
        except Exception as e:  # the split is an extra: its failure never costs the tool's figures
            print(f"[{tool}] no request/response split: {type(e).__name__}: {e}", flush=True)
    if rc != 0 or timed_out:
        o.reason = "timed out" if timed_out else f"exit {rc} (output read)"
    return o


# ------------------------------------------------------------------------------------------------------ printing
def _f(v: float | None, w: int = 7, d: int = 2) -> str:
    return f"{v:{w}.{d}f}" if v is not None else f"{'-':>{w}}"


def _d(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _median(xs: list[float | None]) -> float | None:
    v = sorted(x for x in xs if x is not None)
    return None if not v else (v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2)


def summary(outcomes: list[Outcome]) -> str:
    """Per tool, the median over rounds of dTTFT p50 / p99 and of the load-window CPU per request."""
    lines = [f"{'median over rounds':<20} {'rounds':>6} {'dTTFT p50':>9} {'p99':>8} {'load ms/req':>11}"]
    for tool in dict.fromkeys(o.tool for o in outcomes):
        ok = [o for o in outcomes if o.tool == tool and o.figures is not None and o.truth is not None]
        if not ok:
            continue
        d50 = _median([_d(o.figures.ttft_p50, o.truth.figures.ttft_p50) for o in ok])  # type: ignore[union-attr]
        d99 = _median([_d(o.figures.ttft_p99, o.truth.figures.ttft_p99) for o in ok])  # type: ignore[union-attr]
        lines.append(f"{tool:<20} {len(ok):>6} {_f(d50, 9)} {_f(d99, 8)} "
                     f"{_f(_median([o.cpu_load_ms_per_req for o in ok]), 11)}")
    return "\n".join(lines)


def table(outcomes: list[Outcome]) -> str:
    head = (f"{'tool':<16} {'done':>6} {'fail':>5} {'req/s':>7} {'TTFT p50':>8} {'p99':>7} {'dTTFT p50':>9} "
            f"{'p99':>7} {'TPOT p50':>8} {'p99':>7} {'ITL p50':>7} {'p99':>7} {'CPU s':>6} {'ms/req':>7} {'load ms/req':>11}")
    lines = [head, "-" * len(head)]
    for o in outcomes:
        name = o.tool + (f" #{o.round + 1}" if any(x.round for x in outcomes) else "")
        if o.figures is None:
            lines.append(f"{name:<16} {o.status}: {o.reason}")
            continue
        f, t = o.figures, (o.truth.figures if o.truth else Figures())
        per = 1e3 * o.cpu_s / f.completed if o.cpu_s is not None and f.completed else None
        lines.append(
            f"{name:<16} {f.completed if f.completed is not None else '-':>6} "
            f"{f.failed if f.failed is not None else '-':>5} {_f(f.rate, 7, 1)} {_f(f.ttft_p50, 8)} {_f(f.ttft_p99)} "
            f"{_f(_d(f.ttft_p50, t.ttft_p50), 9)} {_f(_d(f.ttft_p99, t.ttft_p99))} {_f(f.tpot_p50, 8)} "
            f"{_f(f.tpot_p99)} {_f(f.itl_p50)} {_f(f.itl_p99)} {_f(o.cpu_s, 6, 1)} {_f(per, 7)} "
            f"{_f(o.cpu_load_ms_per_req, 11)}"
            + (f"  ({o.reason})" if o.reason else ""))
        if o.paths:
            p = o.paths
            lines.append(f"{'  paths':<16} request (send -> server read) p50 {_f(p['request_ms_p50'], 0)} p99 "
                         f"{_f(p['request_ms_p99'], 0)}; response (server's first write -> first token) p50 "
                         f"{_f(p['response_ms_p50'], 0)} p99 {_f(p['response_ms_p99'], 0)} ({p['matched']} paired)")
        if o.truth:
            lines.append(
                f"{'  server truth':<16} {t.completed:>6} {t.failed:>5} {_f(o.truth.arrival_rate, 7, 1)} "
                f"{_f(t.ttft_p50, 8)} {_f(t.ttft_p99)} {'':>9} {'':>7} {_f(t.tpot_p50, 8)} {_f(t.tpot_p99)} "
                f"{_f(t.itl_p50)} {_f(t.itl_p99)}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second (every tool)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of load per tool")
    ap.add_argument("--arrivals", choices=("poisson", "constant"), default="poisson")
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma list of " + ", ".join(ALL_TOOLS))
    ap.add_argument("--tokens", type=int, default=16, help="streamed chunks (tokens) per answer; max_tokens")
    ap.add_argument("--itl-ms", type=float, default=2.0, help="server: time between chunks")
    ap.add_argument("--ttft-ms", type=float, default=0.0, help="server: delay before the first chunk")
    ap.add_argument("--server", choices=("mock", "builtin"), default="mock",
                    help="mock: benchmarks/mock_openai_server.py --log (answers in --itl-ms steps, no model: the client's own "
                         "cost shows); builtin: `benchmint llm serve --model tiny --request-log` (a real engine "
                         "on these cores, its own per-request times as the truth)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/benchmint-peers"), help="where the venvs live")
    ap.add_argument("--no-install", action="store_true", help="use the venvs present; skip a missing tool")
    ap.add_argument("--python312", default=None, help="a Python >= 3.12 for inference-perf")
    ap.add_argument("--rounds", type=int, default=1, help="runs per tool, the tools alternating; medians printed")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per tool run (default: duration + 300)")
    ap.add_argument("--work", default=None, help="folder for prompts, outputs and logs (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the figures here (JSON)")
    a = ap.parse_args()
    tools = [t.strip() for t in a.tools.split(",") if t.strip()]
    bad = [t for t in tools if t not in ALL_TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {bad}: choose from {', '.join(ALL_TOOLS)}")
    if a.rounds < 1 or a.rate <= 0 or a.duration <= 0:
        ap.error("--rounds must be >= 1, --rate and --duration > 0")
    a.timeout = a.timeout or a.duration + 300
    cache = Path(a.cache)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="benchmint-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    env.pop("VIRTUAL_ENV", None)
    from benchmint.models.tiny_llm import tiny_llm_path

    tokenizer = str(tiny_llm_path())
    prompts = write_prompts(work, int(a.rate * a.duration * 1.5) + 100, a.tokens)
    print(f"cpus: {os.cpu_count()}, load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{a.arrivals} arrivals at {a.rate:g} req/s for {a.duration:g} s per tool; server: {a.tokens} chunks "
          f"{a.itl_ms:g} ms apart, first after {a.ttft_ms:g} ms; work folder {work}", flush=True)
    outcomes: list[Outcome] = []
    ready: dict[str, Path | None] = {}
    for tool in tools:
        if tool == "benchmint":
            ready[tool] = None
            continue
        venv, why = install(tool, cache, a.no_install, a.python312)
        if venv is None:
            print(f"[{tool}] skipped: {why}", flush=True)
            outcomes.append(Outcome(tool, "skipped", why))
        else:
            ready[tool] = venv
    versions = {t: tool_version(v, PEERS[t][0]) if v else "this tree" for t, v in ready.items()}
    for rnd in range(a.rounds):  # the tools alternate: A B C D, A B C D, ...
        for tool, venv in ready.items():
            try:
                o = run_tool(tool, venv, a, work, prompts, tokenizer, env, rnd)
            except Exception as e:
                o = Outcome(tool, "failed", f"{type(e).__name__}: {e}", round=rnd)
            o.version = versions[tool]
            outcomes.append(o)
            print(f"[{tool}] {o.status}" + (f": {o.reason}" if o.reason else "") + f" (log {o.log})", flush=True)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; times in ms; dTTFT = tool TTFT "
          "- server TTFT at the same percentile; req/s: the tool's achieved rate (server truth row: arrival rate)")
    print(table(outcomes))
    if a.rounds > 1:
        print(summary(outcomes))
    if versions:
        print("versions: " + ", ".join(f"{t} {v}" for t, v in versions.items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"schema_version": SCHEMA_VERSION, "args": vars(a),
                                            "load_average": os.getloadavg(),
                                            "tools": [asdict(o) for o in outcomes]}, indent=1, default=str))


if __name__ == "__main__":
    main()
