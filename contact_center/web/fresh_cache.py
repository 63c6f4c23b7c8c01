"""Answers computed once and reused while fresh.

Consoles ask far more often than things change: every open console reloads its inbox
rows on each live event, scripts poll ``/console/inbox.json``, and every request needs
the agent behind its session cookie. A web process keeps such answers (inbox pages per
agent, teams and filters; checked sessions per token hash) and reuses each while

- nothing was invalidated since it was computed (for inbox pages: a domain event of this
  process or, in scale-out, of any other process through the live hub's Redis
  subscription; for both: every state-changing console request of this process), and
- it is younger than ``max_age`` seconds (the SLA clock moves on its own, and a change
  made through another process may publish nothing here); an older answer (up to twice
  that) is still given while one computation replaces it, so nobody waits for age alone.

Callers asking for the same missing answer at once wait for one computation instead of
each running the queries (a live event makes every console ask at the same moment; an
expired session entry is asked for by every tab of that agent at once).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

DEFAULT_MAX_AGE = 5.0
DEFAULT_MAX_ENTRIES = 2_000

T = TypeVar("T")


@dataclass
class _Entry(Generic[T]):
    born: float
    task: asyncio.Task[T]
    refresh: asyncio.Task[T] | None = None
    """The computation that will replace this answer once it aged (answers meanwhile)."""

    def failed(self) -> bool:
        return self.task.done() and (self.task.cancelled() or self.task.exception() is not None)


class FreshCache(Generic[T]):
    """Answers by key, each computed by one task, dropped by :meth:`invalidate` or age.

    An answer older than ``max_age`` (but younger than twice that) is still given while
    one computation replaces it in the background, so nobody waits because of age alone;
    after :meth:`invalidate` everybody waits for the new answer.
    """

    def __init__(self, max_age: float = DEFAULT_MAX_AGE,
                 max_entries: int = DEFAULT_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self.clock = clock
        self.computed = 0
        """How many answers were computed (the rest came from memory)."""
        self._entries: OrderedDict[Hashable, _Entry[T]] = OrderedDict()
        self._generation = 0

    def invalidate(self, *_args: object) -> None:
        """Something changed: every answer is computed afresh when next asked for (a
        computation already running still answers those who asked before the change)."""
        self._entries.clear()
        self._generation += 1

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The answer for ``key``: remembered, being computed, or computed now."""
        if self.max_age <= 0:
            self.computed += 1
            return await compute()
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and not entry.failed():
            age = now - entry.born
            if age <= self.max_age:
                # shielded: a client that goes away does not cancel the others' answer
                return await asyncio.shield(entry.task)
            if age <= 2 * self.max_age and entry.task.done():
                if entry.refresh is None:
                    entry.refresh = self._refresh(key, entry, now, compute)
                return entry.task.result()
        entry = self._start(now, compute)
        self._entries.pop(key, None)
        self._entries[key] = entry
        entry.task.add_done_callback(lambda _task, key=key, entry=entry: self._drop_failed(
            key, entry))
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return await asyncio.shield(entry.task)

    def _start(self, now: float, compute: Callable[[], Awaitable[T]]) -> _Entry[T]:
        self.computed += 1
        return _Entry(now, asyncio.ensure_future(compute()))

    def _refresh(self, key: Hashable, old: _Entry[T], now: float,
                 compute: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        new = self._start(now, compute)
        generation = self._generation

        def replace(_task: asyncio.Task[T]) -> None:
            if new.failed():
                old.refresh = None  # the next asker tries again
            elif generation == self._generation and self._entries.get(key) is old:
                self._entries[key] = new

        new.task.add_done_callback(replace)
        return new.task

    def _drop_failed(self, key: Hashable, entry: _Entry[T]) -> None:
        if entry.failed() and self._entries.get(key) is entry:
            del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
