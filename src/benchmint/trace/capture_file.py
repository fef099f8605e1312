"""The typed model of ``capture.json`` (what :mod:`benchmint.trace.capture` writes beside a trace), and its
reader: a file that is not such a document, or whose field has the wrong type or an absurd value, is a
:class:`~benchmint.core.errors.UserError` naming the file and the field, before any replay uses it.

Every field is optional (older captures lack some); fields this benchmint does not know are ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import msgspec

from benchmint.core.errors import UserError
from benchmint.trace.validate import field_error

__all__ = ["MAX_THREADS", "CaptureFile", "folder_refusal", "incomplete_reason", "read_capture"]

#: More intra-op threads than any machine has cores: a capture.json asking for more is corrupt.
MAX_THREADS = 4096
_MAX_S = 1e7  # seconds (115 days): longer step times are corrupt
_MAX_BYTES = 1 << 50

Seconds = Annotated[float, msgspec.Meta(ge=0, le=_MAX_S)]
Count = Annotated[int, msgspec.Meta(ge=0, le=1 << 40)]
Short = Annotated[str, msgspec.Meta(max_length=4096)]
FileName = Annotated[str, msgspec.Meta(max_length=255, pattern=r"^[^/\\]+$")]


class StepTimes(msgspec.Struct, forbid_unknown_fields=False):
    median: Seconds | None = None
    p10: Seconds | None = None
    p90: Seconds | None = None
    n: Count | None = None
    values: list[Seconds] | None = None


class Files(msgspec.Struct, forbid_unknown_fields=False):
    et: FileName | None = None
    kineto: FileName | None = None


class Host(msgspec.Struct, forbid_unknown_fields=False):
    hostname: Short | None = None
    cpu_model: Short | None = None
    cpu_cores_logical: Count | None = None
    memory_bytes: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BYTES)] | None = None


class ModelInfo(msgspec.Struct, forbid_unknown_fields=False):
    architecture: Short | None = None
    parameter_count: Annotated[int, msgspec.Meta(ge=0, le=1 << 50)] | None = None
    dtype: Short | None = None


Ratio = Annotated[float, msgspec.Meta(ge=0, le=1e9)]


class SystemMetrics(msgspec.Struct, forbid_unknown_fields=False):
    """The measured steps' system metrics (:mod:`benchmint.core.sysmetrics`): what the replay compares."""

    steps: Count | None = None
    wall_s: Seconds | None = None
    cpu_s: Seconds | None = None
    threads: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] | None = None
    cpu_utilization: Ratio | None = None
    cpu_utilization_per_thread: Ratio | None = None
    voluntary_ctx_switches_per_step: Ratio | None = None
    involuntary_ctx_switches_per_step: Ratio | None = None
    minor_page_faults_per_step: Ratio | None = None
    major_page_faults_per_step: Ratio | None = None
    peak_rss_bytes: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BYTES)] | None = None
    gpu_sm_utilization: Ratio | None = None
    gpu_memory_used_bytes: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BYTES)] | None = None
    gpu_power_w: Ratio | None = None
    unavailable: dict[str, Short] | None = None


class RecordingCost(msgspec.Struct, forbid_unknown_fields=False):
    """What recording cost (:func:`benchmint.trace.capture.recording_cost`)."""

    unobserved_step_s: Seconds | None = None
    recorded_step_s: Seconds | None = None
    idle_step_s: Seconds | None = None
    recorded_vs_unobserved: Ratio | None = None
    idle_vs_unobserved: Annotated[float, msgspec.Meta(ge=-1, le=1e9)] | None = None
    idle_steps: Count | None = None
    after_recording_steps: Count | None = None  # the un-observed steps right after each recording, set apart
    after_recording_vs_unobserved: list[Ratio] | None = None  # their median per position over the un-observed
    unobserved_steps: Count | None = None
    idle_cost_measurable: bool | None = None
    idle_p_value: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    how: Short | None = None
    write_s: Seconds | None = None  # the loop's pause per kept recording: observers stopped, traces written
    write_how: Short | None = None


class Pace(msgspec.Struct, forbid_unknown_fields=False):
    """The machine's pace beside the measured steps (:mod:`benchmint.core.pace`)."""

    ns_per_turn: Annotated[float, msgspec.Meta(ge=1e-3, le=1e9)]
    values: Annotated[list[Annotated[float, msgspec.Meta(ge=1e-3, le=1e9)]], msgspec.Meta(max_length=1024)] | None = None
    host: Short | None = None  # where the probes ran: the interpreter loop's speed is this host's and Python's
    python: Short | None = None
    how: Short | None = None


class LookupSketch(msgspec.Struct, forbid_unknown_fields=False):
    """One index tensor of the last warm-up step (:mod:`benchmint.trace.index_sketch`)."""

    shape: Annotated[list[Count], msgspec.Meta(max_length=16)]
    rows: Annotated[int, msgspec.Meta(ge=1, le=1 << 40)]
    indices: Annotated[int, msgspec.Meta(ge=1, le=1 << 40)]
    distinct: Annotated[int, msgspec.Meta(ge=1, le=1 << 40)]
    op: Short | None = None


class IndexSketch(msgspec.Struct, forbid_unknown_fields=False):
    lookups: Annotated[list[LookupSketch], msgspec.Meta(max_length=4096)]
    how: Short | None = None
    more: Count | None = None  # index tensors the step read past the ones kept (the sketch is then partial)


class CaptureFile(msgspec.Struct, forbid_unknown_fields=False):
    """``capture.json``, schema 1.x (see :meth:`benchmint.trace.capture.Capture.summary`)."""

    schema_version: Annotated[str, msgspec.Meta(max_length=16, pattern=r"^\d{1,4}(\.\d{1,4}){0,2}$")] | None = None
    step_time_s: StepTimes | None = None
    recorded_step_time_s: list[Seconds] | None = None
    discarded_step_time_s: list[Seconds] | None = None
    how_measured: Short | None = None
    complete: bool | None = None
    warmup_steps: Count | None = None
    measured_steps: Count | None = None
    recorded_steps: Count | None = None
    recorded_iterations: list[Annotated[int, msgspec.Meta(ge=0, le=1 << 53)]] | None = None
    note: Short | None = None
    # how the loop ended: "end", "error", "interrupted" (Ctrl-C), "exit" (a non-zero status); None: running
    ended: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    ended_why: Short | None = None  # the error ("RuntimeError: ...") or the exit status
    discarded_steps: Count | None = None
    threads: Annotated[int, msgspec.Meta(ge=1, le=MAX_THREADS)] | None = None
    device: Short | None = None
    torch_version: Short | None = None
    host: Host | None = None
    command_line: list[str] | None = None
    model: ModelInfo | None = None
    files: Files | None = None
    system_metrics: SystemMetrics | None = None
    every: Annotated[int, msgspec.Meta(ge=2, le=1 << 40)] | None = None  # one step recorded in every N
    iterations: list[FileName] | None = None  # with every: the folder of each recorded step
    recording_cost: RecordingCost | None = None
    index_sketch: IndexSketch | None = None  # the distinct rows each lookup of a warm-up step touched
    pace: Pace | None = None  # the host's pace beside the measured steps (a replay reports its own beside it)


_decoder = msgspec.json.Decoder(CaptureFile)


def read_capture(path: str | os.PathLike) -> dict[str, Any]:
    """The content of a ``capture.json``, validated against :class:`CaptureFile`; a :class:`UserError` (one
    line naming the file and the field) when it is not one."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"{p}: cannot read ({e.strerror or e}); remove it or fix it") from None
    if len(data) > 64 << 20:
        raise UserError(f"{p}: {len(data)} bytes is not a capture.json (a few KB); remove it or fix it")
    try:
        cap = _decoder.decode(data)
    except msgspec.ValidationError as e:
        if str(e).startswith("Expected `object`"):
            raise UserError(f"{p}: not a capture.json (the JSON is not an object); remove it or fix it") from None
        raise UserError(f"{p}: not a valid capture.json ({field_error(str(e))}); remove it or fix it") from None
    except msgspec.DecodeError as e:
        raise UserError(f"{p}: not readable JSON ({e}); remove it or fix it") from None
    if cap.schema_version is not None and cap.schema_version.split(".")[0] != "1":
        raise UserError(f"{p}: capture.json schema_version {cap.schema_version} is not one this benchmint reads "
                        "(1.x); capture again with this version")
    return msgspec.json.decode(data)


CAPTURE_NAME = "capture.json"
ET_NAME = "et.json"
PARTIAL = ".partial"  # (benchmint.trace.capture.PARTIAL) an iteration folder not yet whole


def incomplete_reason(summary: dict[str, Any]) -> str:
    """Why an incomplete capture (``complete`` false in its capture.json) holds no step, and what to do, in
    words that follow "the capture there is incomplete": the script's error, its exit status or Ctrl-C when
    capture.json says the loop ended so (``ended``); more steps only when the loop ran to its end too soon."""
    counts = f"{summary.get('measured_steps', 0)} steps timed, {summary.get('recorded_steps', 0)} recorded"
    ended, why = summary.get("ended"), summary.get("ended_why")
    if ended == "error":
        return f"({counts}): the script failed ({why}) before a step was recorded; fix it and capture again"
    if ended == "interrupted":
        return (f"({counts}): the capture was interrupted ({why or 'Ctrl-C'}) before a step was recorded; capture "
                "again and let it run until it prints 'captured'")
    if ended == "exit":
        return (f"({counts}): the script exited ({why}) before a step was recorded; capture again with a run that "
                "goes on past the recorded steps")
    return f"({counts}: the loop ended before a step was recorded); capture again with more steps"


def recorded_world_size(rank_dir: Path) -> tuple[int, str] | None:
    """The world size a rank's capture folder recorded, and where: its ``run.json`` (``config.world_size``,
    written by ``benchmint capture`` under torchrun), else its Kineto trace's ``distributedInfo`` (read from the
    file's head, where the profiler writes it); None when neither says."""
    import re

    import orjson

    try:
        cfg = orjson.loads((rank_dir / "run.json").read_bytes()).get("config") or {}
        w = cfg.get("world_size")
        if type(w) is int and w >= 1:
            return w, f"{rank_dir.name}/run.json"
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open(rank_dir / "kineto.json", "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return None
    m = re.search(rb'"distributedInfo"\s*:\s*\{[^{}]*?"world_size"\s*:\s*(\d+)', head)
    if m and 1 <= int(m.group(1)) <= 1 << 20:
        return int(m.group(1)), f"{rank_dir.name}/kineto.json"
    return None


def missing_ranks(p: Path, ranks: list[int]) -> str | None:
    """Why a folder of rank folders ``ranks`` is not a whole capture: the world size its ranks recorded asks
    for rank folders that are not there (a replay of the others would run their collectives in a smaller
    world, as if it were the whole step); None when whole or unknown."""
    for r in ranks:
        got = recorded_world_size(p / f"rank{r}")
        if got is None:
            continue
        world, where = got
        gone = [f"rank{i}/" + (" (without et.json)" if (p / f"rank{i}").is_dir() else "") for i in range(world)
                if i not in ranks]
        if gone:
            shown = ", ".join(gone[:4]) + (f" and {len(gone) - 4} more" if len(gone) > 4 else "")
            return (f"{p}: a capture of {world} ranks (world_size {world} in {where}), and {shown} "
                    f"{'is' if len(gone) == 1 else 'are'} missing; copy the whole capture or capture again")
        return None
    return None


def folder_refusal(p: Path, command: str = "replay") -> str | None:
    """Why the folder ``p`` is not one capture that ``benchmint <command>`` reads, in one line that says what
    is in it and what to pass instead; None when it is one (it holds et.json). Shared by replay and inspect:
    an ``--every`` capture (its iteration folders), a capture under torchrun (its rank folders), an incomplete
    capture (why it ended, from its capture.json), an iteration folder that was never finished."""
    if p.name.endswith(PARTIAL):
        return (f"{p}: a recording the capture did not finish writing (stopped or killed while it wrote it); "
                f"{command} one of the whole iteration folders beside it, or capture again")
    if (p / ET_NAME).exists():
        return None
    if (p / CAPTURE_NAME).exists():
        summary = read_capture(p / CAPTURE_NAME)
        its = summary.get("iterations") or []
        if its:  # a capture with --every: one folder per recorded step
            return (f"{p}: a capture of one step in every N; {command} one of its iteration folders "
                    f"({', '.join(str(p / i) for i in its[:3])}{' ...' if len(its) > 3 else ''})")
        if summary.get("complete") is False:
            return f"{p}: the capture there is incomplete {incomplete_reason(summary)}"
    ranks = sorted(int(d.name[4:]) for d in p.glob("rank*") if d.is_dir() and d.name[4:].isdigit()
                   and (d / ET_NAME).exists())
    if ranks:  # a capture under torchrun: one folder per rank
        gone = missing_ranks(p, ranks)
        if gone:
            return gone
        shown = (", ".join(f"rank{r}/" for r in ranks) if len(ranks) <= 3 else f"rank{ranks[0]}/ ... rank{ranks[-1]}/")
        what = f"{p}: a capture of {len(ranks)} rank{'s' if len(ranks) != 1 else ''} ({shown}); "
        if command == "replay":
            return what + (f"replay them all with --ranks {len(ranks)} (or under torchrun --nproc-per-node "
                           f"{len(ranks)}), or one rank's folder alone ({p / f'rank{ranks[0]}'})")
        return what + f"{command} one rank's folder ({p / f'rank{ranks[0]}'})"
    if (p / "export.json").is_file() and (p / "trace" / ET_NAME).exists():  # a folder `benchmint export` wrote
        return (f"{p}: an exported benchmark; run it with python {p / 'run.py'}, or {command} its trace "
                f"({p / 'trace'})")
    return f"{p}: folder has no et.json; give the execution trace file itself"
