"""Outputs appear whole or not at all: write to a hidden temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator

from medgan.errors import OutputError

__all__ = ["atomic_dir", "atomic_file", "check_output", "check_outside_inputs"]


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


def check_outside_inputs(output: str | os.PathLike, inputs) -> None:
    """Refuse an output that is an input, holds one (replacing it would delete the input), or lies inside an
    input folder. Paths are compared after resolving links; `inputs` are files or folders."""
    out = os.path.realpath(output)
    for item in inputs:
        if item is None:
            continue
        real = os.path.realpath(item)
        if out == real:
            raise OutputError(f"is the input {os.fspath(item)}; choose another output", path=output)
        if real.startswith(out.rstrip(os.sep) + os.sep):
            raise OutputError(
                f"holds the input {os.fspath(item)} (writing it would delete that input); choose another output",
                path=output,
            )
        if os.path.isdir(real) and out.startswith(real.rstrip(os.sep) + os.sep):
            raise OutputError(f"lies inside the input folder {os.fspath(item)}; choose another output", path=output)


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
