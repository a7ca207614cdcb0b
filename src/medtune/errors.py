"""The one error type the command line shows as a plain message (no traceback), and deprecation notes."""

import sys


class UserError(Exception):
    """Something a person must fix; the message says what was wrong, where, and what to do."""


def deprecated(message: str) -> None:
    """Tell the person that a spelling they used still works but will not in the next release."""
    print(f"medtune: deprecated: {message}", file=sys.stderr)
