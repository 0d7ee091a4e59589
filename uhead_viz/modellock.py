"""The model's lock, fair to visitors: a long job steps aside between its pieces.

One model serves every visitor, and its capture hooks forbid two passes at once, so all
model work is serialised. A scored file is many short pieces of work (one chain each); if
it held the model for its whole length, a visitor who asks a question meanwhile would wait
for the whole file. Here a *background* holder (the file job, taking the lock once per
chain) gets the lock only when no *foreground* request (a question, a pasted chain, a
verifier) is waiting, and foreground requests are served in the order they arrived. So a
question waits at most for the one chain being scored when it arrives.

The lock is not tied to a thread: a streaming request is a generator that the web server
resumes on whichever worker thread is free, so the thread that releases it is not always
the one that took it.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class ModelLock:
    """A non-reentrant lock with first-come order for foreground holders and a background class."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._held = False
        self._queue: deque[int] = deque()  # tickets of waiting foreground holders, oldest first
        self._tickets = itertools.count()
        self._bg_waiting = 0

    def acquire(self, blocking: bool = True, timeout: float = -1, background: bool = False) -> bool:
        """Take the lock; a background caller waits while any foreground caller waits."""
        wait = None if timeout is None or timeout < 0 else timeout
        if not blocking:
            wait = 0.0
        with self._cond:
            if background:
                self._bg_waiting += 1
                try:
                    ok = self._cond.wait_for(lambda: not self._held and not self._queue, wait)
                finally:
                    self._bg_waiting -= 1
            else:
                me = next(self._tickets)
                self._queue.append(me)
                try:
                    ok = self._cond.wait_for(lambda: not self._held and self._queue[0] == me, wait)
                finally:
                    self._queue.remove(me)
                    if not ok:
                        self._cond.notify_all()  # the next in line may be free to go now
            if ok:
                self._held = True
            return ok

    def release(self) -> None:
        with self._cond:
            if not self._held:
                raise RuntimeError("release of an unheld ModelLock")
            self._held = False
            self._cond.notify_all()

    def locked(self) -> bool:
        return self._held

    def waiting(self, background: bool = False) -> int:
        """How many foreground (or background) callers wait now."""
        with self._cond:
            return self._bg_waiting if background else len(self._queue)

    def __enter__(self) -> ModelLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Hold the lock for one piece of a long job, after every waiting foreground caller."""
        self.acquire(background=True)
        try:
            yield
        finally:
            self.release()
