"""Errors that the command line turns into a clear message and exit status 2.

Library code raises :class:`InputError` for anything the *user* can fix (wrong file, wrong
shape, empty mask, missing TE ...). The message must say what is wrong and how to fix it.
Anything else is a bug and surfaces as a normal traceback.
"""


class InputError(ValueError):
    """Bad input that the user can fix; the message names the problem and the fix."""


class CancelledError(RuntimeError):
    """Raised from a progress callback to stop a running pipeline cleanly."""
