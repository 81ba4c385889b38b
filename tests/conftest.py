"""Shared fixtures: the CLI runner, the test cache, and real DICOM series built once per session.

The helpers behind them live in `tests/external.py` (importable as `external` from any test).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import external
import pytest

from medgan.cli import main


@pytest.fixture(scope="session")
def external_cache() -> Path:
    """`.cache/medgan-tests/` in the repository, or `$MEDGAN_TEST_CACHE`."""
    return external.cache_dir()


@pytest.fixture(scope="session")
def real_series() -> Callable[[str], external.RealSeries]:
    """`real_series(variant)`: a real DICOM series (see `external.VARIANTS`), built on first use and
    kept on disk, so later sessions only read it back. Skips when the Debian data cannot be had."""
    return functools.cache(external.real_series)


@pytest.fixture(scope="session")
def dcm2niix_tool() -> str:
    return external.external_tool("dcm2niix")


@pytest.fixture
def run_cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """Run `medgan ARGS...` in this process; returns (exit status, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main([str(a) for a in args])
            raise SystemExit(0)
        out, err = capsys.readouterr()
        return info.value.code or 0, out, err

    return run
