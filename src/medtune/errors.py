"""The one error type the command line shows as a plain message (no traceback)."""


class UserError(Exception):
    """Something a person must fix; the message says what was wrong, where, and what to do."""
