"""What every command shares: one-line errors, no tracebacks for input errors, a debug switch."""
from __future__ import annotations

import sys
import traceback
from typing import Callable

from ..errors import HvitError
from ..utils.debug import debug_enabled

__all__ = ["debug_enabled", "run_main"]


def run_main(prog: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except HvitError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; what was finished is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    except Exception as e:  # a bug: one line for the user, the traceback with HVIT_DEBUG=1
        if debug_enabled():
            traceback.print_exc()
        print(f"{prog}: internal error: {type(e).__name__}: {' '.join(str(e).split())[:400]} "
              f"(set HVIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3
