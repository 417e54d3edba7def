"""What every command does with an error: one short message and a non-zero exit, no traceback.

`@command` wraps a `main(argv) -> int`. An `RMTError` (see `rmt_megatron.errors`) prints
`error: <message>` and exits 1; a missing or unreadable file (`OSError`) prints the file and the
reason and exits 1; Ctrl-C exits 130. Set `RMT_DEBUG=1` to get the traceback instead.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from rmt_megatron.errors import RMTError

Main = Callable[[list[str] | None], int]


def print_error(message: str) -> None:
    """`error: <message>` on stderr (every rank prints its own; they are usually the same)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def command(main: Main) -> Main:
    """`main` with user errors turned into a message and exit status (see module docstring)."""

    @functools.wraps(main)
    def guarded(argv: list[str] | None = None) -> int:
        if os.environ.get("RMT_DEBUG"):
            return main(argv)
        try:
            return main(argv)
        except RMTError as error:
            print_error(str(error))
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            print_error(f"{where}{error.strerror or error}")
        except KeyboardInterrupt:
            print_error("interrupted")
            return 130
        return 1

    return guarded
