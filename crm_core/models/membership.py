"""Membership: levels by rules, each customer's points and level, the points ledger."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Float, ForeignKey, Index, Integer, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow


class MemberLevel(Base):
    """A member level (e.g. silver, gold) reached by lifetime spend *or* points earned;
    the highest ``rank`` whose rule holds wins. ``tier_code`` is the customer tier the
    level puts its members in, so ``tier_change`` care campaigns fire on level changes."""

    __tablename__ = "member_levels"

    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str | None] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    min_spend: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    min_points: Mapped[int | None] = mapped_column(Integer)
    earn_rate: Mapped[float] = mapped_column(Float, default=1.0)
    """Points earned per unit of currency spent by members of this level."""
    tier_code: Mapped[str | None] = mapped_column(
        ForeignKey("customer_tiers.code", ondelete="SET NULL", onupdate="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Membership(Base):
    """A customer's membership: level, points balance and the totals the rules look at."""

    __tablename__ = "memberships"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True)
    level_code: Mapped[str | None] = mapped_column(
        ForeignKey("member_levels.code", ondelete="SET NULL", onupdate="CASCADE"), index=True)
    points_balance: Mapped[int] = mapped_column(Integer, default=0)
    points_earned: Mapped[int] = mapped_column(Integer, default=0)
    """All points ever earned (redeeming or expiring does not lower it)."""
    total_spend: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    joined_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class PointsEntry(Base):
    """One move of points: ``earn`` (+, with ``remaining`` and ``expires_at``), ``redeem``
    (−), ``expire`` (−) or ``adjust`` (±). Redeeming and expiring use the oldest earned
    points first, lowering their ``remaining``."""

    __tablename__ = "points_ledger"
    __table_args__ = (
        Index("ix_points_ledger_customer_at", "customer_id", "at"),
        Index("ix_points_ledger_expiry", "kind", "expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(10))
    points: Mapped[int] = mapped_column(Integer)
    remaining: Mapped[int] = mapped_column(Integer, default=0)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None]
    note: Mapped[str | None] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(100), default="system")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class MemberLevelChange(Base):
    """One change of a customer's member level, with why."""

    __tablename__ = "member_level_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    from_level: Mapped[str | None] = mapped_column(String(50))
    to_level: Mapped[str | None] = mapped_column(String(50))
    reason: Mapped[str | None] = mapped_column(String(300))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

