"""Shared foundations used by every layer: errors, host facts, clocks and JSON I/O.

This package sits below every layer of DESIGN.md (trace, replay, llm, results, ...) and imports none of them.
"""
