"""Walking a folder tree the way every medgan command does: links followed, each real folder once."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

__all__ = ["walk_tree"]


def walk_tree(
    root: str, skip_dir: Callable[[str, str], bool] | None = None, exclude: str | None = None
) -> Iterator[tuple[str, list[str]]]:
    """(folder, sorted names of its non-folders) for `root` and every folder below it, in sorted order.

    Symbolic links to folders are followed, but each real folder is entered once (a link back up
    the tree, or two links to one folder, cannot loop or repeat). `skip_dir(folder, name)` prunes
    folders; `exclude` is a real path whose folders are never entered.
    """
    seen = {os.path.realpath(root)}
    for folder, dirs, names in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirs):
            if skip_dir is not None and skip_dir(folder, name):
                continue
            real = os.path.realpath(os.path.join(folder, name))
            if real in seen or (exclude and (real == exclude or real.startswith(exclude + os.sep))):
                continue
            seen.add(real)
            kept.append(name)
        dirs[:] = kept
        yield folder, sorted(names)
