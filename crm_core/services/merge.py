"""Merging two records of one person, and erasing a person (the right to be forgotten)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import StateError, ValidationError
from crm_core.identity import settle_merge
from crm_core.models import (
    AuditLog,
    Base,
    CareTask,
    Conversation,
    Customer,
    CustomerIdentity,
    CustomerTag,
    FeedbackResponse,
    Interaction,
    MergeRecord,
    Ticket,
    utcnow,
)
from crm_core.normalize import name_key
from crm_core.services import audit
from crm_core.services.customers import get_customer, snapshot

# Tables whose customer reference is not "this belongs to the person" and must not move.
_NOT_MOVED = {
    "customers", "merge_records", "customer_tags", "customer_identities",
    # Unique on the customer column; crm_core.identity.settle_merge handles them.
    "customer_match_keys", "customer_match_profiles", "duplicate_suggestions",
    # Unique per (campaign, customer, occurrence): the merged record keeps its send log.
    "campaign_sends",
}

# Facts the survivor takes from the merged record when it has none of its own.
_FILLED_FROM_MERGED = (
    "given_name", "family_name", "organization_id", "job_title", "industry", "street", "city",
    "postcode", "province", "country", "language", "timezone", "birthday", "tier_code",
    "category_code", "owner_agent_id", "preferred_channel",
)

# Facts that identify or describe the person; erase clears them. Country, language,
# class, lifecycle and value stay for anonymous statistics.
_PERSONAL_FIELDS = (
    "given_name", "family_name", "organization_id", "job_title", "street", "city", "postcode",
    "province", "timezone", "birthday", "notes", "source", "owner_agent_id",
)


def customer_references() -> list[tuple[Table, str]]:
    """Every (table, column) that points at a customer and moves with the person on merge.

    Read from the metadata, so a table added later moves too. A table that keeps a
    unique key on its customer column needs its own rule here, like tags and identities.
    """
    references = []
    for table in Base.metadata.sorted_tables:
        if table.name in _NOT_MOVED:
            continue
        for column in table.columns:
            if any(fk.column.table.name == "customers" for fk in column.foreign_keys):
                references.append((table, column.name))
    return references


async def merge_customers(
    session: AsyncSession,
    survivor_id: int,
    merged_id: int,
    *,
    actor: str,
    reason: str | None = None,
) -> MergeRecord:
    """Fold ``merged_id`` into ``survivor_id``: identities, history and tickets move over.

    The survivor keeps its own values and takes the merged record's where it has none;
    tags and custom attributes are united, lifetime values added, notes joined. The
    merged record stays, soft-deleted and pointing at the survivor, and a MergeRecord
    keeps its full snapshot so the merge can be explained later.
    """
    if survivor_id == merged_id:
        raise ValidationError("merged_id", merged_id, "cannot merge a customer into itself")
    survivor = await get_customer(session, survivor_id)
    merged = await get_customer(session, merged_id, include_deleted=True)
    for customer in (survivor, merged):
        if customer.erased_at is not None:
            raise StateError(f"customer #{customer.id} was erased and cannot be merged")
    if merged.merged_into_id is not None:
        raise StateError(f"customer #{merged_id} was already merged into #{merged.merged_into_id}")

    survivor_before = snapshot(survivor)
    merged_before = snapshot(merged)
    await settle_merge(session, survivor_id, merged_id, actor=actor)

    moved: dict[str, int] = {}
    identity_result = await session.execute(
        update(CustomerIdentity)
        .where(CustomerIdentity.customer_id == merged_id)
        .values(customer_id=survivor_id)
    )
    moved["customer_identities"] = identity_result.rowcount or 0
    for table, column in customer_references():
        result = await session.execute(
            update(table).where(table.c[column] == merged_id).values({column: survivor_id})
        )
        if result.rowcount:
            moved[f"{table.name}.{column}"] = result.rowcount
    new_tags = [t for t in merged.tags if t not in set(survivor.tags)]
    for tag in new_tags:
        session.add(CustomerTag(customer_id=survivor_id, tag=tag))
    moved["tags"] = len(new_tags)

    for name in _FILLED_FROM_MERGED:
        if getattr(survivor, name) is None and getattr(merged, name) is not None:
            setattr(survivor, name, getattr(merged, name))
    survivor.custom_attributes = {**merged.custom_attributes, **survivor.custom_attributes}
    survivor.marketing_opt_in = {**merged.marketing_opt_in, **survivor.marketing_opt_in}
    survivor.do_not_contact = survivor.do_not_contact or merged.do_not_contact
    survivor.lifetime_value = (survivor.lifetime_value or Decimal(0)) + (
        merged.lifetime_value or Decimal(0)
    )
    if merged.notes and merged.notes != survivor.notes:
        survivor.notes = "\n\n".join(n for n in (survivor.notes, merged.notes) if n)
    survivor.name_key = name_key(survivor.display_name, survivor.given_name, survivor.family_name)
    survivor.updated_at = utcnow()

    merged.merged_into_id = survivor_id
    merged.deleted_at = merged.deleted_at or utcnow()

    record = MergeRecord(
        survivor_id=survivor_id,
        merged_id=merged_id,
        actor=actor,
        reason=reason,
        snapshot=merged_before,
        moved=moved,
    )
    session.add(record)
    await session.flush()
    survivor = await get_customer(session, survivor_id)
    old, new = audit.diff(survivor_before, snapshot(survivor))
    audit.record(
        session, actor=actor, action="merge", entity_type="customer", entity_id=survivor_id,
        before=old, after={**new, "merged_id": merged_id, "reason": reason, "moved": moved},
    )
    audit.record(
        session, actor=actor, action="merged_into", entity_type="customer", entity_id=merged_id,
        before={"deleted_at": merged_before.get("deleted_at")},
        after={"merged_into_id": survivor_id, "merge_record_id": record.id},
    )
    return record


async def merge_history(session: AsyncSession, customer_id: int) -> list[MergeRecord]:
    """The merges a customer took part in, as survivor or as merged record, oldest first."""
    rows = await session.scalars(
        select(MergeRecord)
        .where((MergeRecord.survivor_id == customer_id) | (MergeRecord.merged_id == customer_id))
        .order_by(MergeRecord.id)
    )
    return list(rows)


ERASED = "[erased]"


async def erase_customer(
    session: AsyncSession, customer_id: int, *, actor: str, reason: str | None = None
) -> dict[str, Any]:
    """Remove a person's personal data for good, keeping anonymous counts.

    The customer row stays (so reports still count it) with every personal field
    cleared; identities and tags are deleted; message texts, subjects and attachment
    metadata of their interactions, conversations and tickets are blanked; earlier
    audit entries and merge snapshots about the customer lose their personal values.
    Channel, direction, times, categories and statuses remain for statistics.
    Records merged into this one are the same person and are erased with it.
    """
    customer = await get_customer(session, customer_id, include_deleted=True)
    if customer.erased_at is not None:
        raise StateError(f"customer #{customer_id} was already erased")
    merged_ids = list(
        await session.scalars(
            select(Customer.id).where(
                Customer.merged_into_id == customer_id, Customer.erased_at.is_(None)
            )
        )
    )
    for merged_id in merged_ids:
        await erase_customer(session, merged_id, actor=actor, reason=reason)
    now = utcnow()
    counts: dict[str, int] = {
        "identities": len(customer.identities),
        "tags": len(customer.tag_rows),
    }
    for ident in list(customer.identities):
        customer.identities.remove(ident)
    for tag in list(customer.tag_rows):
        customer.tag_rows.remove(tag)

    for name in _PERSONAL_FIELDS:
        setattr(customer, name, None)
    customer.display_name = f"{ERASED} #{customer.id}"
    customer.name_key = ""
    customer.custom_attributes = {}
    customer.marketing_opt_in = {}
    customer.do_not_contact = True
    customer.erased_at = now
    customer.deleted_at = customer.deleted_at or now

    interactions = await session.execute(
        update(Interaction)
        .where(Interaction.customer_id == customer_id)
        .values(subject=None, text=None, html=None, attachments=[], meta={"erased": True})
    )
    counts["interactions"] = interactions.rowcount or 0
    conversations = await session.execute(
        update(Conversation)
        .where(Conversation.customer_id == customer_id)
        .values(subject=None, thread_key=None)
    )
    counts["conversations"] = conversations.rowcount or 0
    tickets = await session.execute(
        update(Ticket)
        .where(Ticket.customer_id == customer_id)
        .values(subject=ERASED, description=None)
    )
    counts["tickets"] = tickets.rowcount or 0
    feedback = await session.execute(
        update(FeedbackResponse).where(FeedbackResponse.customer_id == customer_id)
        .values(comment=None)
    )
    counts["feedback"] = feedback.rowcount or 0
    tasks = await session.execute(
        update(CareTask).where(CareTask.customer_id == customer_id)
        .values(title=ERASED, note=None, outcome_note=None)  # titles name the person
    )
    counts["care_tasks"] = tasks.rowcount or 0
    audits = await session.execute(
        update(AuditLog)
        .where(AuditLog.entity_type == "customer", AuditLog.entity_id == str(customer_id))
        .values(before={"erased": True}, after={"erased": True})
    )
    counts["audit_entries_scrubbed"] = audits.rowcount or 0
    await session.execute(
        update(MergeRecord)
        .where((MergeRecord.merged_id == customer_id) | (MergeRecord.survivor_id == customer_id))
        .values(snapshot={"erased": True})
    )
    await session.flush()
    audit.record(
        session, actor=actor, action="erase", entity_type="customer", entity_id=customer_id,
        after={"reason": reason, **counts},
    )
    return counts
