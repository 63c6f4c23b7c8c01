"""The sales flow: pipeline stages, opportunities, follow-ups, orders, payments, contracts."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow

MONEY = Numeric(14, 2)
"""Amounts: two decimals, up to a trillion."""


class PipelineStage(Base):
    """An admin-defined step of the sales pipeline with its win probability (0–1).

    ``outcome`` is ``open`` for the working stages, ``won`` or ``lost`` for the ends.
    """

    __tablename__ = "pipeline_stages"

    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str | None] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer, default=100)
    probability: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[str] = mapped_column(String(10), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Opportunity(Base):
    """A lead or deal with one customer: expected value, stage, probability and owner."""

    __tablename__ = "opportunities"
    __table_args__ = (Index("ix_opportunities_status_close", "status", "expected_close_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    stage_code: Mapped[str] = mapped_column(
        ForeignKey("pipeline_stages.code", onupdate="CASCADE"), index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"))
    """The expected value of the deal."""
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    probability: Mapped[float | None] = mapped_column(Float)
    """The owner's own estimate (0–1); the stage's probability when empty."""
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True)
    source: Mapped[str | None] = mapped_column(String(100))
    expected_close_on: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(10), default="open")
    """``open``, ``won`` or ``lost`` (follows the stage's outcome)."""
    lost_reason: Mapped[str | None] = mapped_column(String(300))
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FollowUp(Base):
    """One contact with a customer about a sale: the customer's attitude and when to call
    again. An open ``next_contact_on`` is a reminder in the console until a later
    follow-up of the same customer (or the agent) settles it (``reminder_done_at``)."""

    __tablename__ = "follow_ups"
    __table_args__ = (
        Index("ix_follow_ups_next_contact", "reminder_done_at", "next_contact_on"),
        Index("ix_follow_ups_agent_at", "agent_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    opportunity_id: Mapped[int | None] = mapped_column(
        ForeignKey("opportunities.id", ondelete="SET NULL"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    channel: Mapped[str | None] = mapped_column(String(20))
    attitude: Mapped[str] = mapped_column(String(20), default="neutral")
    """``positive``, ``neutral``, ``hesitant`` or ``negative``."""
    note: Mapped[str | None] = mapped_column(Text)
    next_contact_on: Mapped[date | None] = mapped_column(Date)
    reminder_done_at: Mapped[datetime | None]
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Order(Base):
    """What a customer bought: lines, total and currency. ``status``: ``confirmed`` or
    ``cancelled``; only confirmed orders count as revenue."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_customer_ordered", "customer_id", "ordered_at"),
        Index("ix_orders_ordered_at", "ordered_at"),
        # Reports over long ranges (RFM, revenue by agent and month): an index-only scan.
        Index("ix_orders_confirmed_ordered", "status", "currency", "ordered_at",
              postgresql_include=["customer_id", "agent_id", "amount"]),
        # Roll-up refresh: what changed since the watermark.
        Index("ix_orders_updated_at", "updated_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[str | None] = mapped_column(String(30), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    opportunity_id: Mapped[int | None] = mapped_column(
        ForeignKey("opportunities.id", ondelete="SET NULL"), index=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id", ondelete="SET NULL"))
    """The agent credited with the sale (by default the customer's owner when ordered)."""
    status: Mapped[str] = mapped_column(String(20), default="confirmed")
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"))
    paid_amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"))
    """Sum of the order's payments (kept with each payment, so receivables are one scan)."""
    ordered_at: Mapped[datetime] = mapped_column(default=utcnow)
    due_on: Mapped[date | None] = mapped_column(Date)
    """When payment is due; an unpaid balance after it is overdue."""
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrderLine(Base):
    """One product line of an order."""

    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(
        ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    product: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str | None] = mapped_column(String(100))
    quantity: Mapped[Decimal] = mapped_column(Numeric(12, 3), default=Decimal("1"))
    unit_price: Mapped[Decimal] = mapped_column(MONEY)
    amount: Mapped[Decimal] = mapped_column(MONEY)


class Payment(Base):
    """Money received against an order."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    method: Mapped[str | None] = mapped_column(String(50))
    reference: Mapped[str | None] = mapped_column(String(200))
    paid_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Contract(Base):
    """A contract or subscription with its term. Active contracts feed the care
    campaigns' ``contract_end`` trigger and the renewal part of the revenue forecast.
    ``status``: ``active``, ``renewed`` (a successor exists), ``ended`` or ``cancelled``."""

    __tablename__ = "contracts"
    __table_args__ = (Index("ix_contracts_status_end", "status", "end_on"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(20), default="contract")
    """``contract`` or ``subscription``."""
    title: Mapped[str] = mapped_column(String(300))
    start_on: Mapped[date] = mapped_column(Date)
    end_on: Mapped[date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(MONEY, default=Decimal("0"))
    """The value of one term (what a renewal would bring)."""
    currency: Mapped[str] = mapped_column(String(3), default="CNY")
    auto_renew: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="active")
    renewed_from_id: Mapped[int | None] = mapped_column(
        ForeignKey("contracts.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
