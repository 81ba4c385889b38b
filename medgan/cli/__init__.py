"""The `medgan` command line: parse arguments, make one library call, report.

Each command lives in a small module of this package and registers itself on the `cli`
group. User errors (`MedganError`, bad options) print one line on stderr and exit with status
2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

import click

from medgan import __version__
from medgan.errors import MedganError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="medgan")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """medgan: medical image synthesis, enhancement and lesion simulation with GANs.

    Images are read and written with their geometry intact (DICOM, NIfTI, NRRD, MHA);
    intensities stay in physical units (HU for CT).
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="medgan: %(levelname)s: %(message)s", stream=sys.stderr)
    if verbose < 2:
        # pydicom logs and warns about every oddity of a file it reads; medgan reports what matters
        # itself (one line per bad file), so pydicom's own chatter is kept for -vv.
        logging.getLogger("pydicom").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler's time-out, a closed session): unwinds like Ctrl-C, so every
    half-written output is removed on the way out."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


_RECEIVED: list[int] = []  # click turns KeyboardInterrupt into Abort: remember which signal it was


_OWNER: list[int] = []  # the process that installed the handler; forked workers inherit it but must just die


def _terminated(number: int, frame) -> None:
    if _OWNER and os.getpid() != _OWNER[-1]:  # a forked worker (process pool, data loader): die as by default
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        return
    _RECEIVED.append(number)
    raise Terminated(number)


@contextlib.contextmanager
def _termination_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM and SIGHUP raise `Terminated` (where nobody else handles them)."""
    previous = {}
    _RECEIVED.clear()
    _OWNER[:] = [os.getpid()]
    if threading.current_thread() is threading.main_thread():
        for number in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(number) is signal.SIG_DFL:
                previous[number] = signal.signal(number, _terminated)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `medgan` console script."""
    try:
        with _termination_unwinds():
            cli.main(args=argv, prog_name="medgan", standalone_mode=False)
    except MedganError as err:
        _fail(str(err))
    except click.exceptions.NoArgsIsHelpError as err:
        click.echo(err.ctx.get_help() if err.ctx else str(err))
        sys.exit(0)
    except click.UsageError as err:
        command = err.ctx.command_path if err.ctx else "medgan"
        _fail(f"{command}: {err.format_message()} (see --help)")
    except Terminated as err:
        _fail(f"stopped by {signal.Signals(err.number).name}", status=128 + err.number)
    except click.exceptions.Abort:
        if _RECEIVED:
            number = _RECEIVED.pop()
            _fail(f"stopped by {signal.Signals(number).name}", status=128 + number)
        _fail("aborted", status=130)
    except KeyboardInterrupt:
        _fail("interrupted", status=130)
    except BrokenPipeError:
        sys.exit(0)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except click.ClickException as err:
        _fail(err.format_message())


def _fail(message: str, status: int = 2) -> None:
    click.echo(f"medgan: error: {' '.join(message.split())}", err=True)
    sys.exit(status)


# Importing a command module registers its commands on `cli`.
from medgan.cli import anonymize, data, degrade, enhance, evaluate, images, lesions, train  # noqa: E402, F401
