"""Silence pydicom's warnings and log lines while reading patient files: they quote values."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_pydicom"]


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """pydicom warns (and logs) "Invalid value for VR PN: 'Doe^Jane'": no patient value may reach a log."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
