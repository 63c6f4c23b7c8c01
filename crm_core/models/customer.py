"""Customers, their identities, organizations, classes and history."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_core.models.base import Base, utcnow
from crm_core.models.enums import Channel, IdentityKind, LifecycleStage

if TYPE_CHECKING:
    from crm_core.models.agent import Agent


class Organization(Base):
    """A company or institution whose people are our customers (its contacts)."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    industry: Mapped[str | None] = mapped_column(String(100))
    website: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(32))
    address: Mapped[str | None] = mapped_column(String(500))
    notes: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]

    contacts: Mapped[list[Customer]] = relationship(back_populates="organization", lazy="raise")


class CustomerCategory(Base):
    """An admin-defined classification of customers (e.g. retail, wholesale, government)."""

    __tablename__ = "customer_categories"

    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str | None] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CustomerTier(Base):
    """An admin-defined service level (e.g. standard, gold, VIP); higher rank is better."""

    __tablename__ = "customer_tiers"

    code: Mapped[str] = mapped_column(String(50), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str | None] = mapped_column(String(100))
    rank: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Customer(Base):
    """A person we serve, with everything the contact center knows about them."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_deleted_at_id", "deleted_at", "id"),
        # Covers the churn report's counts of customers by when they joined (index-only).
        Index("ix_customers_created_at", "created_at", "deleted_at", "merged_into_id",
              "lifecycle_stage"),
        # Covers the composition report (one index-only pass over every customer).
        Index("ix_customers_composition", "category_code", "industry", "province", "tier_code",
              "deleted_at", "merged_into_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    given_name: Mapped[str | None] = mapped_column(String(100))
    family_name: Mapped[str | None] = mapped_column(String(100))
    name_key: Mapped[str] = mapped_column(String(1000), default="")
    """Lower-cased name with its pinyin, for searching in any script."""

    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), index=True
    )
    job_title: Mapped[str | None] = mapped_column(String(100))
    industry: Mapped[str | None] = mapped_column(String(100))

    street: Mapped[str | None] = mapped_column(String(300))
    city: Mapped[str | None] = mapped_column(String(100))
    postcode: Mapped[str | None] = mapped_column(String(20))
    province: Mapped[str | None] = mapped_column(String(100))
    country: Mapped[str | None] = mapped_column(String(2))

    language: Mapped[str | None] = mapped_column(String(20))
    timezone: Mapped[str | None] = mapped_column(String(64))
    birthday: Mapped[date | None] = mapped_column(Date)

    lifecycle_stage: Mapped[LifecycleStage] = mapped_column(default=LifecycleStage.LEAD, index=True)
    tier_code: Mapped[str | None] = mapped_column(
        ForeignKey("customer_tiers.code", ondelete="SET NULL", onupdate="CASCADE"), index=True
    )
    category_code: Mapped[str | None] = mapped_column(
        ForeignKey("customer_categories.code", ondelete="SET NULL", onupdate="CASCADE"),
        index=True,
    )
    lifetime_value: Mapped[Decimal] = mapped_column(Numeric(14, 2), default=Decimal("0"))
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)

    owner_agent_id: Mapped[int | None] = mapped_column(
        ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    marketing_opt_in: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Per channel (``{"email": true, "telegram": false}``): may we send marketing there."""
    do_not_contact: Mapped[bool] = mapped_column(Boolean, default=False)
    preferred_channel: Mapped[Channel | None]
    notes: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(100))

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None]
    erased_at: Mapped[datetime | None]
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="SET NULL")
    )

    organization: Mapped[Organization | None] = relationship(
        back_populates="contacts", lazy="raise"
    )
    owner: Mapped[Agent | None] = relationship(lazy="raise")
    identities: Mapped[list[CustomerIdentity]] = relationship(
        back_populates="customer",
        lazy="raise",
        cascade="all, delete-orphan",
        order_by="CustomerIdentity.id",
    )
    tag_rows: Mapped[list[CustomerTag]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="CustomerTag.tag"
    )

    @property
    def tags(self) -> list[str]:
        """The customer's tags, sorted."""
        return [row.tag for row in self.tag_rows]

    def identity_values(self, kind: IdentityKind) -> list[str]:
        """The normalized values of one kind of identity (loaded identities needed)."""
        return [i.value for i in self.identities if i.kind == kind]

    @property
    def emails(self) -> list[str]:
        """E-mail addresses on file."""
        return self.identity_values(IdentityKind.EMAIL)

    @property
    def phones(self) -> list[str]:
        """Phone numbers on file, E.164."""
        return self.identity_values(IdentityKind.PHONE)


class CustomerIdentity(Base):
    """A normalized handle (e-mail, E.164 phone, Telegram id …) that belongs to one customer."""

    __tablename__ = "customer_identities"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[IdentityKind]
    value: Mapped[str] = mapped_column(String(320))
    label: Mapped[str | None] = mapped_column(String(50))
    """Free label such as ``work`` or ``mobile``; external ids keep their system here."""
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    bounced_at: Mapped[datetime | None]
    """Set when mail to this address bounced; cleared when the customer writes from it."""
    bounce_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer: Mapped[Customer] = relationship(back_populates="identities", lazy="raise")


class CustomerTag(Base):
    """One tag on one customer; a table, so tags can be queried on any database."""

    __tablename__ = "customer_tags"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)


class LifecycleTransition(Base):
    """One move of a customer between lifecycle stages, with when and why."""

    __tablename__ = "lifecycle_transitions"
    __table_args__ = (Index("ix_lifecycle_transitions_to_stage_at", "to_stage", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    from_stage: Mapped[LifecycleStage | None]
    to_stage: Mapped[LifecycleStage]
    reason: Mapped[str | None] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ClassificationRule(Base):
    """A rule that puts matching customers into a tier or a category.

    ``conditions`` is a list of ``{"field": ..., "op": ..., "value": ...}``, all of
    which must hold; rules of one target are tried by ascending ``position``.
    """

    __tablename__ = "classification_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    target: Mapped[str] = mapped_column(String(20))
    value_code: Mapped[str] = mapped_column(String(50))
    conditions: Mapped[list[Any]] = mapped_column(default=list)
    position: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MergeRecord(Base):
    """The record of one merge: who was folded into whom, by whom, and what moved."""

    __tablename__ = "merge_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    survivor_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    merged_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    actor: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(String(500))
    snapshot: Mapped[dict[str, Any]] = mapped_column(default=dict)
    moved: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class DuplicateSuggestion(Base):
    """Evidence that two customers may be one person, for an agent to confirm or dismiss."""

    __tablename__ = "duplicate_suggestions"
    __table_args__ = (UniqueConstraint("customer_id", "candidate_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    candidate_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[float]
    reasons: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Which signals agreed and how strongly (name, phone, email, birthday, address)."""
    source: Mapped[str] = mapped_column(String(20), default="routing")
    status: Mapped[str] = mapped_column(String(20), default="open")
    """``open``, ``merged`` or ``dismissed``."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(100))
