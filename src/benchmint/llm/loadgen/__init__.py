"""MLPerf LoadGen adapter: run benchmint's LLM backends under the real ``mlcommons-loadgen``.

- :mod:`.settings`: official constraints of MLPerf model keys, user.conf, flags -> ``lg.TestSettings``
- :mod:`.sut`: the system under test (``issue_queries`` only enqueues onto an asyncio loop thread)
- :mod:`.worker` / :mod:`.runner`: one LoadGen test per subprocess
- :mod:`.mllog`: the ``:::MLLOG`` records of ``mlperf_log_detail.txt``
- :mod:`.validity`: validity in plain words and the ``--plan`` predictor
- :mod:`.api`: :func:`run_mlperf`, the whole ``benchmint llm mlperf`` run
"""

from benchmint.llm.loadgen.settings import MODEL_KEYS, RunSettings

__all__ = ["MODEL_KEYS", "RunSettings"]
