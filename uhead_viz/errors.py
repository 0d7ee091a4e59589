"""The exception types every layer raises, in one module that imports nothing.

Each layer refuses what it cannot use with a message meant for a person: the app shows
it, the CLI prints it, the API returns it. Keeping the types here lets any module raise
or catch them without importing the module that happens to raise them first (the model
loader, the head, the file reader), and so without their imports.

``InputError`` is a ``ValueError`` and ``PackError`` a ``RuntimeError``, so callers that
catch the built-in types keep working.
"""

from __future__ import annotations


class InputError(ValueError):
    """Input we refuse, with a message meant for the person who typed it."""


class RowError(ValueError):
    """A file or row that cannot be read as chains; the message says where and why."""


class PackError(RuntimeError):
    """A packaged model is missing, incomplete or corrupt; the message says how to fix it."""


class HeadError(InputError):
    """A head checkpoint we refuse to load; the message says why and what to do (a ValueError)."""


class JudgeError(InputError):
    """One chain could not be judged (retries spent, or a refused request); others may still work."""


class JudgeConfigError(InputError):
    """The judge is not configured, or the server refused the key, URL or model."""


class ReplyError(ValueError):
    """The verdict reply does not hold one usable verdict per step."""


class Cancelled(Exception):
    """Nobody reads a generation any more (the stream was closed); raised from the token callback to end it."""
