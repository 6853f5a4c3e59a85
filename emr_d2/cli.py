"""Error handling shared by the command-line tools (torch-free)."""
from __future__ import annotations

import sys


def one_line(error: BaseException) -> str:
    """A one-line message of an exception (the last line of a child process's traceback)."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if "Traceback" in lines[0] else " ".join(lines)


def run_cli(main, argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; any error becomes one line on stderr and exit code 1.

    ``--debug`` anywhere in argv shows the Python traceback instead.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
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
