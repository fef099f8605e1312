"""benchmint: benchmarks minted from real workloads, LLM inference benchmarking, and a results dataset."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("benchmint")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
