"""LoadGen test settings from an MLPerf model key's official constraints, a user.conf, and flags.

The official constraints come from LoadGen itself: ``mlperf_loadgen`` 5.0+ embeds ``mlperf.conf`` and
``TestSettings.FromConfig(path, model, scenario, conf_type)`` loads it (``conf_type=0``: only the embedded
mlperf.conf; ``conf_type=1``: mlperf.conf and then the user.conf at ``path``). :data:`MODEL_KEYS` repeats the
LLM figures of that file (LoadGen 6.0.17) so that ``--plan`` and the validity text can name them without
LoadGen; a test checks the two agree.

This module imports ``mlperf_loadgen`` only inside :func:`build_test_settings`, so the parent process never
touches LoadGen's global state (one test per subprocess: see ``worker.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmint.core.errors import UserError
from benchmint.llm.loadgen.user_conf import check_user_conf, check_value

SCENARIOS = {"offline": "Offline", "server": "Server", "single-stream": "SingleStream"}
MODES = ("performance", "accuracy", "submission")

# Early stopping in LoadGen is judged at 99% confidence (loadgen/early_stopping.cc).
EARLY_STOPPING_CONFIDENCE = 0.99


@dataclass(frozen=True)
class ModelKey:
    """Official LoadGen constraints of one MLPerf LLM benchmark (from LoadGen's embedded mlperf.conf)."""

    name: str
    ttft_s: float | None  # Server p99 time-to-first-token limit
    tpot_s: float | None  # Server p99 time-per-output-token limit
    performance_sample_count: int
    offline_min_query_count: int | None = None
    server_percentile: float = 0.99
    single_stream_percentile: float = 0.90
    min_duration_s: float = 600.0
    interactive: bool = False


MODEL_KEYS: dict[str, ModelKey] = {
    k.name: k
    for k in (
        ModelKey("llama2-70b", 2.0, 0.200, 24576, 24576),
        ModelKey("llama2-70b-interactive", 0.450, 0.040, 24576, None, interactive=True),
        ModelKey("llama3_1-8b", 2.0, 0.100, 13368, 13368),
        ModelKey("llama3_1-8b-interactive", 0.500, 0.030, 13368, None, interactive=True),
        ModelKey("llama3_1-8b-edge", None, None, 5000, 5000),
        ModelKey("llama3_1-405b", 6.0, 0.175, 8313, 8313),
        ModelKey("llama3_1-405b-interactive", 4.5, 0.080, 8313, None, interactive=True),
        ModelKey("mixtral-8x7b", 2.0, 0.200, 15000, 15000),
        ModelKey("deepseek-r1", 2.0, 0.080, 4388, 4388),
        ModelKey("deepseek-r1-interactive", 1.5, 0.015, 4388, None, interactive=True),
        ModelKey("gpt-oss-120b", 3.0, 0.080, 6396, None),
        ModelKey("gpt-oss-120b-interactive", 2.0, 0.015, 6396, None, interactive=True),
    )
}


def model_key(name: str) -> ModelKey:
    try:
        return MODEL_KEYS[name]
    except KeyError:
        raise UserError(
            f"--model-key {name!r} is not an MLPerf LLM benchmark benchmint knows; use one of "
            f"{', '.join(MODEL_KEYS)}, or give --user-conf with your own constraints"
        ) from None


@dataclass
class RunSettings:
    """Everything the worker needs to build ``lg.TestSettings``; JSON-ready (it crosses a process boundary).

    ``None`` means "keep what the model key / user.conf / LoadGen default says".
    """

    scenario: str = "server"  # offline | server | single-stream
    mode: str = "performance"  # performance | accuracy
    model_key: str = "llama2-70b"
    user_conf: str | None = None
    target_qps: float | None = None  # Server target QPS, or Offline expected QPS
    min_duration_s: float | None = None
    max_duration_s: float | None = None
    min_query_count: int | None = None
    max_query_count: int | None = None
    performance_sample_count: int | None = None  # set to the dataset size when smaller than the official count
    single_stream_expected_latency_s: float | None = None
    ttft_s: float | None = None  # override of the model key's limits (custom SLOs)
    tpot_s: float | None = None
    latency_percentile: float | None = None
    sample_concatenate_permutation: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # raw TestSettings attributes, applied last

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise UserError(f"--scenario {self.scenario!r}: use one of {', '.join(SCENARIOS)}")
        if self.mode not in ("performance", "accuracy"):
            raise UserError(f"mode {self.mode!r}: a single LoadGen test is performance or accuracy")
        if self.user_conf is not None and not Path(self.user_conf).is_file():
            raise UserError(f"--user-conf {self.user_conf}: no such file; give the path of a LoadGen user.conf")
        if self.user_conf is not None:
            check_user_conf(self.user_conf)  # LoadGen would take nan, a 100,000-digit QPS or 10**26 queries
        if self.target_qps is not None and self.target_qps <= 0:
            raise UserError("--target-qps must be greater than 0")
        # the flags pass through the same checks as the user.conf lines that set the same settings
        for flag, key, value, scale in (
            ("--target-qps", "target_qps", self.target_qps, 1),
            ("--min-duration", "min_duration", self.min_duration_s, 1000),
            ("--max-duration", "max_duration", self.max_duration_s, 1000),
            ("--min-query-count", "min_query_count", self.min_query_count, 1),
            ("--max-query-count", "max_query_count", self.max_query_count, 1),
            ("--performance-sample-count", "performance_sample_count_override", self.performance_sample_count, 1),
            ("ttft", "ttft_latency", self.ttft_s, 1e9),
            ("tpot", "tpot_latency", self.tpot_s, 1e9),
            ("single-stream expected latency", "target_latency", self.single_stream_expected_latency_s, 1000),
        ):
            if value is not None and not isinstance(value, bool):
                if not isinstance(value, int | float) or not math.isfinite(value):
                    raise UserError(f"{flag} {value!r}: give a finite number")
                x = round(value * scale) if scale != 1 else value
                check_value(key, str(int(x)) if float(x).is_integer() else repr(float(x)), flag)
        if self.latency_percentile is not None and not 0 < self.latency_percentile <= 1:
            raise UserError(f"latency percentile {self.latency_percentile!r}: give a fraction in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSettings:
        return cls(**d)

    @property
    def lg_scenario(self) -> str:
        return SCENARIOS[self.scenario]

    def limits(self) -> tuple[float | None, float | None]:
        """The TTFT and TPOT limits in force (flags over model key); user.conf values are read by LoadGen."""
        key = MODEL_KEYS.get(self.model_key)
        ttft = self.ttft_s if self.ttft_s is not None else (key.ttft_s if key else None)
        tpot = self.tpot_s if self.tpot_s is not None else (key.tpot_s if key else None)
        return ttft, tpot

    def percentile(self) -> float:
        if self.latency_percentile is not None:
            return self.latency_percentile
        key = MODEL_KEYS.get(self.model_key)
        if self.scenario == "single-stream":
            return key.single_stream_percentile if key else 0.90
        return key.server_percentile if key else 0.99


def build_test_settings(rs: RunSettings) -> Any:
    """``lg.TestSettings`` for one test: model key (embedded mlperf.conf), then user.conf, then flags."""
    import mlperf_loadgen as lg

    s = lg.TestSettings()
    if rs.model_key:
        conf_type = 1 if rs.user_conf else 0
        rc = s.FromConfig(rs.user_conf or "", rs.model_key, rs.lg_scenario, conf_type)
        if rc != 0:
            raise UserError(
                f"LoadGen could not load the settings for model key {rs.model_key!r}"
                + (f" from user.conf {rs.user_conf}" if rs.user_conf else "")
                + "; check the key and the file's 'model.scenario.key = value' lines"
            )
    s.scenario = {
        "offline": lg.TestScenario.Offline,
        "server": lg.TestScenario.Server,
        "single-stream": lg.TestScenario.SingleStream,
    }[rs.scenario]
    s.mode = lg.TestMode.AccuracyOnly if rs.mode == "accuracy" else lg.TestMode.PerformanceOnly
    s.use_token_latencies = True
    if rs.target_qps is not None:
        if rs.scenario == "server":
            s.server_target_qps = float(rs.target_qps)
        elif rs.scenario == "offline":
            s.offline_expected_qps = float(rs.target_qps)
    if rs.min_duration_s is not None:
        s.min_duration_ms = int(round(rs.min_duration_s * 1000))
    if rs.max_duration_s is not None:
        s.max_duration_ms = int(round(rs.max_duration_s * 1000))
    if rs.min_query_count is not None:
        s.min_query_count = int(rs.min_query_count)
    if rs.max_query_count is not None:
        s.max_query_count = int(rs.max_query_count)
    if rs.performance_sample_count is not None:
        s.performance_sample_count_override = int(rs.performance_sample_count)
    if rs.single_stream_expected_latency_s is not None:
        s.single_stream_expected_latency_ns = int(rs.single_stream_expected_latency_s * 1e9)
    if rs.ttft_s is not None:
        s.ttft_latency = int(rs.ttft_s * 1e9)
    if rs.tpot_s is not None:
        s.tpot_latency = int(rs.tpot_s * 1e9)
    if rs.latency_percentile is not None:
        s.server_target_latency_percentile = float(rs.latency_percentile)
        s.single_stream_target_latency_percentile = float(rs.latency_percentile)
    if rs.sample_concatenate_permutation is not None:
        s.sample_concatenate_permutation = bool(rs.sample_concatenate_permutation)
    for k, v in rs.extra.items():
        if not hasattr(s, k):
            raise UserError(f"unknown LoadGen setting {k!r}; see mlperf_loadgen.TestSettings for the names")
        setattr(s, k, v)
    return s


def official_count(rs: RunSettings) -> int | None:
    key = MODEL_KEYS.get(rs.model_key)
    return key.performance_sample_count if key else None
