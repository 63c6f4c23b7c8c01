"""SLA clocks: business hours, holidays and make-up workdays, and the due times they give.

A :class:`BusinessCalendar` knows when the contact center is open, in wall-clock hours of
its own time zone: weekly opening hours per weekday, public holidays (closed all day,
even on a weekday) and make-up workdays (调休: a Saturday or Sunday worked to bridge a
holiday, open with ``workday_hours``). Business time is real elapsed time inside opening
hours, so a DST change during opening hours counts as the hour it really is.

A :class:`SlaPolicy` turns a ticket's priority and opening time into its first-response and
resolution due times, counted in business time or, for priorities that are served around
the clock (often *urgent*), in plain elapsed time.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise

from crm_core.models import TicketPriority

Interval = tuple[time, time]
"""Opening hours on one day, local wall clock; an end of ``time(0)`` means midnight."""

MIDNIGHT = time(0)
_MAX_DAYS_SEARCHED = 3 * 366
"""How far ahead an SLA clock looks for opening hours before giving up."""


def _check_intervals(intervals: Sequence[Interval], where: str) -> list[Interval]:
    """Sorted, non-overlapping intervals, or ValueError naming ``where``."""
    cleaned: list[Interval] = []
    for start, end in intervals:
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"{where}: opening hours are wall-clock times, without a zone")
        if end != MIDNIGHT and end <= start:
            raise ValueError(f"{where}: {start:%H:%M}-{end:%H:%M} ends before it starts")
        cleaned.append((start, end))
    cleaned.sort()
    for (_, end), (start, _) in pairwise(cleaned):
        if end == MIDNIGHT or start < end:
            raise ValueError(f"{where}: opening hours overlap at {start:%H:%M}")
    return cleaned


class BusinessCalendar:
    """When the contact center is open, in its own time zone.

    ``weekly`` maps a weekday (0 = Monday … 6 = Sunday) to its opening hours; a missing or
    empty day is closed. ``holidays`` are closed all day; ``workdays`` are make-up working
    days (调休) open with ``workday_hours`` (default: Monday's hours). Opening hours are
    local wall-clock times; ``(time(9), time(0))`` means from 09:00 to midnight.
    """

    def __init__(
        self,
        timezone: str,
        weekly: Mapping[int, Sequence[Interval]],
        holidays: Iterable[date] = (),
        workdays: Iterable[date] = (),
        workday_hours: Sequence[Interval] | None = None,
    ) -> None:
        try:
            self.zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{timezone!r} is not an IANA time zone such as Asia/Shanghai"
            ) from None
        self.timezone = timezone
        self.weekly: dict[int, list[Interval]] = {}
        for day, intervals in weekly.items():
            if day not in range(7):
                raise ValueError(f"weekday {day!r}: use 0 (Monday) to 6 (Sunday)")
            self.weekly[day] = _check_intervals(intervals, f"weekday {day}")
        self.holidays: frozenset[date] = frozenset(holidays)
        self.workdays: frozenset[date] = frozenset(workdays)
        both = sorted(self.holidays & self.workdays)
        if both:
            raise ValueError(f"{both[0].isoformat()} is listed both as holiday and as workday")
        self.workday_hours: list[Interval] = _check_intervals(
            self.weekly.get(0, []) if workday_hours is None else workday_hours, "workday_hours"
        )
        if not any(self.weekly.values()) and not (self.workdays and self.workday_hours):
            raise ValueError("the calendar is never open: give opening hours for some weekday")

    @classmethod
    def always_open(cls, timezone: str = "UTC") -> BusinessCalendar:
        """A calendar open around the clock, every day (business time = elapsed time)."""
        return cls(timezone, {day: [(MIDNIGHT, MIDNIGHT)] for day in range(7)})

    def __repr__(self) -> str:
        return (
            f"BusinessCalendar({self.timezone!r}, {len(self.holidays)} holidays, "
            f"{len(self.workdays)} workdays)"
        )

    def hours_on(self, day: date) -> list[Interval]:
        """The opening hours of one local calendar day (empty when closed)."""
        if day in self.holidays:
            return []
        if day in self.workdays:
            return list(self.workday_hours)
        return list(self.weekly.get(day.weekday(), []))

    def _local(self, day: date, moment: time) -> datetime:
        return datetime.combine(day, moment, tzinfo=self.zone)

    def _open_periods(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        """The opening periods of a local day, as UTC (start, end) pairs."""
        for start, end in self.hours_on(day):
            opens = self._local(day, start).astimezone(UTC)
            if end == MIDNIGHT:
                closes = self._local(day + timedelta(days=1), MIDNIGHT).astimezone(UTC)
            else:
                closes = self._local(day, end).astimezone(UTC)
            if closes > opens:
                yield opens, closes

    def _periods_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening periods that end after ``moment`` (UTC), in order, clipped to start at it."""
        moment = moment.astimezone(UTC)
        day = moment.astimezone(self.zone).date()
        for offset in range(-1, _MAX_DAYS_SEARCHED):
            for opens, closes in self._open_periods(day + timedelta(days=offset)):
                if closes > moment:
                    yield max(opens, moment), closes
        raise ValueError(
            f"no opening hours within {_MAX_DAYS_SEARCHED} days of {moment.isoformat()}"
        )

    def is_open(self, moment: datetime) -> bool:
        """Whether the contact center is open at an aware ``moment``."""
        _require_aware(moment, "moment")
        moment = moment.astimezone(UTC)
        day = moment.astimezone(self.zone).date()
        return any(
            opens <= moment < closes
            for offset in (-1, 0)
            for opens, closes in self._open_periods(day + timedelta(days=offset))
        )

    def next_open(self, moment: datetime) -> datetime:
        """The first moment at or after ``moment`` when the center is open (UTC)."""
        _require_aware(moment, "moment")
        return next(self._periods_from(moment))[0]

    def add_business_time(self, start: datetime, duration: timedelta) -> datetime:
        """The moment (UTC) when ``duration`` of opening hours has passed since ``start``.

        Nights, weekends and holidays do not count; make-up workdays do. A start outside
        opening hours begins counting at the next opening. A zero duration gives ``start``.
        """
        _require_aware(start, "start")
        if duration < timedelta(0):
            raise ValueError(f"duration {duration} is negative")
        if not duration:
            return start.astimezone(UTC)
        remaining = duration
        for opens, closes in self._periods_from(start):
            available = closes - opens
            if remaining <= available:
                return opens + remaining
            remaining -= available
        raise AssertionError("unreachable: _periods_from raises when it runs out")

    def business_time_between(self, start: datetime, end: datetime) -> timedelta:
        """How much opening time lies between two aware moments (zero if ``end`` is earlier)."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        end = end.astimezone(UTC)
        total = timedelta(0)
        if end <= start:
            return total
        for opens, closes in self._periods_from(start):
            if opens >= end:
                break
            total += min(closes, end) - opens
        return total


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} {moment!r} is naive: pass a timezone-aware datetime")


@dataclass(frozen=True)
class SlaPolicy:
    """How long a ticket may wait for its first response and its resolution, per priority.

    ``business_hours_only`` is one flag for every priority or a flag per priority (missing
    priorities count in business hours); a priority counted around the clock (typically
    urgent) gets plain elapsed time.
    """

    first_response: dict[TicketPriority, timedelta]
    resolution: dict[TicketPriority, timedelta]
    business_hours_only: bool | dict[TicketPriority, bool] = True

    def __post_init__(self) -> None:
        for name in ("first_response", "resolution"):
            targets: dict[TicketPriority, timedelta] = getattr(self, name)
            missing = [p.value for p in TicketPriority if p not in targets]
            if missing:
                raise ValueError(f"{name}: no target for priority {', '.join(missing)}")
            for priority, target in targets.items():
                if target <= timedelta(0):
                    raise ValueError(f"{name}.{priority}: must be positive, not {target}")

    def counts_business_hours(self, priority: TicketPriority) -> bool:
        """Whether this priority's clock runs only in opening hours."""
        if isinstance(self.business_hours_only, bool):
            return self.business_hours_only
        return self.business_hours_only.get(TicketPriority(priority), True)

    def due_times(
        self, priority: TicketPriority, opened_at: datetime, calendar: BusinessCalendar
    ) -> tuple[datetime, datetime]:
        """First-response and resolution due times (UTC) of a ticket opened at ``opened_at``."""
        _require_aware(opened_at, "opened_at")
        priority = TicketPriority(priority)
        first, resolve = self.first_response[priority], self.resolution[priority]
        if self.counts_business_hours(priority):
            return (
                calendar.add_business_time(opened_at, first),
                calendar.add_business_time(opened_at, resolve),
            )
        opened = opened_at.astimezone(UTC)
        return opened + first, opened + resolve
