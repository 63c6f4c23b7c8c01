"""identify: find the customer behind a message, or create a lead.

A one-time link token (a Telegram deep link) names the customer outright. Exact matches
on normalized identities link at once. Otherwise the fuzzy matcher
proposes candidates: one above the link threshold is linked, the rest become possible
duplicate suggestions on a new lead customer, for an agent to confirm.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import selectinload

from crm_core.errors import NotFoundError, ValidationError
from crm_core.models import Customer, CustomerIdentity, IdentityKind
from crm_core.normalize import normalize_email, normalize_phone
from crm_core.services.customers import create_customer, find_identity_owners
from routing.context import RoutingContext
from routing.events import CUSTOMER_CREATED

_KIND_ORDER = (IdentityKind.EMAIL, IdentityKind.PHONE, IdentityKind.TELEGRAM, IdentityKind.WEBCHAT)
SUGGESTIONS_PER_LEAD = 5
"""A new lead is proposed as a possible duplicate of at most this many customers."""


def envelope_handles(ctx: RoutingContext) -> list[tuple[IdentityKind, str]]:
    """The sender's normalized handles; an unreadable one is skipped and noted."""
    sender = ctx.envelope.sender
    handles: list[tuple[IdentityKind, str]] = []
    if sender.email:
        try:
            handles.append((IdentityKind.EMAIL, normalize_email(sender.email)))
        except ValidationError:
            ctx.hit(f"identify:bad-email:{sender.email}")
    if sender.phone:
        try:
            handles.append((IdentityKind.PHONE, normalize_phone(sender.phone, ctx.config.region)))
        except ValidationError:
            ctx.hit(f"identify:bad-phone:{sender.phone}")
    if sender.telegram_id:
        handles.append((IdentityKind.TELEGRAM, str(sender.telegram_id)))
    if sender.visitor_id:
        handles.append((IdentityKind.WEBCHAT, str(sender.visitor_id)))
    return handles


async def _load(ctx: RoutingContext, customer_id: int) -> Customer:
    """A customer with the tags the rules look at (identities are not needed here)."""
    customer = await ctx.session.get(
        Customer, customer_id, options=[selectinload(Customer.tag_rows)]
    )
    if customer is None:
        raise NotFoundError("customer", customer_id)
    return customer


async def _live_customer(ctx: RoutingContext, customer_id: int) -> Customer:
    """Follow merges to the surviving record."""
    customer = await _load(ctx, customer_id)
    seen = {customer.id}
    while customer.merged_into_id is not None and customer.merged_into_id not in seen:
        seen.add(customer.merged_into_id)
        customer = await _load(ctx, customer.merged_into_id)
    return customer


async def _attach_new_handles(
    ctx: RoutingContext, customer: Customer, handles: list[tuple[IdentityKind, str]], owned: set
) -> None:
    """Handles seen in the same message as a known one belong to the same person."""
    for kind, value in handles:
        if (kind, value) not in owned:
            ctx.session.add(CustomerIdentity(customer_id=customer.id, kind=kind, value=value))
            ctx.hit(f"identify:new-handle:{kind.value}")


async def _by_link_token(
    ctx: RoutingContext, handles: list[tuple[IdentityKind, str]], owners: dict
) -> bool:
    """A valid one-time link token names the customer: its handles move to that record.

    A handle already on another record (say, a lead made by an earlier message) moves
    too, and a merge of the two records is suggested for an agent to confirm.
    """
    from crm_core.identity import MatchCandidate, record_suggestion
    from crm_core.services.link_tokens import redeem_link_token

    token = ctx.envelope.metadata.get("link_token")
    if not isinstance(token, str) or not handles:
        return False
    used_by = f"{handles[0][0].value}:{handles[0][1]}"
    customer_id = await redeem_link_token(ctx.session, token, used_by=used_by,
                                          now=ctx.envelope.received_at)
    if customer_id is None:
        ctx.hit("identify:link-token-invalid")
        return False
    customer = await _live_customer(ctx, customer_id)
    others: set[int] = set()
    for (kind, value), (owner_id, _name, _deleted) in owners.items():
        if owner_id != customer.id:
            others.add(owner_id)
            await ctx.session.execute(
                update(CustomerIdentity)
                .where(CustomerIdentity.kind == kind, CustomerIdentity.value == value)
                .values(customer_id=customer.id)
                .execution_options(synchronize_session=False)
            )
    for other in sorted(others):
        await record_suggestion(
            ctx.session, customer.id,
            MatchCandidate(customer_id=other, score=100.0, reasons={"link_token": 100.0}),
            source="routing",
        )
    await _attach_new_handles(ctx, customer, handles, set(owners))
    ctx.customer = customer
    ctx.hit("identify:link-token")
    return True


async def identify(ctx: RoutingContext) -> None:
    """Set ``ctx.customer``: by a link token, by exact identity, by a confident fuzzy
    match, or a new lead."""
    handles = envelope_handles(ctx)
    owners = await find_identity_owners(ctx.session, handles)
    if await _by_link_token(ctx, handles, owners):
        return
    if owners:
        ordered = sorted(owners.items(), key=lambda item: _KIND_ORDER.index(item[0][0]))
        (kind, _value), (customer_id, _name, _deleted) = ordered[0]
        customer = await _live_customer(ctx, customer_id)
        others = {cid for _, (cid, _, _) in ordered if cid != customer_id}
        if others:
            await _suggest_shared_handles(ctx, customer.id, others)
        await _attach_new_handles(ctx, customer, handles, set(owners))
        ctx.customer = customer
        ctx.hit(f"identify:exact:{kind.value}")
        return
    await _fuzzy_or_new(ctx, handles)


def _language(ctx: RoutingContext) -> dict[str, str]:
    """The language a channel saw (the chat widget's page) for a new lead."""
    language = ctx.envelope.metadata.get("language")
    return {"language": language} if language in ("zh-CN", "en") else {}


def _lead_name(display_name: str | None, handles: list[tuple[IdentityKind, str]]) -> str:
    """A new lead's name: the one given, else something a person can read."""
    if display_name and display_name.strip():
        return display_name.strip()
    kinds = dict(handles)
    if IdentityKind.EMAIL in kinds:
        return kinds[IdentityKind.EMAIL]
    if IdentityKind.PHONE in kinds:
        return kinds[IdentityKind.PHONE]
    if IdentityKind.WEBCHAT in kinds:  # a random id says nothing: a short tag instead
        return f"访客 Visitor {kinds[IdentityKind.WEBCHAT][-6:]}"
    if IdentityKind.TELEGRAM in kinds:
        return f"Telegram {kinds[IdentityKind.TELEGRAM]}"
    return "Unknown 未知客户"


async def _suggest_shared_handles(ctx: RoutingContext, customer_id: int, others: set[int]) -> None:
    from crm_core.identity import MatchCandidate, record_suggestion

    for other in sorted(others):
        await record_suggestion(
            ctx.session,
            customer_id,
            MatchCandidate(customer_id=other, score=100.0, reasons={"shared_handles": 100.0}),
            source="routing",
        )
        ctx.hit(f"identify:handles-span-customers:{other}")


async def _fuzzy_or_new(ctx: RoutingContext, handles: list[tuple[IdentityKind, str]]) -> None:
    from crm_core.identity import (
        COMMON_NAME_LIMIT,
        find_candidates,
        record_suggestion,
        worth_suggesting,
    )

    sender = ctx.envelope.sender
    phone = next((v for k, v in handles if k == IdentityKind.PHONE), None)
    email = next((v for k, v in handles if k == IdentityKind.EMAIL), None)
    candidates = []
    # Automated mail (a newsletter, an unknown server's bounce) is never evidence that two
    # customers are one: no fuzzy link, no duplicate suggestion.
    if sender.display_name and not ctx.envelope.automated:
        candidates = await find_candidates(
            ctx.session, name=sender.display_name, phone=phone, email=email,
            limit=SUGGESTIONS_PER_LEAD + COMMON_NAME_LIMIT,
        )
    best = candidates[0] if candidates else None
    if best is not None and best.score >= ctx.config.link_threshold:
        customer = await _live_customer(ctx, best.customer_id)
        await _attach_new_handles(ctx, customer, handles, set())
        ctx.customer = customer
        ctx.hit(f"identify:fuzzy-link:{best.score:.0f}")
        return

    data: dict[str, Any] = {
        "display_name": _lead_name(sender.display_name, handles)[:200],
        **_language(ctx),
        "source": f"channel:{ctx.envelope.channel.value}",
        "identities": [{"kind": k.value, "value": v} for k, v in handles],
    }
    customer = await create_customer(ctx.session, data, actor="routing", region=ctx.config.region)
    ctx.customer = customer
    ctx.customer_created = True
    ctx.hit("identify:new-lead")
    ctx.emit(CUSTOMER_CREATED, customer_id=customer.id, channel=ctx.envelope.channel.value)
    suggested = worth_suggesting(candidates, ctx.config.suggest_threshold,
                                 limit=SUGGESTIONS_PER_LEAD)
    for candidate in suggested:
        await record_suggestion(ctx.session, customer.id, candidate, source="routing")
        ctx.hit(f"identify:possible-duplicate:{candidate.customer_id}:{candidate.score:.0f}")
    if len(suggested) < sum(c.score >= ctx.config.suggest_threshold for c in candidates):
        ctx.hit("identify:common-name-not-suggested")

