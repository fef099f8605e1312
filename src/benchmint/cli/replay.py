"""Replay an execution trace as a standalone benchmark and report its fidelity to the original step."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from benchmint.cli.common import ResultsOpt, console, err_console, state
from benchmint.core.stats import noise_note
from benchmint.replay.console import fidelity_line, fmt_s
from benchmint.replay.headline import (
    compiled_line,
    damage_line,
    kineto_line,
    pace_change,
    retyped_line,
    threads_line,
)
from benchmint.trace.lookups import NAMES


def replay(
    trace: Path = typer.Argument(..., help="Execution trace (.json, .json.gz, .tar.gz) or a capture folder."),
    kineto: Path = typer.Option(None, "--kineto", help="Kineto trace of the same step (default: kineto.json "
                                "beside an et.json)."),
    device: str = typer.Option(None, "--device", help="cpu or cuda[:N] (default: the trace's device when "
                               "available, else cpu); recorded devices are remapped."),
    threads: int = typer.Option(None, "--threads", help="Intra-op threads (default: capture.json's, else "
                                "torch's default)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed iterations first."),
    iters: int = typer.Option(20, "--iters", help="Timed iterations."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic tensor contents."),
    gaps: str = typer.Option(None, "--gaps", help="recorded: also reproduce the CPU time between ops "
                             "(needs Kineto); none: ops back to back. Default: recorded when Kineto is there."),
    target: str = typer.Option("auto", "--target", help="What recorded gaps aim at: capture (capture.json's "
                               "measured step time), estimate (estimated from the trace, the observers' cost measured "
                               "here), cpu (capture.json's CPU time per un-observed step; the wall time is "
                               "then the check: for ranks sharing cores), auto (capture.json when present)."),
    iteration: int = typer.Option(None, "--iteration", help="Replay ProfilerStep#N (default: the last one)."),
    save_gaps: Path = typer.Option(None, "--save-gaps", help="Write the CPU work this replay settled between "
                                   "its ops to this file, for --gaps-from or benchmint export --gaps-from."),
    gaps_from: Path = typer.Option(None, "--gaps-from", help="Spend the CPU work between ops that an earlier "
                                   "replay settled (its --save-gaps file) instead of calibrating it here: the same "
                                   "work between the same ops, so two runs differ only by their ops and machine."),
    index_spread: str = typer.Option("auto", "--index-spread", help="How the made-up indices of lookups "
                                     f"({NAMES}) are spread; the trace records their shape, not their values. "
                                     "auto: as many distinct rows as the original touched where its "
                                     "capture.json has an index sketch (benchmint capture), else uniform unless "
                                     "the recorded lookup times clearly say otherwise; uniform; zipf:E (a few "
                                     "hot rows, as real categorical features and token ids have; zipf:1.05 is "
                                     "typical). Where auto had to guess, the replay times the step over uniform "
                                     "and zipf:1.05 indices and says how much the guess moves it."),
    report: bool = typer.Option(False, "--report", help="Print original vs replayed time per op type and the "
                                "largest contributors to the error."),
    json_path: Path = typer.Option(None, "--json", help="Write the result as JSON here."),
    min_coverage: float = typer.Option(None, "--min-coverage", help="Exit 1 (after writing results) when "
                                       "coverage by count is below this fraction."),
    out: Path = typer.Option(None, "--out", help="Folder for run.json (default: replay-out/<run id>)."),
    results: Path = ResultsOpt,
    no_store: bool = typer.Option(False, "--no-store", help="Do not append the run to the results store."),
    ranks: int = typer.Option(None, "--ranks", help="Replay a multi-rank trace (an archive of one trace per "
                              "rank, or a folder of rank0/, rank1/... capture folders) with N processes on this "
                              "machine, its collectives on a real process group (gloo; NCCL with --device cuda "
                              "and a GPU per rank). N must equal the trace's ranks; a single trace is replayed "
                              "by every rank. --threads is per rank (default 1). Across hosts, run "
                              "`torchrun --nnodes M --nproc-per-node N ... -m benchmint replay TRACE` instead."),
    mode: str = typer.Option("full", "--mode", help="What to replay of the step: full, compute (without its "
                             "collectives) or comm (its collectives alone); each compared with that part of "
                             "the original step."),
    timeout: float = typer.Option(None, "--timeout", help="With --ranks or under torchrun: stop every rank and "
                                  "fail after this many seconds (default 1800)."),
    comm_timeout: float = typer.Option(None, "--comm-timeout", help="With --ranks or under torchrun: fail when "
                                       "one collective waits this many seconds (default 60)."),
    no_memory_check: bool = typer.Option(False, "--no-memory-check", help="Plan even when the trace's tensors "
                                         "need more memory than is available (by default that is an error "
                                         "before anything is allocated; with --ranks each rank checks its own)."),
    select: str = typer.Option(None, "--select", help="Replay part of the step, compared with its share of the "
                               "original: scope:NAME (a recorded scope), op:PATTERN (regex on the names of the step's "
                               "top-level ops, e.g. 'aten::mm|aten::addmm'; an addmm called inside aten::linear is "
                               "part of the linear), phase:forward|backward|optimizer."),
    what_if: list[str] = typer.Option(None, "--what-if", help="Change the step: drop:OP_PATTERN or "
                                      "repeat:OP_PATTERN=N (repeatable)."),
    scale: list[str] = typer.Option(None, "--scale", help="The step at F times its batch size (batch=F, the "
                                    "leading dimension of its inputs) or sequence length (seq=F), every size that "
                                    "follows rewritten; refused, naming the op, where a size cannot be attributed "
                                    "(repeatable)."),
) -> None:
    """Replay an execution trace as a standalone benchmark and report its fidelity to the original step.

    Every top-level op of the recorded step is called through its op schema with synthetic tensors of the
    recorded shapes (on --device); ops that cannot run are skipped with a reason (and a timed stand-in when
    Kineto gives their duration). With a Kineto trace the CPU time between ops is reproduced too, aimed at
    the UN-observed step time (capture.json, or estimated from the trace with the observers' cost measured here;
    not across devices).
    With --ranks N, each rank of the trace replays in its own process and the recorded collectives
    (all-to-all, all-reduce, all-gather, broadcast ...) run for real between them. Under torchrun
    (`torchrun --nproc-per-node N -m benchmint replay TRACE`, --nnodes across hosts) each process replays the
    rank torchrun gave it, and rank 0 prints and saves the joined result.
    """
    from rich.progress import BarColumn, Progress, TextColumn

    from benchmint.core.errors import UserError
    from benchmint.core.jsonio import write_json
    from benchmint.replay.api import replay_trace, run_record
    from benchmint.replay.options import ReplayOptions
    from benchmint.replay.rank_env import from_environ

    if min_coverage is not None and not 0 <= min_coverage <= 1:
        raise UserError(f"--min-coverage {min_coverage:g}: give a fraction of the ops, 0 to 1")
    from benchmint.core.outpaths import check_output_dir, check_output_file

    check_output_file("--json", json_path)  # before the replay: its result must not be lost at the end
    check_output_file("--save-gaps", save_gaps)
    check_output_dir("--out", out)
    under = from_environ()
    if under is not None and ranks is not None:
        raise UserError(f"--ranks {ranks} starts its own processes; under torchrun (WORLD_SIZE={under.world}) "
                        "leave it out")
    for flag, v in (("--timeout", timeout), ("--comm-timeout", comm_timeout)):
        if v is not None and ranks is None and under is None:
            raise UserError(f"{flag} applies to a multi-rank replay only; add --ranks N or leave it out")
        if v is not None and not v > 0:
            raise UserError(f"{flag} {v:g}: must be a positive number of seconds")
    opts = ReplayOptions(device=device, threads=threads, warmup=warmup, iters=iters, seed=seed, gaps=gaps,
                         target=target, iteration=iteration, memory_check=not no_memory_check,
                         select=select, what_if=tuple(what_if or ()), mode=mode,
                         scale=tuple(scale or ()), gaps_from=str(gaps_from) if gaps_from else None,
                         index_spread=index_spread)
    if (save_gaps is not None or gaps_from is not None) and (ranks is not None or under is not None):
        raise UserError(f"{'--save-gaps' if save_gaps is not None else '--gaps-from'} applies to a one-process "
                        "replay; a multi-rank replay settles its gaps with the ranks together")
    if save_gaps is not None and gaps == "none":
        raise UserError(f"--save-gaps {save_gaps}: --gaps none settles no gaps to save")
    if under is not None:
        from benchmint.replay.torchrun import replay_torchrun

        res = replay_torchrun(trace, kineto, opts, under, timeout_s=1800.0 if timeout is None else timeout,
                              collective_timeout_s=60.0 if comm_timeout is None else comm_timeout,
                              echo=lambda line: err_console.print(line, highlight=False, markup=False))
        if res is None:  # not rank 0: rank 0 prints and saves the joined result
            return
    elif ranks is not None:
        from benchmint.replay.distributed import replay_ranks

        res = replay_ranks(trace, kineto, opts, ranks=ranks, timeout_s=1800.0 if timeout is None else timeout,
                           collective_timeout_s=60.0 if comm_timeout is None else comm_timeout,
                           echo=lambda line: err_console.print(line, highlight=False, markup=False),
                           keep_logs=state.debug)
    else:
        # no refresh thread (auto_refresh): it would wake ten times a second inside the timed iterations,
        # which an exported runner (no progress display) does not have; the display moves at each stage
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      console=err_console, transient=True, auto_refresh=False,
                      disable=not err_console.is_terminal) as prog:
            task = prog.add_task("planning", total=None)
            said: list[str] = []
            t0 = time.monotonic()

            def progress(stage: str, done: int, total: int) -> None:
                prog.update(task, description=stage, completed=done, total=total or None, refresh=True)
                took = time.monotonic() - t0
                if not err_console.is_terminal and took > 10 and (not said or said[-1] != stage):
                    # no display in a log (CI, a pipe): past 10 s, a line per stage, so that a long replay (a
                    # PARAM ResNet: minutes) is not silent; a short one, or a refusal, prints none
                    said.append(stage)
                    err_console.print(f"replay: {stage} ({took:.0f} s)", highlight=False, markup=False)

            res = replay_trace(trace, kineto, opts, progress=progress)
    r = res.result
    if save_gaps is not None:
        from benchmint.replay import gaps_file

        gaps_file.write(save_gaps, r, res.gaps_ns, len(res.plan.steps), res.gaps_view or res.plan.view)
    config = {"trace": str(trace), "kineto": str(kineto) if kineto else r["kineto"], "device": r["device"],
              "threads": r["threads"], "warmup": warmup, "iters": iters, "seed": seed, "gaps": r["gaps"],
              "target": target, "iteration": iteration, "select": select, "what_if": what_if or None,
              "scale": scale or None, "gaps_from": str(gaps_from) if gaps_from else None,
              "index_spread": index_spread, "mode": mode}  # (mode always: a report of full beside comm says so)
    if ranks is not None or under is not None:
        config["ranks"] = ranks if ranks is not None else under.world  # type: ignore[union-attr]
    if under is not None:
        config["launcher"] = "torchrun"
    rec = run_record(res, config)  # type: ignore[arg-type]
    out_dir = out or Path("replay-out") / rec.id
    rec.artifacts = {"run": "run.json"}
    if json_path is not None:
        write_json(json_path, {**r, "per_op_type": res.per_op_type})
        rec.artifacts["json"] = str(json_path)
    from benchmint.results.save import save_run

    stored = save_run(rec, out_dir, store=results, append=not no_store).part
    _print_summary(r)
    from benchmint.core.sysmetrics import lines as system_lines
    from benchmint.replay.adapt import describe
    from benchmint.replay.index_effect import lines as spread_lines

    for line in describe(r) + spread_lines(r) + system_lines(r.get("system_metrics")):
        console.print(line, highlight=False)
    if report:
        _print_report(res.per_op_type, r)
    console.print(f"run.json: {out_dir / 'run.json'}" + (f"  (stored in {stored})" if stored else ""))
    if min_coverage is not None and r["coverage"] < min_coverage:
        err_console.print(f"coverage {r['coverage']:.3f} is below --min-coverage {min_coverage}")
        raise typer.Exit(1)


def _print_summary(r: dict) -> None:
    from benchmint.results.metric_table import replay_figure

    def label(key: str) -> str:  # the figure's name as declared once (results/metric_table.py, docs/replay.md)
        return replay_figure(key).name

    t = Table(title=f"replay of {Path(r['trace']).name}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    it = r["iter_time_s"]
    t.add_row(label("ops_total"), f"{r['ops_replayed']} of {r['ops_total']} replayed (coverage {r['coverage']:.3f}"
              + (f", by time {r['coverage_time']:.3f})" if r["coverage_time"] is not None else ")"))
    t.add_row(label("iter_time_s"), f"median {fmt_s(it['median'])}, p10 {fmt_s(it['p10'])}, p90 {fmt_s(it['p90'])}, "
              f"n={it['n']}" + noise_note(it))
    t.add_row(label("replay_ops_only_s"), fmt_s(r["replay_ops_only_s"]))
    nothing_to_aim = r["gaps"] == "recorded" and not r["gap_target"] and not r.get("gap_time_s")
    gf = r.get("gaps_from")
    if gf:  # spent from a file: nothing was aimed here (the console said "aimed at capture.json")
        t.add_row("gaps", f"from {gf['path']} ({fmt_s(r['gap_time_s'])} of CPU time between ops: "
                  f"{gf['turns']} spin turns settled by an earlier replay, not aimed here)")
    else:
        t.add_row("gaps", f"{r['gaps']} ({fmt_s(r['gap_time_s'])} of CPU time between ops"
                  + (f", aimed at {r['gap_target']})" if r["gap_target"] else
                     "; nothing to aim them at: no capture.json and no estimate of the original on this device)"
                     if nothing_to_aim else ")"))
    t.add_row(label("original_iter_time_s"), fmt_s(r["original_iter_time_s"]) + (" (capture.json)" if r["original_iter_time_s"]
                                                               else " (no capture.json)"))
    if r.get("original_iter_time_estimated_s") is not None:
        t.add_row(label("original_iter_time_estimated_s"), fmt_s(r["original_iter_time_estimated_s"])
                  + f" (from the trace: recorded span {fmt_s(r['recorded_step_span_s'])}, the observers' "
                  "cost taken out)")
    elif r.get("estimate_note"):
        t.add_row(label("original_iter_time_estimated_s"), r["estimate_note"])
    t.add_row(label("error"), f"{r['error'] * 100:+.1f}%" if r["error"] is not None else r.get("error_note") or "-")
    pace = r.get("pace") or {}
    if pace.get("capture_ns_per_turn") and pace.get("timed_vs_capture") is not None:
        t.add_row("host pace", f"{pace['timed_ns_per_turn']:.1f} ns a loop turn beside the timed iterations, "
                  f"{pace['capture_ns_per_turn']:.1f} beside the capture's steps (the same CPU work ran "
                  f"{pace_change(pace['timed_vs_capture'])} now)")
    t.add_row(label("peak_memory_bytes"), f"{r['peak_memory_bytes'] / 2**20:.1f} MiB")
    t.add_row("device, threads", f"{r['device']}, {r['threads']}" + (" per rank" if r.get("ranks") else ""))
    if r.get("ranks"):
        c = r["collectives"]
        covs = ", ".join(f"{p['coverage']:.3f}" for p in r["per_rank"])
        errs = r.get("errors_per_rank") or []
        if len(errs) > 1 and any(e is not None for e in errs):  # the headline error is the slowest rank's
            covs += "; error per rank " + ", ".join("-" if e is None else f"{e * 100:+.1f}%" for e in errs)
        t.add_row("ranks", f"{r['ranks']} ({r['backend']}): coverage per rank {covs}; slowest rank "
                  f"{r['slowest_rank']}; wall {r['wall_time_s']:.1f} s, peak RSS {r['peak_rss_bytes'] / 2**20:.0f} "
                  f"MiB per rank, {r['peak_rss_sum_bytes'] / 2**30:.1f} GiB all ranks")
        if c["replayed_per_rank"]:
            t.add_row("collectives", f"{c['replayed_per_rank']} per rank replayed ("
                      + ", ".join(f"{k} x{v}" for k, v in c["by_name"].items())
                      + f"), {max(c['bytes_in_per_rank']) / 2**20:.1f} MiB in / "
                      f"{max(c['bytes_out_per_rank']) / 2**20:.1f} MiB out per rank per iteration, "
                      f"{fmt_s(max(c['time_s_per_rank']))} in collectives (mean per timed iteration, the most "
                      "of any rank)")
        else:
            t.add_row("collectives", "none")
    dry = r.get("plan_dry_run") or {}
    if dry.get("mode") == "meta":
        real = ", ".join(f"{x['op']} x{x['count']} ({x['why']})" for x in dry.get("real_runs", [])[:3])
        t.add_row("plan", f"{fmt_s(r['plan_time_s'])} (ops tried on the meta device; {dry.get('ran_real', 0)} "
                  f"computed{': ' + real if real else ''}), then {fmt_s(r.get('plan_check_time_s'))} for one "
                  "real pass")
    graph = r.get("autograd_graph") or {}
    if graph.get("built"):
        t.add_row("autograd graph", f"built by {graph['ops']} forward ops on {graph['parameters']} parameters "
                  f"({graph['parameters_from']}), then dropped; the backward's ops are replayed as recorded")
    for s in r["skipped"][:8]:
        on = f" (ranks {', '.join(map(str, s['ranks']))})" if "ranks" in s else ""
        t.add_row("skipped", f"{s['op']} x{s['count']}{on}: {s['reason']}")
    console.print(t)
    console.print(fidelity_line(r))
    lost = damage_line(r)  # the recording lost part of the step: the error above is not the replay's
    if lost:
        console.print(f"[yellow]{escape(lost)}[/]", highlight=False)
    retyped = retyped_line(r)  # ops that ran in another dtype than the original's (autocast not seen)
    if retyped:
        console.print(f"[yellow]{escape(retyped)}[/]", highlight=False)
    # --threads other than the capture's (the error holds that difference); a Kineto trace that matched part of
    # the step (holes in the gaps and durations); torch.compile'd regions (their generated kernels are no ops)
    for line in (threads_line(r), kineto_line(r), compiled_line(r)):
        if line:
            console.print(f"[yellow]{escape(line)}[/]", highlight=False)


def _print_report(rows: list[dict], r: dict) -> None:
    t = Table(title="time per op type (original: " + (r.get("per_op_original_how")
                                                      or "recorded less the observers' cost") + ")")
    for c in ("op", "count", "original", "replay", "delta"):
        t.add_column(c, justify="left" if c == "op" else "right")
    for row in rows[:25]:
        o = row["original_s"]
        if o is not None and row.get("original_under_observer_cost", 0) >= row["count"]:
            t.add_row(row["op"], str(row["count"]), "under the recorder's cost", fmt_s(row["replay_s"]), "-")
            continue
        d = row["replay_s"] - o if o is not None and row["replay_s"] is not None else None
        t.add_row(row["op"], str(row["count"]), fmt_s(o), fmt_s(row["replay_s"]),
                  (f"{d * 1e3:+.3f} ms" if d is not None else "-"))
    console.print(t)
    c = r.get("compiled_regions") or {}
    if c.get("not_in_ops_s") is not None:
        console.print(f"not in the table: {fmt_s(c['not_in_ops_s'])} recorded inside torch.compile'd regions outside "
                      "any op (their generated kernels), which the replay runs no op for"
                      + (" (spent as part of the CPU time between ops)" if r.get("gap_time_s") else ""),
                      highlight=False)
    if r["largest_contributors"]:
        console.print("largest contributors to the error: " + ", ".join(
            f"{c['op']} ({c['delta_s'] * 1e3:+.3f} ms)" for c in r["largest_contributors"]))
