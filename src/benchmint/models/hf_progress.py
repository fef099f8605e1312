"""transformers' progress bars, off for a block: loading a local folder or saving a toy model has nothing to
watch, and the bars' carriage returns land in the console and the demo's output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_progress_bars(quiet: bool = True) -> Iterator[None]:
    """transformers' progress bars off while ``quiet`` (restored after)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if quiet and was:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was:
            hf_logging.enable_progress_bar()
