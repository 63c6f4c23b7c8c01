"""The console's short-lived caches: checked sessions and computed inbox pages."""

from __future__ import annotations

import asyncio

import pytest

from contact_center.web.fresh_cache import FreshCache
from contact_center.web.session_cache import CheckedLogin, SessionCache, token_key
from crm_core.models import Agent, AgentRole, Availability


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def loaded_agent() -> Agent:
    agent = Agent(id=7, login="li", display_name="李娜", password_hash="x",
                  role=AgentRole.SUPERVISOR, skills=["billing"], languages=["zh"],
                  availability=Availability.ONLINE, active=True, ui_language="zh-CN")
    return agent


def checked(csrf: str = "csrf-1") -> CheckedLogin:
    return CheckedLogin.of(loaded_agent(), csrf, {3, 4}, {7, 8})


async def test_a_checked_session_is_remembered_for_its_max_age_only() -> None:
    clock = Clock()
    cache = SessionCache(max_age=5.0, clock=clock)
    checks = 0

    async def check() -> CheckedLogin | None:
        nonlocal checks
        checks += 1
        return checked(f"csrf-{checks}")

    found = await cache.login("token-1", check)
    assert found is not None and found.csrf_token == "csrf-1"
    assert found.team_ids == {3, 4} and found.team_member_ids == {7, 8}
    clock.now += 5.0
    assert (await cache.login("token-1", check)) == found
    assert checks == 1
    assert (await cache.login("token-2", check)).csrf_token == "csrf-2"
    clock.now += 5.1  # past twice the age: checked again before answering
    assert (await cache.login("token-1", check)).csrf_token == "csrf-3"
    cache.invalidate()
    assert (await cache.login("token-1", check)).csrf_token == "csrf-4"


async def test_no_live_session_is_remembered_as_none_and_zero_switches_it_off() -> None:
    cache = SessionCache(max_age=5.0)
    checks = 0

    async def nobody() -> CheckedLogin | None:
        nonlocal checks
        checks += 1
        return None

    assert await cache.login("expired", nobody) is None
    assert await cache.login("expired", nobody) is None
    assert checks == 1
    off = SessionCache(max_age=0)
    await off.login("expired", nobody)
    await off.login("expired", nobody)
    assert checks == 3


def test_each_request_gets_its_own_copy_of_the_agent() -> None:
    found = checked()
    first, second = found.agent(), found.agent()
    assert first is not second
    assert (first.id, first.login, first.display_name, first.role) == (
        7, "li", "李娜", AgentRole.SUPERVISOR)
    first.skills.append("refunds")
    first.availability = Availability.AWAY
    assert second.skills == ["billing"]
    assert found.agent().availability == Availability.ONLINE


async def test_the_cache_keeps_no_token_and_the_oldest_leave_first_when_full() -> None:
    cache = SessionCache(max_age=5.0, max_entries=2)

    async def check() -> CheckedLogin | None:
        return checked()

    await cache.login("secret-token-value", check)
    assert "secret-token-value" not in repr(list(cache._entries))
    assert token_key("secret-token-value") in cache._entries
    await cache.login("b", check)
    await cache.login("c", check)
    assert len(cache) == 2 and token_key("secret-token-value") not in cache._entries


async def test_concurrent_askers_of_a_missing_page_share_one_computation() -> None:
    cache: FreshCache[list[int]] = FreshCache(max_age=5.0)
    release = asyncio.Event()
    calls = 0

    async def compute() -> list[int]:
        nonlocal calls
        calls += 1
        await release.wait()
        return [calls]

    waiting = [asyncio.create_task(cache.get("all", compute)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(*waiting)
    assert calls == 1 and cache.computed == 1
    assert all(answer == [1] for answer in answers)
    assert await cache.get("all", compute) == [1]
    assert await cache.get("mine", compute) == [2]
    assert calls == 2


async def test_a_change_or_the_age_makes_the_page_computed_again() -> None:
    clock = Clock()
    cache: FreshCache[int] = FreshCache(max_age=5.0, clock=clock)
    counter = iter(range(1, 100))

    async def compute() -> int:
        return next(counter)

    assert await cache.get("k", compute) == 1
    assert await cache.get("k", compute) == 1
    cache.invalidate()
    assert await cache.get("k", compute) == 2
    clock.now += 10.5
    assert await cache.get("k", compute) == 3
    off: FreshCache[int] = FreshCache(max_age=0)
    assert await off.get("k", compute) == 4
    assert await off.get("k", compute) == 5


async def test_a_failed_computation_is_not_remembered() -> None:
    cache: FreshCache[str] = FreshCache(max_age=5.0)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("database went away")
        return "rows"

    with pytest.raises(ConnectionError):
        await cache.get("k", flaky)
    assert await cache.get("k", flaky) == "rows"
    assert attempts == 2


async def test_a_client_that_goes_away_does_not_cancel_the_others_answer() -> None:
    cache: FreshCache[str] = FreshCache(max_age=5.0)
    release = asyncio.Event()

    async def compute() -> str:
        await release.wait()
        return "rows"

    leaving = asyncio.create_task(cache.get("k", compute))
    staying = asyncio.create_task(cache.get("k", compute))
    await asyncio.sleep(0)
    leaving.cancel()
    await asyncio.sleep(0)
    release.set()
    assert await staying == "rows"
    assert leaving.cancelled()
    assert cache.computed == 1


async def test_an_aged_answer_is_given_while_one_computation_replaces_it() -> None:
    clock = Clock()
    cache: FreshCache[int] = FreshCache(max_age=5.0, clock=clock)
    release = asyncio.Event()
    counter = iter(range(1, 100))

    async def compute() -> int:
        value = next(counter)
        if value > 1:
            await release.wait()
        return value

    assert await cache.get("k", compute) == 1
    clock.now += 6.0
    assert [await cache.get("k", compute) for _ in range(5)] == [1] * 5
    assert cache.computed == 2  # one replacement under way, nobody waited for it
    release.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k", compute) == 2
    assert cache.computed == 2


async def test_a_change_during_a_replacement_is_not_covered_by_it() -> None:
    clock = Clock()
    cache: FreshCache[int] = FreshCache(max_age=5.0, clock=clock)
    release = asyncio.Event()
    counter = iter(range(1, 100))

    async def compute() -> int:
        value = next(counter)
        if value == 2:
            await release.wait()
        return value

    assert await cache.get("k", compute) == 1
    clock.now += 6.0
    assert await cache.get("k", compute) == 1  # replacement 2 started before the change
    cache.invalidate()
    release.set()
    await asyncio.sleep(0.01)
    assert await cache.get("k", compute) == 3
