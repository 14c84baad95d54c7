"""The one error root of sayno.

Every error a *user* can cause (a bad file, a bad argument, a checkpoint for another backbone) is a
:class:`SaynoError`. The command line turns exactly these into one-line messages (exit 2); anything else is a
bug and shows its traceback. Subclasses also derive from ``ValueError`` where older callers caught that.
"""

from __future__ import annotations


class SaynoError(Exception):
    """Root of every user-facing sayno error; the message is one line and says what to do."""


class InputError(SaynoError, ValueError):
    """A bad argument at a public boundary (wrong type, shape, range); the message names what was expected."""


class BackboneMismatch(SaynoError, ValueError):
    """A checkpoint, cache or index that belongs to another backbone (fingerprints differ)."""
