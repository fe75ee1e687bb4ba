"""The package's exception base and the three intents a caller acts on: retry, report, or look elsewhere.

Every exception class in `pynchy` derives from `PynchyError` (and, where one fits, the matching
builtin, as aiohttp does: `NotFoundError` is a `LookupError`), so ``except PynchyError`` means
"one of ours". What a caller does with a failure is decided by its type, never by attributes:

- `TemporaryError`: try again later; `retry_after` says when, if the failing side said so.
- `RefusedError`: retrying will not help until someone changes the input; report `reason` and
  `message` (a status condition, a Pod's reason) and wait for the next change.
- `NotFoundError`: the thing asked for does not exist (any more).

Anything else is unexpected: a work queue retries it with backoff and logs its traceback.
This module imports nothing from the package, so any layer may use it.
"""

from __future__ import annotations


class PynchyError(Exception):
    """The base of every exception Pynchy raises on purpose; catch it to catch any of them."""


class TemporaryError(PynchyError):
    """A failure expected to pass by itself: no connection, throttling, a server error, a conflict.

    Retry it. `retry_after` is the delay in seconds the failing side asked for (an HTTP
    Retry-After, for example), or None to use the caller's own backoff. The work queue retries
    these without logging a traceback: they are conditions, not bugs.
    """

    def __init__(self, *args: object, retry_after: float | None = None) -> None:
        super().__init__(*args)
        self.retry_after = retry_after


class RefusedError(PynchyError):
    """The input cannot be acted on, and trying again unchanged gives the same answer.

    `reason` is a CamelCase word and `message` a sentence saying what to fix: together they are a
    status condition (``Cond("Ready", False, exc.reason, exc.message)``) or a Pod's reason and
    message. The code that raises one should catch it where it can write that report; should it
    reach the work queue, the key is logged and not retried (it runs again on its next event).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class NotFoundError(PynchyError, LookupError):
    """What was asked for does not exist (or no longer does): a Group, an object, a pod.

    A `LookupError`, so code that catches that keeps working.
    """
