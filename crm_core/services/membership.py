"""Membership: points earned on orders, redeemed and expired, and levels by rules.

Points live in a ledger (``points_ledger``): an ``earn`` entry keeps how many of its
points are still ``remaining`` and when they expire; redeeming and expiring take the
oldest points first. A customer's level is the highest-ranked :class:`MemberLevel` whose
rule holds (lifetime spend ≥ ``min_spend`` or points earned ≥ ``min_points``). A level
change is logged in ``member_level_changes``; when the level maps to a customer tier the
customer's ``tier_code`` follows and an audit entry (action ``member_level``) lets the
care campaigns' ``tier_change`` trigger send its message.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import StateError, ValidationError
from crm_core.models import (
    Customer,
    MemberLevel,
    MemberLevelChange,
    Membership,
    PointsEntry,
)
from crm_core.services import audit

log = structlog.get_logger(__name__)

EARN = "earn"
REDEEM = "redeem"
EXPIRE = "expire"
ADJUST = "adjust"
DEFAULT_POINTS_LIFETIME = timedelta(days=365)
"""How long earned points stay valid unless the caller says otherwise."""
LEVEL_ACTION = "member_level"
"""Audit action of a level change (read by the ``tier_change`` campaign trigger)."""


async def membership_of(session: AsyncSession, customer_id: int, *, now: datetime,
                        ) -> Membership:
    """The customer's membership, created (no level, no points) on first use."""
    member = await session.get(Membership, customer_id)
    if member is None:
        member = Membership(customer_id=customer_id, points_balance=0, points_earned=0,
                            total_spend=Decimal("0"), joined_at=now, updated_at=now)
        session.add(member)
        await session.flush()
    return member


async def earn_points(session: AsyncSession, customer_id: int, *, spend: Decimal, now: datetime,
                      order_id: int | None = None, actor: str = "system",
                      lifetime: timedelta = DEFAULT_POINTS_LIFETIME) -> int:
    """Credit points for ``spend`` at the member's level earn rate (whole points, rounded
    down), add the spend to the lifetime total and re-evaluate the level. Returns the
    points credited."""
    if spend < 0:
        raise ValidationError("spend", spend, "must not be negative")
    member = await membership_of(session, customer_id, now=now)
    rate = 1.0
    if member.level_code:
        level = await session.get(MemberLevel, member.level_code)
        rate = level.earn_rate if level is not None else 1.0
    points = math.floor(float(spend) * rate)
    member.total_spend = (member.total_spend or Decimal("0")) + spend
    if points > 0:
        session.add(PointsEntry(customer_id=customer_id, kind=EARN, points=points,
                                remaining=points, order_id=order_id, expires_at=now + lifetime,
                                actor=actor, at=now, note=None))
        member.points_balance += points
        member.points_earned += points
    member.updated_at = now
    await session.flush()
    await evaluate_level(session, customer_id, now=now, actor=actor,
                         reason=f"order {order_id}" if order_id else "points earned")
    return points


async def _consume(session: AsyncSession, customer_id: int, points: int, now: datetime) -> None:
    """Take ``points`` from the oldest unexpired earn entries."""
    rows = await session.scalars(
        select(PointsEntry)
        .where(PointsEntry.customer_id == customer_id, PointsEntry.kind.in_([EARN, ADJUST]),
               PointsEntry.remaining > 0)
        .order_by(PointsEntry.expires_at.is_(None), PointsEntry.expires_at, PointsEntry.id))
    left = points
    for entry in rows:
        if entry.expires_at is not None and entry.expires_at <= now:
            continue
        take = min(entry.remaining, left)
        entry.remaining -= take
        left -= take
        if left == 0:
            return


async def redeem_points(session: AsyncSession, customer_id: int, points: int, *, now: datetime,
                        actor: str, note: str | None = None) -> PointsEntry:
    """Spend ``points`` of the balance (oldest first); refuses more than the balance."""
    if points <= 0:
        raise ValidationError("points", points, "must be a positive whole number")
    member = await membership_of(session, customer_id, now=now)
    if points > member.points_balance:
        raise StateError(f"only {member.points_balance} points available, not {points}")
    await _consume(session, customer_id, points, now)
    member.points_balance -= points
    member.updated_at = now
    entry = PointsEntry(customer_id=customer_id, kind=REDEEM, points=-points, remaining=0,
                        actor=actor, at=now, note=note)
    session.add(entry)
    await session.flush()
    return entry


async def expire_points(session: AsyncSession, *, now: datetime) -> int:
    """Expire every earned point whose time has come (one ``expire`` entry per customer);
    returns the points expired. Safe to run repeatedly: expired entries keep no
    ``remaining``."""
    rows = list(await session.scalars(
        select(PointsEntry)
        .where(PointsEntry.kind.in_([EARN, ADJUST]), PointsEntry.expires_at <= now,
               PointsEntry.remaining > 0)
        .order_by(PointsEntry.customer_id, PointsEntry.id)))
    by_customer: dict[int, int] = {}
    for entry in rows:
        by_customer[entry.customer_id] = by_customer.get(entry.customer_id, 0) + entry.remaining
        entry.remaining = 0
    for customer_id, points in by_customer.items():
        member = await membership_of(session, customer_id, now=now)
        member.points_balance -= points
        member.updated_at = now
        session.add(PointsEntry(customer_id=customer_id, kind=EXPIRE, points=-points,
                                remaining=0, actor="system", at=now, note="expired"))
    await session.flush()
    if by_customer:
        log.info("points.expired", customers=len(by_customer), points=sum(by_customer.values()))
    return sum(by_customer.values())


async def level_for(session: AsyncSession, member: Membership) -> MemberLevel | None:
    """The highest-ranked level whose rule the member meets (``None``: no level)."""
    levels = await session.scalars(select(MemberLevel).order_by(MemberLevel.rank.desc()))
    for level in levels:
        by_spend = level.min_spend is not None and member.total_spend >= level.min_spend
        by_points = level.min_points is not None and member.points_earned >= level.min_points
        if by_spend or by_points or (level.min_spend is None and level.min_points is None):
            return level
    return None


async def evaluate_level(session: AsyncSession, customer_id: int, *, now: datetime,
                         actor: str = "system", reason: str | None = None,
                         ) -> MemberLevelChange | None:
    """Move the member to the level the rules give; log the change (and follow it with
    the customer's tier when the level names one). Returns the change, if any."""
    member = await membership_of(session, customer_id, now=now)
    level = await level_for(session, member)
    new_code = level.code if level is not None else None
    if new_code == member.level_code:
        return None
    change = MemberLevelChange(customer_id=customer_id, from_level=member.level_code,
                               to_level=new_code, reason=reason, at=now)
    session.add(change)
    member.level_code = new_code
    member.updated_at = now
    customer = await session.get(Customer, customer_id)
    if customer is not None and level is not None and level.tier_code \
            and customer.tier_code != level.tier_code:
        before = customer.tier_code
        customer.tier_code = level.tier_code
        entry = audit.record(session, actor=actor, action=LEVEL_ACTION, entity_type="customer",
                             entity_id=customer_id,
                             before={"tier_code": before, "member_level": change.from_level},
                             after={"tier_code": level.tier_code, "member_level": new_code})
        entry.at = now
    await session.flush()
    log.debug("member.level_changed", customer_id=customer_id, from_level=change.from_level,
             to_level=new_code)
    return change
