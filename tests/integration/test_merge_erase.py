"""Merging two records of one person and erasing a person, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import func, select

from crm_core.db import Database
from crm_core.errors import NotFoundError, StateError, ValidationError
from crm_core.models import (
    AuditLog,
    CareTask,
    Channel,
    Conversation,
    Customer,
    CustomerIdentity,
    Direction,
    FeedbackResponse,
    Interaction,
    MergeRecord,
    Ticket,
    ticket_number,
    utcnow,
)
from crm_core.services import audit
from crm_core.services.customer_query import search_customers
from crm_core.services.customers import create_customer, get_customer, restore_customer
from crm_core.services.merge import erase_customer, merge_customers, merge_history

REGION = "CN"


async def _customer(db: Database, **fields: object) -> int:
    async with db.transaction() as session:
        customer = await create_customer(session, fields, actor="test", region=REGION)
        return customer.id


async def _history(db: Database, customer_id: int, text: str) -> tuple[int, int]:
    """Give a customer one conversation, an inbound message and a ticket."""
    async with db.transaction() as session:
        conversation = Conversation(customer_id=customer_id, channel=Channel.EMAIL, subject=text)
        session.add(conversation)
        await session.flush()
        session.add(
            Interaction(
                conversation_id=conversation.id,
                customer_id=customer_id,
                channel=Channel.EMAIL,
                direction=Direction.INBOUND,
                subject=text,
                text=f"{text} — body",
                external_id=f"msg-{customer_id}-{text}",
                attachments=[{"name": "发票.pdf", "size": 10}],
            )
        )
        ticket = Ticket(customer_id=customer_id, conversation_id=conversation.id, subject=text)
        session.add(ticket)
        await session.flush()
        ticket.number = ticket_number(ticket.id)
        return conversation.id, ticket.id


async def test_merge_moves_identities_history_and_tickets(db: Database) -> None:
    survivor_id = await _customer(
        db, display_name="张伟", phones=["13800138000"], tags=["老客户"],
        lifetime_value="100.50", notes="prefers phone",
    )
    merged_id = await _customer(
        db, display_name="Zhang Wei", emails=["zhang.wei@example.cn"],
        tags=["newsletter", "老客户"],
        city="杭州", lifetime_value="20", custom_attributes={"会员卡": "A123"}, notes="VIP event",
    )
    conv_id, ticket_id = await _history(db, merged_id, "发票问题")

    async with db.transaction() as session:
        record = await merge_customers(
            session, survivor_id, merged_id, actor="agent:1", reason="same person"
        )
        record_id = record.id

    async with db.sessions() as session:
        survivor = await get_customer(session, survivor_id)
        assert sorted(survivor.phones + survivor.emails) == [
            "+8613800138000", "zhang.wei@example.cn"
        ]
        assert survivor.tags == ["newsletter", "老客户"]
        assert survivor.city == "杭州"
        assert survivor.lifetime_value == Decimal("120.50")
        assert survivor.custom_attributes == {"会员卡": "A123"}
        assert survivor.notes == "prefers phone\n\nVIP event"
        assert survivor.display_name == "张伟"
        assert (await session.get(Conversation, conv_id)).customer_id == survivor_id
        assert (await session.get(Ticket, ticket_id)).customer_id == survivor_id
        interactions = await session.scalar(
            select(func.count()).select_from(Interaction).where(
                Interaction.customer_id == survivor_id
            )
        )
        assert interactions == 1

        with pytest.raises(NotFoundError):
            await get_customer(session, merged_id)
        merged = await get_customer(session, merged_id, include_deleted=True)
        assert merged.merged_into_id == survivor_id
        assert merged.deleted_at is not None

        record = await session.get(MergeRecord, record_id)
        assert record.snapshot["display_name"] == "Zhang Wei"
        assert record.snapshot["identities"] == ["email:zhang.wei@example.cn"]
        assert record.moved["customer_identities"] == 1
        assert record.moved["tickets.customer_id"] == 1
        assert [r.id for r in await merge_history(session, survivor_id)] == [record_id]

        entries = await audit.history(session, "customer", survivor_id)
        assert entries[0].action == "merge"
        assert entries[0].actor == "agent:1"
        assert entries[0].after["merged_id"] == merged_id

        # The e-mail now finds the survivor, and the merged record no longer shows up.
        page = await search_customers(session, {"text": "zhang.wei@example.cn"}, region=REGION)
        assert [c.id for c in page.items] == [survivor_id]


async def test_merge_refuses_self_twice_and_restore_of_merged(db: Database) -> None:
    a = await _customer(db, display_name="Alice Wong", emails=["alice@example.com"])
    b = await _customer(db, display_name="Alice W.", emails=["alice.w@example.com"])
    c = await _customer(db, display_name="Alice Wang")
    async with db.transaction() as session:
        with pytest.raises(ValidationError):
            await merge_customers(session, a, a, actor="t")
    async with db.transaction() as session:
        await merge_customers(session, a, b, actor="t")
    async with db.transaction() as session:
        with pytest.raises(StateError, match="already merged"):
            await merge_customers(session, c, b, actor="t")
    async with db.transaction() as session:
        with pytest.raises(StateError, match="merged into"):
            await restore_customer(session, b, actor="t")


async def test_erase_removes_personal_data_and_keeps_counts(db: Database) -> None:
    keep_id = await _customer(db, display_name="Bystander", emails=["other@example.com"])
    customer_id = await _customer(
        db, display_name="李娜", phones=["+86 139 1234 5678"], emails=["li.na@example.cn"],
        birthday="1990-05-01", street="南京西路 1266 号", city="上海", country="CN",
        notes="likes green tea", tags=["投诉过"], custom_attributes={"身份证": "310..."},
    )
    await _history(db, customer_id, "退货申请")
    async with db.transaction() as session:
        counts = await erase_customer(session, customer_id, actor="admin:1", reason="GDPR request")
    assert counts["identities"] == 2
    assert counts["interactions"] == 1
    assert counts["tickets"] == 1

    async with db.sessions() as session:
        customer = await get_customer(session, customer_id, include_deleted=True)
        assert customer.erased_at is not None
        assert "李娜" not in customer.display_name
        assert customer.birthday is None and customer.street is None and customer.notes is None
        assert customer.custom_attributes == {}
        assert customer.identities == [] and customer.tags == []
        assert customer.country == "CN"  # coarse facts stay for statistics
        assert customer.do_not_contact is True

        # The rows are kept (anonymised counts), their content is gone.
        interaction = await session.scalar(
            select(Interaction).where(Interaction.customer_id == customer_id)
        )
        assert interaction is not None
        assert interaction.text is None and interaction.subject is None
        assert interaction.attachments == []
        ticket = await session.scalar(select(Ticket).where(Ticket.customer_id == customer_id))
        assert ticket.subject == "[erased]"
        assert await session.scalar(select(func.count()).select_from(Customer)) == 2

        # No personal value survives anywhere in the audit trail of this customer.
        entries = await audit.history(session, "customer", customer_id)
        assert entries[0].action == "erase"
        for entry in entries:
            assert "李娜" not in str(entry.before) + str(entry.after)
            assert "li.na" not in str(entry.before) + str(entry.after)

        # The identities are free again and the erased record is not found by search.
        owners = await session.scalar(
            select(func.count()).select_from(CustomerIdentity).where(
                CustomerIdentity.value == "li.na@example.cn"
            )
        )
        assert owners == 0
        page = await search_customers(
            session, {"text": "李娜", "include_deleted": True}, region=REGION
        )
        assert page.items == []
        bystander = await get_customer(session, keep_id)
        assert bystander.emails == ["other@example.com"]

    async with db.transaction() as session:
        with pytest.raises(StateError):
            await erase_customer(session, customer_id, actor="admin:1")
        with pytest.raises(StateError):
            await restore_customer(session, customer_id, actor="admin:1")
    # The e-mail of an erased customer can be registered again by a new customer.
    assert await _customer(db, display_name="New Li", emails=["li.na@example.cn"]) > 0


async def test_erase_scrubs_merge_snapshots(db: Database) -> None:
    a = await _customer(db, display_name="王芳", phones=["13700137000"])
    b = await _customer(db, display_name="Wang Fang", emails=["wang.fang@example.cn"])
    async with db.transaction() as session:
        await merge_customers(session, a, b, actor="t")
    async with db.transaction() as session:
        await erase_customer(session, a, actor="t")
    async with db.sessions() as session:
        for record in await session.scalars(select(MergeRecord)):
            assert "wang.fang" not in str(record.snapshot)
        all_audit = " ".join(
            f"{e.before} {e.after}"
            for e in await session.scalars(
                select(AuditLog).where(AuditLog.entity_id.in_([str(a), str(b)]))
            )
        )
        assert "王芳" not in all_audit
        assert "Wang Fang" not in all_audit
        merged = await get_customer(session, b, include_deleted=True)
        assert merged.erased_at is not None and "Wang" not in merged.display_name


async def test_erase_blanks_feedback_comments_and_care_task_texts(db: Database) -> None:
    """Survey comments and care-task notes are the customer's words: erased with them,
    while the scores and the task outcomes stay for the statistics."""
    customer_id = await _customer(db, display_name="周杰", emails=["zhou.jie@example.cn"])
    other_id = await _customer(db, display_name="Other", emails=["other@example.com"])
    async with db.transaction() as session:
        for owner in (customer_id, other_id):
            session.add(FeedbackResponse(
                customer_id=owner, kind="csat", score=2, channel=Channel.EMAIL,
                comment="周杰说快递太慢了", classification="complaint",
                source_ref=f"test:{owner}"))
            session.add(CareTask(
                customer_id=owner, title="回访 周杰", note="周杰 prefers calls after 6pm",
                due_at=utcnow(), status="done", outcome="reached",
                outcome_note="周杰 was happy with the refund"))
    async with db.transaction() as session:
        counts = await erase_customer(session, customer_id, actor="admin:1")
    assert counts["feedback"] == 1 and counts["care_tasks"] == 1

    async with db.sessions() as session:
        answers = {row.customer_id: row for row in await session.scalars(
            select(FeedbackResponse))}
        tasks = {row.customer_id: row for row in await session.scalars(select(CareTask))}
    erased, kept = answers[customer_id], answers[other_id]
    assert erased.comment is None and erased.score == 2
    assert erased.classification == "complaint"
    assert kept.comment == "周杰说快递太慢了"
    task = tasks[customer_id]
    assert (task.title, task.note, task.outcome_note) == ("[erased]", None, None)
    assert task.outcome == "reached"
    assert tasks[other_id].note == "周杰 prefers calls after 6pm"
