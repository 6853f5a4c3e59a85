"""What the command-line tools share (torch-free): one-line errors, the --debug and --voxel-size
arguments, output folders that receive a run's files only when the whole run succeeded, and
child processes that end with the tool that started them."""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import IO

DEBUG_HELP = "on an error, show the Python traceback instead of one line"


def one_line(error: BaseException) -> str:
    """A one-line message of an exception (the last line of a child process's traceback)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if "Traceback" in lines[0] else " ".join(lines)


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; any error becomes one line on stderr and exit code 1.

    ``--debug`` anywhere in argv shows the Python traceback instead (tools list it in --help
    with :func:`add_debug_argument`).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    stop_on_sigterm()
    debug = "--debug" in argv
    if debug:
        argv.remove("--debug")
    try:
        return main(argv) or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the point of a CLI boundary: every error, one line
        if debug:
            raise
        print(f"error: {one_line(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``, a job scheduler) stop the tool as Ctrl-C does, so that its cleanup
    runs: child processes ended (:func:`run_child`), lock files and staged outputs removed."""
    signal.signal(signal.SIGTERM, _interrupt)


def run_child(command: list[str], log: IO, env: dict | None = None, cwd: str | None = None,
              every_s: float | None = None, on_tick: Callable[[], None] | None = None) -> int:
    """Run a command in a process group of its own, its output into the open file ``log``, and
    return its exit code; ``on_tick()`` is called every ``every_s`` seconds while it runs. If this
    process is stopped meanwhile (Ctrl-C, SIGTERM with :func:`stop_on_sigterm`, any error), the
    child and its own children are ended before the exception goes on."""
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                               start_new_session=True)
    try:
        while True:
            try:
                return process.wait(timeout=every_s)
            except subprocess.TimeoutExpired:
                if on_tick is not None:
                    on_tick()
    finally:
        if process.poll() is None:
            _end_group(process)


def _end_group(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def add_debug_argument(parser: argparse.ArgumentParser) -> None:
    """List ``--debug`` (handled by :func:`run_cli`) in the tool's --help."""
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)


def _micrometres(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes exactly three numbers Z Y X (micrometres); {text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"takes three positive numbers Z Y X (micrometres); got {text}")
    return value


def add_voxel_size_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """``--voxel-size Z Y X``: exactly three positive numbers, in micrometres."""
    parser.add_argument("--voxel-size", nargs=3, type=_micrometres, metavar=("Z", "Y", "X"),
                        default=None,
                        help=f"{help} (three positive numbers, micrometres)")


def check_new_output_folder(folder: str, overwrite: bool, how: str = "pass --overwrite") -> None:
    """An output folder that exists and holds files is refused unless ``overwrite`` (the error
    says ``how`` to ask for it)."""
    if os.path.isdir(folder) and os.listdir(folder) and not overwrite:
        raise FileExistsError(f"{folder}: the output folder exists and is not empty; {how} to "
                              "replace the files this run writes")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise NotADirectoryError(f"{folder}: exists and is not a folder")


@contextlib.contextmanager
def staged_output(folder: str):
    """Yield a staging folder beside ``folder`` for a run's files; they are moved into
    ``folder`` when the block ends without an error, and deleted (with ``folder``, if this run
    created it and left it empty) when it does not: a run writes all of its files or none."""
    parent = os.path.dirname(os.path.abspath(folder))
    try:
        os.makedirs(parent, exist_ok=True)
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(folder))}.partial-",
                                 dir=parent)
    except OSError as e:
        raise OSError(f"{folder}: cannot write there ({e.strerror or e})") from e
    created = not os.path.isdir(folder)
    try:
        yield stage
        os.makedirs(folder, exist_ok=True)
        for name in sorted(os.listdir(stage)):
            os.replace(os.path.join(stage, name), os.path.join(folder, name))
    except BaseException:
        if created and os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
