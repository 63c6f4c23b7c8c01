"""SLA clocks: business time across lunch, nights, weekends, holidays, 调休 and DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from crm_core.models import TicketPriority
from routing.sla import BusinessCalendar, SlaPolicy

SHANGHAI = ZoneInfo("Asia/Shanghai")
LONDON = ZoneInfo("Europe/London")
OFFICE = [(time(9), time(12)), (time(13), time(18))]
WEEKDAYS = dict.fromkeys(range(5), OFFICE)


def shanghai(*args: int) -> datetime:
    return datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


@pytest.fixture
def calendar() -> BusinessCalendar:
    """Mon–Fri 9–12 and 13–18 in Shanghai; Fri 2026-10-02 a holiday, Sat 2026-10-10 worked."""
    return BusinessCalendar(
        "Asia/Shanghai",
        WEEKDAYS,
        holidays={date(2026, 10, 2)},
        workdays={date(2026, 10, 10)},
    )


def test_is_open(calendar: BusinessCalendar) -> None:
    monday = (2026, 10, 12)
    assert calendar.is_open(shanghai(*monday, 9, 0))
    assert calendar.is_open(shanghai(*monday, 11, 59))
    assert not calendar.is_open(shanghai(*monday, 12, 30))  # lunch
    assert not calendar.is_open(shanghai(*monday, 18, 0))
    assert not calendar.is_open(shanghai(*monday, 8, 59))
    assert not calendar.is_open(shanghai(2026, 10, 2, 10, 0))  # holiday, a Friday
    assert calendar.is_open(shanghai(2026, 10, 10, 10, 0))  # make-up Saturday
    assert not calendar.is_open(shanghai(2026, 10, 17, 10, 0))  # ordinary Saturday
    # the same instant written in UTC: 01:30 UTC is 09:30 in Shanghai
    assert calendar.is_open(datetime(2026, 10, 12, 1, 30, tzinfo=UTC))


def test_within_one_period(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 12, 9, 30), timedelta(hours=1))
    assert due == shanghai(2026, 10, 12, 10, 30)
    assert due.tzinfo is UTC


def test_ends_exactly_at_closing_not_after_lunch(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 12, 9, 0), timedelta(hours=3))
    assert due == shanghai(2026, 10, 12, 12, 0)


def test_across_lunch(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 12, 11, 0), timedelta(hours=2))
    assert due == shanghai(2026, 10, 12, 14, 0)


def test_across_the_night(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 12, 17, 0), timedelta(hours=2))
    assert due == shanghai(2026, 10, 13, 10, 0)


def test_across_the_weekend(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 16, 17, 30), timedelta(hours=1))
    assert due == shanghai(2026, 10, 19, 9, 30)


def test_start_outside_hours_counts_from_next_opening(calendar: BusinessCalendar) -> None:
    due = calendar.add_business_time(shanghai(2026, 10, 17, 8, 0), timedelta(minutes=30))
    assert due == shanghai(2026, 10, 19, 9, 30)
    assert calendar.next_open(shanghai(2026, 10, 12, 12, 15)) == shanghai(2026, 10, 12, 13, 0)


def test_holiday_is_skipped(calendar: BusinessCalendar) -> None:
    # Thu 2026-10-01 17:00 + 2h: Fri 2 Oct is a holiday, Sat 3 and Sun 4 are weekend
    due = calendar.add_business_time(shanghai(2026, 10, 1, 17, 0), timedelta(hours=2))
    assert due == shanghai(2026, 10, 5, 10, 0)


def test_make_up_workday_counts(calendar: BusinessCalendar) -> None:
    # Fri 2026-10-09 17:00 + 2h: Saturday 10 Oct is worked (调休), with Monday's hours
    due = calendar.add_business_time(shanghai(2026, 10, 9, 17, 0), timedelta(hours=2))
    assert due == shanghai(2026, 10, 10, 10, 0)


def test_workday_hours_can_differ() -> None:
    calendar = BusinessCalendar(
        "Asia/Shanghai",
        WEEKDAYS,
        workdays={date(2026, 10, 10)},
        workday_hours=[(time(10), time(16))],
    )
    due = calendar.add_business_time(shanghai(2026, 10, 9, 17, 0), timedelta(hours=2))
    assert due == shanghai(2026, 10, 10, 11, 0)


def test_long_duration_spans_weeks(calendar: BusinessCalendar) -> None:
    # 5 business days of 8 hours from Monday 09:00 ends Friday 18:00 of the same week
    start = shanghai(2026, 10, 12, 9, 0)
    assert calendar.add_business_time(start, timedelta(hours=40)) == shanghai(2026, 10, 16, 18)
    assert calendar.business_time_between(start, shanghai(2026, 10, 16, 18)) == timedelta(
        hours=40
    )


def test_zero_duration_is_the_start(calendar: BusinessCalendar) -> None:
    start = shanghai(2026, 10, 17, 3, 0)
    assert calendar.add_business_time(start, timedelta(0)) == start


def test_naive_and_negative_input_is_refused(calendar: BusinessCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        calendar.add_business_time(datetime(2026, 10, 12, 9), timedelta(hours=1))
    with pytest.raises(ValueError, match="naive"):
        calendar.is_open(datetime(2026, 10, 12, 9))
    with pytest.raises(ValueError, match="negative"):
        calendar.add_business_time(shanghai(2026, 10, 12, 9), timedelta(hours=-1))


def test_midnight_end_means_end_of_day() -> None:
    calendar = BusinessCalendar("Asia/Shanghai", {0: [(time(20), time(0))]})
    assert calendar.is_open(shanghai(2026, 10, 12, 23, 59))
    assert not calendar.is_open(shanghai(2026, 10, 13, 0, 0))
    due = calendar.add_business_time(shanghai(2026, 10, 12, 23), timedelta(hours=2))
    assert due == shanghai(2026, 10, 19, 21, 0)


# --- DST (Europe/London: BST starts 2026-03-29, ends 2026-10-25) --------------------------


def london_office() -> BusinessCalendar:
    return BusinessCalendar("Europe/London", {day: [(time(9), time(17))] for day in range(5)})


def test_dst_spring_forward_over_the_weekend() -> None:
    # Friday 16:00 GMT + 2h: one hour on Friday, one on Monday from 09:00 BST (08:00 UTC)
    due = london_office().add_business_time(
        datetime(2026, 3, 27, 16, 0, tzinfo=LONDON), timedelta(hours=2)
    )
    assert due == datetime(2026, 3, 30, 10, 0, tzinfo=LONDON)
    assert due == datetime(2026, 3, 30, 9, 0, tzinfo=UTC)


def test_dst_fall_back_over_the_weekend() -> None:
    due = london_office().add_business_time(
        datetime(2026, 10, 23, 16, 0, tzinfo=LONDON), timedelta(hours=2)
    )
    assert due == datetime(2026, 10, 26, 10, 0, tzinfo=LONDON)
    assert due == datetime(2026, 10, 26, 10, 0, tzinfo=UTC)


def test_dst_night_is_real_elapsed_time_around_the_clock() -> None:
    calendar = BusinessCalendar.always_open("Europe/London")
    start = datetime(2026, 3, 28, 23, 0, tzinfo=LONDON)  # 23:00 GMT
    due = calendar.add_business_time(start, timedelta(hours=3))
    assert due == start.astimezone(UTC) + timedelta(hours=3)
    assert due.astimezone(LONDON).hour == 3  # 01:00–02:00 local never happened
    assert due != start + timedelta(hours=3)  # wall-clock arithmetic would say 02:00 BST
    start = datetime(2026, 10, 24, 23, 0, tzinfo=LONDON)  # 23:00 BST
    due = calendar.add_business_time(start, timedelta(hours=3))
    assert due.astimezone(LONDON).hour == 1  # 01:00 happened twice
    assert due == start.astimezone(UTC) + timedelta(hours=3)


# --- calendar validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "IANA"),
        ({"weekly": {0: [(time(12), time(9))]}}, "ends before it starts"),
        ({"weekly": {0: [(time(9), time(13)), (time(12), time(18))]}}, "overlap"),
        ({"weekly": {7: OFFICE}}, "weekday 7"),
        ({"weekly": {}}, "never open"),
        ({"holidays": {date(2026, 10, 10)}, "workdays": {date(2026, 10, 10)}}, "both"),
    ],
)
def test_calendar_validation(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"timezone": "Asia/Shanghai", "weekly": WEEKDAYS, **kwargs}
    with pytest.raises(ValueError, match=message):
        BusinessCalendar(**arguments)  # type: ignore[arg-type]


# --- SLA policy ----------------------------------------------------------------------------


def policy() -> SlaPolicy:
    minutes = {
        TicketPriority.LOW: 480,
        TicketPriority.NORMAL: 240,
        TicketPriority.HIGH: 60,
        TicketPriority.URGENT: 15,
    }
    return SlaPolicy(
        first_response={p: timedelta(minutes=m) for p, m in minutes.items()},
        resolution={p: timedelta(minutes=m * 8) for p, m in minutes.items()},
        business_hours_only={TicketPriority.URGENT: False},
    )


def test_due_times_in_business_hours(calendar: BusinessCalendar) -> None:
    first, resolution = policy().due_times(
        TicketPriority.NORMAL, shanghai(2026, 10, 16, 17, 0), calendar
    )
    assert first == shanghai(2026, 10, 19, 12, 0)  # 1h Fri + 3h Mon morning
    # 32h: 1h Fri, 8h Mon, Tue and Wed, then 7h Thursday (lunch skipped)
    assert resolution == shanghai(2026, 10, 22, 17, 0)
    assert first.tzinfo is UTC and resolution.tzinfo is UTC


def test_urgent_runs_around_the_clock(calendar: BusinessCalendar) -> None:
    opened = shanghai(2026, 10, 17, 22, 0)  # Saturday night
    first, resolution = policy().due_times(TicketPriority.URGENT, opened, calendar)
    assert first == opened + timedelta(minutes=15)
    assert resolution == opened + timedelta(hours=2)
    assert first.tzinfo is UTC


def test_one_flag_for_every_priority(calendar: BusinessCalendar) -> None:
    wall_clock = SlaPolicy(policy().first_response, policy().resolution, False)
    opened = shanghai(2026, 10, 17, 22, 0)
    assert wall_clock.due_times(TicketPriority.LOW, opened, calendar)[0] == opened + timedelta(
        hours=8
    )


def test_policy_needs_every_priority() -> None:
    with pytest.raises(ValueError, match="urgent"):
        SlaPolicy(
            first_response={p: timedelta(hours=1) for p in TicketPriority if p != "urgent"},
            resolution={p: timedelta(hours=1) for p in TicketPriority},
        )
