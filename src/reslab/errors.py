"""User-facing errors: the CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class ReslabError(ValueError):
    """A problem with what the user asked for (bad name, bad file, bad value).

    The message says what was wrong and what to do; the CLI prints it without a traceback.
    """


class UnknownModelError(ReslabError, KeyError):
    """An architecture name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""
