"""Outputs appear whole or not at all: write to a hidden temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator

from medgan.errors import OutputError

__all__ = ["atomic_dir", "atomic_file", "check_apart", "check_output"]


def check_output(path: str | os.PathLike, overwrite: bool) -> str:
    """Refuse an existing output unless `overwrite`; make sure its parent folder exists."""
    path = os.fspath(path)
    if os.path.lexists(path) and not overwrite:
        raise OutputError("already exists; pass --overwrite to replace it", path=path)
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create the parent folder ({err.strerror or err})", path=path) from None
    if not os.access(parent, os.W_OK):
        raise OutputError("the parent folder is not writable", path=path)
    return path


def check_apart(
    output: str | os.PathLike,
    inputs: Iterable[tuple[str, str | os.PathLike | None]],
    name: str = "the output",
    advice: str = "another output",
) -> None:
    """Refuse an output that is an input, holds one (replacing it, as --overwrite does, would delete the
    input) or lies inside an input folder. `inputs` are (description, path) pairs; None paths are ignored.
    Paths are compared after resolving links and `..`."""
    target = os.path.realpath(os.fspath(output))
    for label, path in inputs:
        if path is None:
            continue
        source = os.path.realpath(os.fspath(path))
        if source == target:
            problem = f"is the {label} ({os.fspath(path)})"
        elif _within(source, target):
            problem = f"contains the {label} ({os.fspath(path)}), which --overwrite would delete"
        elif os.path.isdir(source) and _within(target, source):
            problem = f"lies inside the {label} ({os.fspath(path)}); inputs are never written to"
        else:
            continue
        raise OutputError(f"{name} {problem}; choose {advice}", path=output)


def _within(path: str, folder: str) -> bool:
    """Whether the resolved `path` is `folder` or lies below it."""
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives on Windows
        return False


def _partial_name(path: str, suffix: str = "") -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.partial{suffix}")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, overwrite: bool = False, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path (ending in `suffix`, so writers that look at it still work);
    it replaces `path` only if the block succeeds."""
    path = check_output(path, overwrite)
    temp = _partial_name(path, suffix)
    try:
        yield temp
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary folder that becomes `path` if the block succeeds (an old one is replaced)."""
    path = check_output(path, overwrite)
    temp = _partial_name(path)
    os.makedirs(temp)
    try:
        yield temp
        if os.path.lexists(path):
            old = _partial_name(path, ".old")
            os.replace(path, old)
            os.replace(temp, path)
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old)
            else:
                os.remove(old)
        else:
            os.replace(temp, path)
    finally:
        if os.path.isdir(temp):
            shutil.rmtree(temp, ignore_errors=True)
