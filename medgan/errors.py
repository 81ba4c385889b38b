"""User-facing errors.

Anything a user can fix (a bad path, a malformed file, a wrong config key) raises a
`MedganError`. The CLI prints its one-line message on stderr and exits with status 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os


class MedganError(Exception):
    """An error the user can fix. `str(err)` is one line that names the culprit."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = " ".join(str(message).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


class InputError(MedganError):
    """An input file or folder is missing, unreadable or malformed."""


class OutputError(MedganError):
    """An output cannot be written (exists already, wrong suffix, unwritable)."""


class ConfigError(MedganError):
    """A configuration key or value is wrong."""


def describe(err: BaseException, limit: int = 200) -> str:
    """A library exception's message squeezed onto one short line (for wrapping in a MedganError)."""
    text = " ".join(str(err).split()) or err.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
