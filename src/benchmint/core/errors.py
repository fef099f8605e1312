"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave us (a file, a flag, a server address).

    The message must name the thing and say what to do; the CLI prints ``error: <message>`` and exits 2.
    """

    exit_code = 2


class TraceError(UserError):
    """An execution or Kineto trace that cannot be read: names the file and the problem."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
