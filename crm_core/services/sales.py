"""The sales flow: opportunities through stages, follow-ups with the next contact date,
orders with lines, payments and receivables, contracts, and lifetime value.

Only ``confirmed`` orders count: a confirmed order earns membership points and adds to
the customer's ``lifetime_value`` (the sum of their confirmed orders in the reporting
currency, kept on the customer so lists and reports read it without a join). Every
change is audited (entity types ``opportunity``, ``order``, ``contract``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import flag_modified

from crm_core.errors import NotFoundError, StateError, ValidationError
from crm_core.models import (
    Contract,
    Customer,
    FollowUp,
    Opportunity,
    Order,
    OrderLine,
    Payment,
    PipelineStage,
)
from crm_core.services import audit, membership

log = structlog.get_logger(__name__)

ATTITUDES = ("positive", "neutral", "hesitant", "negative")
"""How the customer responded at a follow-up."""
CONFIRMED = "confirmed"
CANCELLED = "cancelled"
CENT = Decimal("0.01")
DEFAULT_CURRENCY = "CNY"


def money(value: object, field: str = "amount") -> Decimal:
    """A non-negative amount with two decimals, from a number or text."""
    try:
        amount = Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except (InvalidOperation, ValueError):
        raise ValidationError(field, value, "must be a number") from None
    if amount < 0:
        raise ValidationError(field, value, "must not be negative")
    return amount


def _currency(value: str) -> str:
    code = (value or "").strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise ValidationError("currency", value, "must be a three-letter code such as CNY")
    return code


# --- stages and opportunities ---------------------------------------------------------------


async def save_stage(session: AsyncSession, *, code: str, name: str, probability: float,
                     position: int = 100, outcome: str = "open", name_zh: str | None = None,
                     ) -> PipelineStage:
    """Create or update a pipeline stage."""
    if not 0 <= probability <= 1:
        raise ValidationError("probability", probability, "must be between 0 and 1")
    if outcome not in ("open", "won", "lost"):
        raise ValidationError("outcome", outcome, "must be open, won or lost")
    stage = await session.get(PipelineStage, code)
    if stage is None:
        stage = PipelineStage(code=code)
        session.add(stage)
    stage.name, stage.name_zh, stage.probability = name, name_zh, probability
    stage.position, stage.outcome = position, outcome
    await session.flush()
    return stage


async def create_opportunity(
    session: AsyncSession, *, customer_id: int, title: str, stage_code: str, amount: object,
    now: datetime, actor: str, currency: str = DEFAULT_CURRENCY,
    probability: float | None = None, owner_id: int | None = None,
    expected_close_on: date | None = None, source: str | None = None,
) -> Opportunity:
    """A new lead or deal in a stage."""
    if not title.strip():
        raise ValidationError("title", title, "must not be empty")
    stage = await session.get(PipelineStage, stage_code)
    if stage is None:
        raise NotFoundError("stage", stage_code)
    if probability is not None and not 0 <= probability <= 1:
        raise ValidationError("probability", probability, "must be between 0 and 1")
    opportunity = Opportunity(
        customer_id=customer_id, title=title.strip(), stage_code=stage_code,
        amount=money(amount), currency=_currency(currency), probability=probability,
        owner_id=owner_id, expected_close_on=expected_close_on, source=source,
        status=stage.outcome, closed_at=now if stage.outcome != "open" else None,
        created_at=now, updated_at=now)
    session.add(opportunity)
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type="opportunity",
                 entity_id=opportunity.id, after={"stage": stage_code, "amount": amount})
    return opportunity


async def move_opportunity(session: AsyncSession, opportunity_id: int, stage_code: str, *,
                           now: datetime, actor: str, lost_reason: str | None = None,
                           ) -> Opportunity:
    """Move a deal to another stage; a won or lost stage closes it."""
    opportunity = await session.get(Opportunity, opportunity_id)
    if opportunity is None:
        raise NotFoundError("opportunity", opportunity_id)
    stage = await session.get(PipelineStage, stage_code)
    if stage is None:
        raise NotFoundError("stage", stage_code)
    before = {"stage": opportunity.stage_code, "status": opportunity.status}
    opportunity.stage_code = stage_code
    opportunity.status = stage.outcome
    opportunity.closed_at = now if stage.outcome != "open" else None
    opportunity.lost_reason = lost_reason if stage.outcome == "lost" else None
    opportunity.updated_at = now
    audit.record(session, actor=actor, action="move", entity_type="opportunity",
                 entity_id=opportunity_id, before=before,
                 after={"stage": stage_code, "status": stage.outcome})
    await session.flush()
    return opportunity


# --- follow-ups -----------------------------------------------------------------------------


async def record_follow_up(
    session: AsyncSession, *, customer_id: int, agent_id: int | None, now: datetime,
    attitude: str = "neutral", note: str | None = None, next_contact_on: date | None = None,
    opportunity_id: int | None = None, channel: str | None = None,
) -> FollowUp:
    """Record a contact; it settles the customer's earlier open reminders, and sets a new
    one when ``next_contact_on`` is given."""
    if attitude not in ATTITUDES:
        raise ValidationError("attitude", attitude, f"must be one of {', '.join(ATTITUDES)}")
    if next_contact_on is not None and next_contact_on < now.date():
        raise ValidationError("next_contact_on", next_contact_on, "must not be in the past")
    await session.execute(
        update(FollowUp)
        .where(FollowUp.customer_id == customer_id, FollowUp.reminder_done_at.is_(None),
               FollowUp.next_contact_on.is_not(None))
        .values(reminder_done_at=now))
    follow_up = FollowUp(customer_id=customer_id, agent_id=agent_id, attitude=attitude,
                         note=note, next_contact_on=next_contact_on,
                         opportunity_id=opportunity_id, channel=channel, at=now)
    session.add(follow_up)
    await session.flush()
    return follow_up


async def due_follow_ups(session: AsyncSession, *, today: date, agent_id: int | None = None,
                         limit: int = 100) -> list[tuple[FollowUp, str]]:
    """Open reminders whose next contact date is today or earlier (oldest first), with
    the customer's name; only ``agent_id``'s when given."""
    query = (select(FollowUp, Customer.display_name)
             .join(Customer, Customer.id == FollowUp.customer_id)
             .where(FollowUp.reminder_done_at.is_(None), FollowUp.next_contact_on <= today,
                    Customer.deleted_at.is_(None))
             .order_by(FollowUp.next_contact_on, FollowUp.id).limit(limit))
    if agent_id is not None:
        query = query.where(FollowUp.agent_id == agent_id)
    return [(row[0], row[1]) for row in await session.execute(query)]


# --- orders, payments, receivables ------------------------------------------------------------


@dataclass(frozen=True)
class LineInput:
    """One product line as entered."""

    product: str
    quantity: object
    unit_price: object
    sku: str | None = None


async def create_order(
    session: AsyncSession, *, customer_id: int, lines: Sequence[LineInput], now: datetime,
    actor: str, currency: str = DEFAULT_CURRENCY, ordered_at: datetime | None = None,
    opportunity_id: int | None = None, agent_id: int | None = None,
    due_on: date | None = None, reporting_currency: str = DEFAULT_CURRENCY,
    number: str | None = None,
) -> Order:
    """A confirmed order: its amount is the sum of its lines. It earns membership points
    and raises the customer's lifetime value (in the reporting currency). The order is
    credited to ``agent_id``, by default the customer's owner at the time."""
    if not lines:
        raise ValidationError("lines", [], "an order needs at least one line")
    customer = await session.get(Customer, customer_id)
    if customer is None or customer.deleted_at is not None:
        raise NotFoundError("customer", customer_id)
    prepared: list[OrderLine] = []
    for line in lines:
        if not line.product.strip():
            raise ValidationError("product", line.product, "must not be empty")
        try:
            quantity = Decimal(str(line.quantity))
        except InvalidOperation:
            raise ValidationError("quantity", line.quantity, "must be a number") from None
        if quantity <= 0:
            raise ValidationError("quantity", line.quantity, "must be positive")
        price = money(line.unit_price, "unit_price")
        prepared.append(OrderLine(product=line.product.strip(), sku=line.sku, quantity=quantity,
                                  unit_price=price,
                                  amount=(quantity * price).quantize(CENT, ROUND_HALF_UP)))
    total = sum((line.amount for line in prepared), Decimal("0"))
    order = Order(customer_id=customer_id, currency=_currency(currency), status=CONFIRMED,
                  ordered_at=ordered_at or now, opportunity_id=opportunity_id,
                  agent_id=agent_id or customer.owner_agent_id, due_on=due_on,
                  created_at=now, updated_at=now, amount=total, paid_amount=Decimal("0"))
    session.add(order)
    await session.flush()
    order.number = number or f"SO-{order.id:06d}"
    _touch(order, now)
    for line in prepared:
        line.order_id = order.id
        session.add(line)
    if order.currency == reporting_currency:
        customer.lifetime_value = (customer.lifetime_value or Decimal("0")) + total
        await membership.earn_points(session, customer_id, spend=total, now=now,
                                     order_id=order.id, actor=actor)
    audit.record(session, actor=actor, action="create", entity_type="order", entity_id=order.id,
                 after={"amount": total, "currency": order.currency})
    await session.flush()
    return order


async def cancel_order(session: AsyncSession, order_id: int, *, now: datetime, actor: str,
                       reporting_currency: str = DEFAULT_CURRENCY) -> Order:
    """Cancel an unpaid order: it stops counting as revenue and lifetime value."""
    order = await session.get(Order, order_id)
    if order is None:
        raise NotFoundError("order", order_id)
    if order.status == CANCELLED:
        return order
    if order.paid_amount > 0:
        raise StateError(f"order {order.number} has payments; refund them first")
    order.status = CANCELLED
    _touch(order, now)
    if order.currency == reporting_currency:
        await recompute_lifetime_value(session, order.customer_id,
                                       reporting_currency=reporting_currency)
    audit.record(session, actor=actor, action="cancel", entity_type="order", entity_id=order_id,
                 before={"status": CONFIRMED}, after={"status": CANCELLED})
    await session.flush()
    return order


async def record_payment(session: AsyncSession, order_id: int, amount: object, *,
                         now: datetime, actor: str, method: str | None = None,
                         reference: str | None = None, paid_at: datetime | None = None,
                         ) -> Payment:
    """Money received against an order; more than the open balance is refused."""
    order = await session.get(Order, order_id)
    if order is None:
        raise NotFoundError("order", order_id)
    if order.status != CONFIRMED:
        raise StateError(f"order {order.number} is {order.status}")
    value = money(amount)
    if value <= 0:
        raise ValidationError("amount", amount, "must be positive")
    if order.paid_amount + value > order.amount:
        raise ValidationError("amount", amount,
                              f"more than the open balance {order.amount - order.paid_amount}")
    payment = Payment(order_id=order_id, customer_id=order.customer_id, amount=value,
                      currency=order.currency, method=method, reference=reference,
                      paid_at=paid_at or now)
    session.add(payment)
    order.paid_amount = order.paid_amount + value
    _touch(order, now)
    audit.record(session, actor=actor, action="payment", entity_type="order",
                 entity_id=order_id, after={"amount": value, "method": method})
    await session.flush()
    return payment


def _touch(order: Order, now: datetime) -> None:
    # Set even when equal to the old value, so the update keeps ``now`` (the roll-ups'
    # watermark reads it) instead of taking the clock's time.
    order.updated_at = now
    flag_modified(order, "updated_at")


@dataclass(frozen=True)
class Receivable:
    """An order not yet fully paid."""

    order_id: int
    number: str | None
    customer_id: int
    customer_name: str
    currency: str
    amount: Decimal
    paid: Decimal
    due_on: date | None
    overdue: bool

    @property
    def balance(self) -> Decimal:
        """What is still owed."""
        return self.amount - self.paid


async def receivables(session: AsyncSession, *, today: date, customer_id: int | None = None,
                      limit: int = 500) -> list[Receivable]:
    """Confirmed orders with an open balance, oldest due first."""
    query = (select(Order, Customer.display_name)
             .join(Customer, Customer.id == Order.customer_id)
             .where(Order.status == CONFIRMED, Order.paid_amount < Order.amount)
             .order_by(Order.due_on.is_(None), Order.due_on, Order.id).limit(limit))
    if customer_id is not None:
        query = query.where(Order.customer_id == customer_id)
    return [Receivable(o.id, o.number, o.customer_id, name, o.currency, o.amount, o.paid_amount,
                       o.due_on, o.due_on is not None and o.due_on < today)
            for o, name in await session.execute(query)]


async def recompute_lifetime_value(session: AsyncSession, customer_id: int, *,
                                   reporting_currency: str = DEFAULT_CURRENCY) -> Decimal:
    """Set the customer's lifetime value to the sum of their confirmed orders."""
    total = await session.scalar(
        select(func.coalesce(func.sum(Order.amount), 0))
        .where(Order.customer_id == customer_id, Order.status == CONFIRMED,
               Order.currency == reporting_currency))
    value = Decimal(str(total or 0)).quantize(CENT)
    await session.execute(update(Customer).where(Customer.id == customer_id)
                          .values(lifetime_value=value))
    return value


# --- contracts ------------------------------------------------------------------------------


async def create_contract(
    session: AsyncSession, *, customer_id: int, title: str, start_on: date, end_on: date,
    amount: object, now: datetime, actor: str, kind: str = "contract",
    currency: str = DEFAULT_CURRENCY, auto_renew: bool = False, order_id: int | None = None,
    renewed_from_id: int | None = None,
) -> Contract:
    """A contract or subscription; when it renews another, that one becomes ``renewed``."""
    if kind not in ("contract", "subscription"):
        raise ValidationError("kind", kind, "must be contract or subscription")
    if end_on < start_on:
        raise ValidationError("end_on", end_on, "must not be before the start")
    contract = Contract(customer_id=customer_id, title=title, start_on=start_on, end_on=end_on,
                        amount=money(amount), kind=kind, currency=_currency(currency),
                        auto_renew=auto_renew, order_id=order_id, status="active",
                        renewed_from_id=renewed_from_id, created_at=now, updated_at=now)
    session.add(contract)
    if renewed_from_id is not None:
        previous = await session.get(Contract, renewed_from_id)
        if previous is None:
            raise NotFoundError("contract", renewed_from_id)
        previous.status = "renewed"
        previous.updated_at = now
    await session.flush()
    audit.record(session, actor=actor, action="create", entity_type="contract",
                 entity_id=contract.id, after={"end_on": end_on, "amount": contract.amount})
    return contract


async def end_contracts(session: AsyncSession, *, today: date) -> int:
    """Mark active contracts whose end date passed (and that no renewal replaced) as
    ``ended``; returns how many."""
    result = await session.execute(
        update(Contract).where(Contract.status == "active", Contract.end_on < today)
        .values(status="ended"))
    return int(result.rowcount or 0)
