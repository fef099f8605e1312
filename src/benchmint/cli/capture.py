"""Capture an execution trace and a Kineto trace of chosen steps of a Python training or inference loop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer
from rich.markup import escape

from benchmint.cli.common import ResultsOpt, console, interrupted_exit, state
from benchmint.core.errors import UserError

HELP = "\n\n".join((
    "Capture an execution trace and a Kineto trace of chosen steps of a Python training or inference loop.",
    "Usage: benchmint capture --out DIR -- python train.py [ARGS...]   (or -- python -m module [ARGS...])",
    "Steps end at each optimizer.step() (no change to a training script), or where the script calls "
    "benchmint.trace.capture.step() (add that one line to an inference loop). After --warmup steps, --measure "
    "steps are timed with nothing attached (capture.json holds their median: the step's real time), --discard "
    "steps are recorded and thrown away, then --record steps are recorded with ET + Kineto. A bare `python` runs "
    "the interpreter benchmint runs in; name another interpreter by its path.",
    "Under torchrun (torchrun --nproc-per-node N -m benchmint capture --out DIR -- python train.py) each rank "
    "writes DIR/rankR/, which `benchmint replay DIR --ranks N` (or the same under torchrun) replays. Or capture "
    "a built-in example: benchmint capture --out DIR --workload NAME.",
))


def _exists(script: str) -> None:
    """The script the command runs, checked before anything starts (Python's own refusal would come back as the
    wrapper's traceback)."""
    if not Path(script).is_file():
        raise UserError(f"capture: {script}: no such script" + (" (a folder)" if Path(script).is_dir() else ""))


# the script's process starts here: Ctrl-C before the script runs (while torch and benchmint load) ends it with
# 130 and no traceback of benchmint's own (BENCHMINT_DEBUG keeps it); the script itself gets Python's own
# handler back (trace/capture.py _main), so its KeyboardInterrupt is as without benchmint
BOOT = ("import os, signal, sys\n"
        "sys.path[0] = os.getcwd()\n"  # as -m has it (-c leaves '', which a later os.chdir moves)
        "h = signal.getsignal(signal.SIGINT)\n"
        "if h is signal.default_int_handler and not os.environ.get('BENCHMINT_DEBUG'):\n"
        "    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))\n"
        "from benchmint.trace import capture\n"
        "capture._main(sys.argv[1:], sigint=h)")


def _wrap(cmd: list[str]) -> list[str]:
    """``python [flags] script.py args`` -> ``python [flags] -c BOOT script.py args`` (:data:`BOOT` runs
    ``benchmint.trace.capture``'s entry point)."""
    if not cmd:
        raise UserError("capture: give the command to run after --, e.g. -- python train.py")
    exe = cmd[0]
    if exe.startswith("-"):  # an option capture does not have, before the command (`--warmpu 3 -- python ...`)
        raise UserError(f"capture: no such option: {exe}; see benchmint capture --help (the command to capture "
                        "goes after --)")
    if exe.endswith(".py"):
        _exists(exe)
        return [sys.executable, "-c", BOOT, *cmd]
    if not Path(exe).name.startswith("python"):
        raise UserError(f"capture: {exe!r} is not a Python interpreter; run `-- python script.py ...` "
                        "(or `-- python -m module ...`)")
    i = 1
    while i < len(cmd) and cmd[i].startswith("-") and cmd[i] != "-m":
        i += 2 if cmd[i] in ("-W", "-X", "-Q") else 1  # (a flag whose value is the next word: -W ignore)
    if i >= len(cmd):
        raise UserError("capture: no script or -m module in the command; e.g. -- python train.py")
    if cmd[i] != "-m":
        _exists(cmd[i])
    if exe in ("python", "python3"):
        # a bare `python` means "the Python I am using": the one benchmint runs in, which has benchmint and
        # its dependencies (the first `python` on PATH may be another interpreter that has neither)
        exe = sys.executable
    return [exe, *cmd[1:i], "-c", BOOT, *cmd[i:]]


def capture(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Folder for et.json, kineto.json and capture.json."),
    warmup: int = typer.Option(10, "--warmup", help="Steps run first with nothing attached."),
    measure: int = typer.Option(10, "--measure", help="Steps timed without observers (at least 5)."),
    record: int = typer.Option(None, "--record", help="Steps recorded with ET + Kineto (default 1; with --every: "
                               "until the script ends, or 3 for --workload)."),
    every: int = typer.Option(None, "--every", help="Record one step in every N of a long job, each in its own "
                              "iteration folder (DIR/iter_<step>), until --record recordings or the job's end."),
    discard: int = typer.Option(1, "--discard", help="Steps recorded first and thrown away: the first recording "
                                "in a process pays the observers' one-time costs for every op it sees first."),
    workload: str = typer.Option(None, "--workload", help="Capture a built-in example instead of a script: "
                                 "decoder_infer, encoder_cls, encoder_decoder, transformer_train, cnn_train, "
                                 "bilstm, embbag_train, moe, small_transformer."),
    threads: int = typer.Option(None, "--threads", help="Intra-op threads of the step (default: torch's): "
                                 "torch.set_num_threads for --workload, OMP_NUM_THREADS for a command (a script that "
                                 "sets its own thread count keeps it; capture.json records the count the step ran with)."),
    results: Path = ResultsOpt,
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the run to the results store."),
    timeout: float = typer.Option(None, "--timeout", help="Under torchrun: fail this rank (and so the job) when "
                                  "its script makes no progress for this many seconds in a step, in the "
                                  "recording's start or stop, or at its end (its peers gone or stuck) "
                                  "(default 300; 0: wait as long as torch's own timeouts)."),
    force: bool = typer.Option(False, "--force", help="Capture into a folder that holds an earlier capture, "
                               "removing that capture's files first (et.json, kineto.json, capture.json, run.json, "
                               "iter_*/)."),
) -> None:
    """Capture an execution trace and a Kineto trace of chosen steps of a Python training or inference loop.

    Usage: benchmint capture --out DIR -- python train.py [ARGS...]

    Under torchrun (`torchrun --nproc-per-node N -m benchmint capture --out DIR -- python train.py`) each rank
    writes DIR/rankR/, which `benchmint replay DIR --ranks N` (or the same under torchrun) replays. A rank
    whose script makes no progress for --timeout seconds (a step's collectives waiting on peers that are gone)
    fails in one line naming the rank and where it waited, with its threads' stacks in DIR/rankR/.

    The script runs under a wrapper that starts the capture. Steps end at each optimizer.step() (no change
    to a training script), or where the script calls benchmint.trace.capture.step() (add that one line to an
    inference loop). After --warmup steps, --measure steps are timed with nothing attached (capture.json holds
    their median: the step's real time), --discard steps are recorded and thrown away, then --record steps are
    recorded with ET + Kineto. A bare `python`
    runs the interpreter benchmint runs in; name another interpreter by its path.
    """
    from benchmint.core.jsonio import read_json
    from benchmint.trace import capture as cap_mod

    cmd = list(ctx.args)
    if every is not None and every < 2:
        raise UserError(f"capture: --every {every}: give N >= 2 (one step recorded in every N)")
    if record is None:
        record = 1 if every is None else (3 if workload is not None else 1 << 40)
    if workload is None and not cmd:
        raise UserError("capture: give a command after -- (e.g. -- python train.py) or --workload NAME")
    if workload is not None and cmd:  # ctx.args holds the unknown options too (--device cuda was captured on cpu)
        raise UserError(f"capture: --workload {workload} runs a built-in step and takes no command or other option "
                        f"(got: {' '.join(cmd)}); see benchmint capture --help")
    # checked here, not only in the script's process: there they failed with a traceback after the script started
    if record < 1:
        raise UserError(f"capture: --record {record} must be 1 or more")
    if warmup < 0:
        raise UserError(f"capture: --warmup {warmup} must be 0 or more")
    if measure < cap_mod.MIN_MEASURE:
        raise UserError(f"capture: --measure {measure} is too few; use at least {cap_mod.MIN_MEASURE}")
    if out.exists() and not out.is_dir():
        raise UserError(f"capture: --out {out} is a file; give a folder for the capture")
    if discard < 0:
        raise UserError(f"capture: --discard {discard} must be 0 or more")
    if threads is not None and threads < 1:
        raise UserError(f"capture: --threads {threads} must be 1 or more")
    if timeout is not None and timeout < 0:
        raise UserError(f"capture: --timeout {timeout:g} must be 0 (no bound) or more seconds")
    out = out.resolve()
    from benchmint.replay.rank_env import rank_of_environ

    rank_world = rank_of_environ()  # under torchrun (capture needs no rendezvous: RANK and WORLD_SIZE only)
    if rank_world is not None and rank_world[1] > 1:
        if every is not None:  # DIR/rankR/iter_N would not be a set of rank folders a multi-rank replay reads
            raise UserError(f"capture: --every records one step in every N of one process; under torchrun "
                            f"(WORLD_SIZE={rank_world[1]}) capture single steps (leave out --every)")
        out = out / f"rank{rank_world[0]}"  # one capture folder per rank, as a multi-rank replay reads them
    wrapped = _wrap(cmd) if workload is None else None  # the command's checks before --force removes anything
    _fresh(out, force)
    rc = 0  # the command's exit status
    if workload is not None:
        import torch

        from benchmint.models.workloads import build

        if threads is not None:
            torch.set_num_threads(threads)
        w = build(workload)
        summary = cap_mod.capture_steps(w.step, out, warmup=warmup, measure=measure, record=record, model=w.model,
                                        discard=discard, every=every)
    else:
        env = dict(os.environ)
        env.update({cap_mod.ENV_OUT: str(out), cap_mod.ENV_WARMUP: str(warmup), cap_mod.ENV_MEASURE: str(measure),
                    cap_mod.ENV_RECORD: str(record), cap_mod.ENV_DISCARD: str(discard), cap_mod.ENV_CMD: "\x1f".join(cmd)})
        if every is not None:
            env[cap_mod.ENV_EVERY] = str(every)
        if threads is not None:  # torch takes its intra-op thread count from this at start
            env["OMP_NUM_THREADS"] = str(threads)
        if state.debug:  # the script keeps its own traceback on Ctrl-C too
            env["BENCHMINT_DEBUG"] = "1"
        # the wrapper module must be importable by the interpreter the user named
        pkg_root = str(Path(cap_mod.__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pkg_root, env.get("PYTHONPATH", "")) if p)
        cj = out / cap_mod.CAPTURE_NAME
        try:
            rc = _run(wrapped, env, out, rank_world, timeout)
        except KeyboardInterrupt:
            # Ctrl-C is how a long job under --every ends (and a script may train on after its capture): what was
            # captured whole is reported and stored before the interrupt ends the command
            summary = read_json(cj) if cj.exists() else {}
            if not summary.get("complete"):
                raise
            _report(out, summary, warmup, measure, 0)
            _store(out, summary, results, no_store, workload, rank_world)
            kept = (f"{len(summary['iterations'])} iteration folders" if summary.get("iterations") else "the capture")
            console.print(f"[yellow]stopped by Ctrl-C after the capture was complete: {kept} in {escape(str(out))} "
                          "whole and kept[/]", highlight=False)
            raise interrupted_exit() from None
        if not cj.exists():
            raise UserError(f"capture: {' '.join(cmd)} finished without starting a capture (exit status {rc}); "
                            "is it a Python script?")
        summary = read_json(cj)
        if rc != 0 and not summary.get("complete"):
            # the script failed before the capture was done: that, not the step count, is the news
            raise UserError(f"capture: {' '.join(cmd)} failed (exit status {rc}) after "
                            f"{summary.get('measured_steps', 0)} timed and {summary.get('recorded_steps', 0)} "
                            f"recorded steps; see its output above (partial capture.json left in {out})")
    _report(out, summary, warmup, measure, (record if every is None else every) + (discard + 1 if discard else 0))
    _store(out, summary, results, no_store, workload, rank_world)
    lost = _lost(out / (summary["iterations"][0] if summary.get("iterations") else "") / "et.json")
    if lost:  # after the capture is stored: nothing here may cost the user the capture
        console.print(f"[yellow]{escape(lost)}[/]", highlight=False)
    if rc != 0:
        # the capture is whole and kept, but the job failed: the command's status is benchmint's, for CI
        why = summary.get("ended_why")
        console.print(f"[yellow]the command exited with status {_status(rc)}"
                      f"{f' ({escape(why)})' if why and summary.get('ended') != 'exit' else ''} after the capture was "
                      f"complete; the capture in {escape(str(out))} is whole and kept[/]", highlight=False)
        if _status(rc) == 130:  # the script ended by Ctrl-C on its own: said above, not again as "interrupted"
            raise interrupted_exit()
        raise typer.Exit(_status(rc))


def _status(rc: int) -> int:
    """A child's exit status as a shell reports it: killed by signal N is 128 + N."""
    return 128 - rc if rc < 0 else rc


_CAPTURE_FILES = ("et.json", "kineto.json", "capture.json", "run.json")


def _fresh(out: Path, force: bool) -> None:
    """Refuse a folder that holds an earlier capture (its iteration folders or files would sit beside the new
    one's, and a replay of the folder would mix the two), unless ``force``: then that capture's files go."""
    if not out.is_dir():
        return
    old = [p for p in out.iterdir() if p.name in _CAPTURE_FILES or (p.is_dir() and p.name.startswith("iter_"))
           or (p.is_dir() and p.name.startswith("rank") and p.name[4:].isdigit())]
    if not old:
        return
    names = ", ".join(sorted(p.name + ("/" if p.is_dir() else "") for p in old)[:5])
    if not force:
        raise UserError(f"capture: {out} holds an earlier capture ({names}); choose another --out, or pass --force "
                        "to remove it first")
    import shutil

    for p in old:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


INTERRUPT_GRACE_S = 30.0  # after Ctrl-C, how long the script may take to write its capture.json and exit


def _run(argv: list[str], env: dict[str, str], out: Path, rank_world: tuple[int, int] | None,
         timeout: float | None) -> int:
    """Run the wrapped script; under torchrun with more than one rank, watched so that a rank whose script
    waits on its peers for longer than ``timeout`` fails in one line instead of hanging
    (:mod:`benchmint.trace.rank_watch`)."""
    from benchmint.trace import rank_watch

    timeout_s = rank_watch.DEFAULT_TIMEOUT_S if timeout is None else timeout
    if rank_world is None or rank_world[1] <= 1 or timeout_s == 0:
        proc = subprocess.Popen(argv, env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # the script has the Ctrl-C too: let it finish what it writes on its way out (its capture.json, or
            # the removal of a recording it was writing) rather than kill it at once, as subprocess.call would
            try:
                proc.wait(timeout=INTERRUPT_GRACE_S)
            except (KeyboardInterrupt, subprocess.TimeoutExpired):  # a second Ctrl-C, or stuck: now
                proc.kill()
                proc.wait()
            raise
    import signal

    from benchmint.trace.capture import scratch_dir

    beacon = rank_watch.new_file("benchmint-beacon-", rank_watch.SIZE, scratch_dir())
    stacks = rank_watch.new_file("benchmint-stacks-", 0, scratch_dir())
    env = {**env, rank_watch.ENV_BEACON: beacon, rank_watch.ENV_STACKS: stacks}
    # torchrun stops the ranks with SIGTERM when one fails: exit through the clean-up below (the script, in
    # this process's group, has the signal too), not at once, which would leave the two files behind
    old_term = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        proc = subprocess.Popen(argv, env=env)
        try:
            return rank_watch.watch(proc, beacon, timeout_s, stacks, out / rank_watch.STACKS_NAME)
        except rank_watch.RankStuck as e:
            where = f"; its threads' stacks are in {e.stacks}" if e.stacks else ""
            why = (f"the recorder is stuck (or it takes longer than --timeout {timeout_s:g})"
                   if e.stage in (rank_watch.RECORD_START, rank_watch.RECORD_STOP) else
                   f"the other ranks are gone or stuck (or the step is slower than --timeout {timeout_s:g})")
            raise UserError(f"capture: rank {rank_world[0]} of {rank_world[1]} made no progress for "
                            f"{e.waited_s:.0f} s {rank_watch.describe(e.stage, e.step)}: {why}; stopped "
                            f"it{where}") from None
        finally:
            if proc.poll() is None:  # interrupted (Ctrl-C): the script does not outlive its capture command
                proc.kill()
                proc.wait()
    finally:
        signal.signal(signal.SIGTERM, old_term)
        for f in (beacon, stacks):
            Path(f).unlink(missing_ok=True)


def _report(out: Path, s: dict, warmup: int, measure: int, record: int) -> None:
    files = s.get("files", {})
    if not s.get("complete") or ("et" not in files and not s.get("iterations")):
        need = warmup + measure + record  # record: all steps after the measured ones (discarded ones included)
        raise UserError(f"capture: only {s.get('measured_steps', 0)} steps were timed and "
                        f"{s.get('recorded_steps', 0)} recorded (needs {need} steps); run more steps, or mark "
                        "each step with benchmint.trace.capture.step()")
    from benchmint.core.stats import noise_note

    st = s["step_time_s"]
    if s.get("iterations"):
        its = s["iterations"]
        console.print(f"captured {s['recorded_steps']} step(s), one in every {s['every']}, into {out}: "
                      f"{', '.join(its[:4])}{' ...' if len(its) > 4 else ''} (each: et.json, kineto.json, "
                      "capture.json); capture.json")
    else:
        console.print(f"captured {s['recorded_steps']} step(s) into {out}: et.json, kineto.json, capture.json")
    console.print(f"step time without observers: median {st['median'] * 1e3:.3f} ms over {st['n']} steps "
                  f"(p10 {st['p10'] * 1e3:.3f}, p90 {st['p90'] * 1e3:.3f}); {s['threads']} thread{'s' if s['threads'] != 1 else ''}, "
                  f"{s['device']}{noise_note(st)}")
    for line in cost_lines(s.get("recording_cost"), s.get("every")):
        console.print(line, highlight=False)
    if s.get("note"):
        console.print(f"[yellow]{s['note']}[/]")


def _lost(et: Path) -> str | None:
    """What the recording lost of the step (trace/damage.py), said at capture time rather than found by the
    first replay; None when nothing was lost or the trace cannot be read (the replay says why)."""
    from benchmint.trace import damage, load

    try:
        return damage.find(load(et))
    except Exception:  # noqa: BLE001 - a warning's failure must not fail a capture that was made and stored
        return None


def cost_lines(c: dict | None, every: int | None = None) -> list[str]:
    """What recording cost, in words: the recorded step against the un-observed one, and the un-observed
    steps with the recorder idle against those before it was attached."""
    if not c or not c.get("unobserved_step_s"):
        return []
    base = c["unobserved_step_s"]
    out = []
    if c.get("recorded_step_s"):
        out.append(f"recording cost: the recorded step took {c['recorded_step_s'] * 1e3:.3f} ms, "
                   f"{c['recorded_vs_unobserved']:.2f}x the un-observed step ({base * 1e3:.3f} ms)"
                   + (f"; writing its traces paused the loop {c['write_s'] * 1e3:.1f} ms" if c.get("write_s")
                      else ""))
    if c.get("after_recording_vs_unobserved"):
        xs = c["after_recording_vs_unobserved"]
        out.append(f"after each recording: the next {len(xs)} step{'s' if len(xs) > 1 else ''} took "
                   + ", ".join(f"{x:.2f}x" for x in xs) + " the un-observed step (any pause of the loop slows the "
                   "steps after it; set apart from the idle recorder's figure)")
    if c.get("idle_step_s") is None:
        out.append("recorder idle: not measured (" + (f"every un-observed step after the first recording came right "
                                                      f"after one: record less often than --every {every}"
                                                      if every and c.get("after_recording_steps")
                                                      else "the job ended with the recording") + ")")
    else:
        small = abs(c["idle_vs_unobserved"]) <= 0.02
        verdict = ("a measurable difference (the observers are off on these steps: it is what the recordings "
                   "left in the process, or the machine's drift; benchmarks/capture_cost.py alternates the two "
                   "sides to tell)" if c.get("idle_cost_measurable")
                   else "too few steps to judge" if c.get("idle_cost_measurable") is None
                   else "no measurable cost" if small
                   else "not significant against the noise of these steps")
        # three digits: 0.0539 shown as "p=0.05: not significant" read as a contradiction of the p < 0.05 rule
        p = f", p={c['idle_p_value']:.3f}" if c.get("idle_p_value") is not None else ""
        out.append(f"recorder idle: un-observed steps after it was attached took {c['idle_step_s'] * 1e3:.3f} ms "
                   f"({c['idle_vs_unobserved'] * 100:+.1f}% against before it, {c['idle_steps']} vs "
                   f"{c['unobserved_steps']} steps{p}): {verdict}")
    return out


def _store(out: Path, s: dict, results: Path | None, no_store: bool, workload: str | None,
           rank_world: tuple[int, int] | None = None) -> None:
    import msgspec

    from benchmint.results.models import CaptureMetrics, Timing
    from benchmint.results.record import RunRecord

    rec = RunRecord(
        kind="capture",
        config={"warmup": s["warmup_steps"], "measured_steps": s["measured_steps"],
                "recorded_steps": s["recorded_steps"], "discarded_steps": s.get("discarded_steps", 0),
                "workload": workload, "command_line": s["command_line"],
                **({"rank": rank_world[0], "world_size": rank_world[1]} if rank_world and rank_world[1] > 1 else {})},
        metrics=CaptureMetrics(
            step_time_s=msgspec.convert({k: v for k, v in s["step_time_s"].items() if k != "values"}, Timing),
            recorded_step_time_s=s["recorded_step_time_s"], how_measured=s["how_measured"], threads=s["threads"],
            device=s["device"], recording_cost=s.get("recording_cost"), every=s.get("every"),
            iterations=s.get("iterations")),
        workload={"model_name": workload} if workload else {"command_line": s["command_line"]},
        system=s.get("host", {}),
        artifacts={k: v for k, v in s.get("files", {}).items()} | {"capture": "capture.json"},
    )
    from benchmint.results.save import save_run

    save_run(rec, out, store=results, append=not no_store)
