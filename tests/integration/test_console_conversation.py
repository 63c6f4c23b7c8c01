"""The conversation screen: policy, history, replies through the outbox, notes with
mentions, ticket edits, merges, snoozes, attachments, inert message HTML, customer card."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update

from contact_center.app import SETTINGS_KEY
from contact_center.web.inbox import INBOX_CACHE, snooze_stamp
from crm_core.db import Database
from crm_core.models import (
    AgentRole,
    AuditLog,
    CallRecord,
    CannedResponse,
    Channel,
    Conversation,
    Customer,
    Direction,
    DuplicateSuggestion,
    FeedbackResponse,
    Interaction,
    InteractionKind,
    OutboxMessage,
    Ticket,
    TicketStatus,
    utcnow,
)
from routing.blobs import FileBlobStore
from routing.events import Event
from tests.integration.console_support import (
    Seeded,
    add_agent,
    add_team,
    login,
    make_engine,
    row_ids,
    seed_conversation,
    start_client,
)

XSS_TEXT = '<script>alert("xss")</script><img src=x onerror=alert(1)>'


@dataclass
class Desk:
    """A team, its agent li, a colleague in another team, a supervisor and an admin."""

    client: TestClient
    db: Database
    events: list[Event]
    li: int
    wang: int
    team_x: int
    team_y: int
    mine: Seeded
    theirs: Seeded
    blobs: FileBlobStore
    extra: dict[str, int] = field(default_factory=dict)


@pytest.fixture
async def desk(db: Database, tmp_path: Path) -> AsyncIterator[Desk]:
    team_x = await add_team(db, "售后服务 After-sales")
    team_y = await add_team(db, "VIP desk")
    li = await add_agent(db, "li", teams=(team_x,), name="李娜")
    wang = await add_agent(db, "wang", teams=(team_y,), name="王芳")
    await add_agent(db, "zhao", role=AgentRole.SUPERVISOR, teams=(team_x,))
    await add_agent(db, "root", role=AgentRole.ADMIN)
    blobs = FileBlobStore(tmp_path / "blobs")
    key = await blobs.put("发票内容 invoice".encode())
    mine = await seed_conversation(
        db, assignee_id=li, team_id=team_x,
        identities=[{"kind": "telegram", "value": "777001"}],
        attachments=[{"blob_key": key, "filename": "发票 2026.pdf",
                      "content_type": "application/pdf", "size": 20}])
    theirs = await seed_conversation(db, name="于先生", email="yu@example.cn", subject="订座",
                                     text="还是老位置。", assignee_id=wang, team_id=team_y)
    engine = make_engine(db)
    events: list[Event] = []

    async def record(event: Event) -> None:
        events.append(event)

    engine.events.subscribe("*", record)
    client = await start_client(db, tmp_path, engine=engine)
    try:
        yield Desk(client, db, events, li, wang, team_x, team_y, mine, theirs, blobs)
    finally:
        await client.close()


def named(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e.name == name]


async def post(client: TestClient, url: str, token: str, data: dict[str, str],
               ajax: bool = True) -> aiohttp.ClientResponse:
    headers = {"X-Requested-With": "fetch", "X-CSRF-Token": token} if ajax else {}
    return await client.post(url, data={**data, "_csrf": token}, headers=headers,
                             allow_redirects=False)


async def test_the_policy_decides_who_opens_a_conversation(desk: Desk) -> None:
    """An agent cannot open another team's conversation (403); a supervisor sees the
    team's; an admin sees everything."""
    client = desk.client
    await login(client, "li")
    assert (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).status == 200
    for path in (f"/console/conversations/{desk.theirs.conversation_id}",
                 f"/console/conversations/{desk.theirs.conversation_id}/timeline",
                 f"/console/customers/{desk.theirs.customer_id}/card",
                 f"/console/attachments/{desk.theirs.interaction_id}/0"):
        response = await client.get(path)
        assert response.status == 403, path
    assert (await client.get("/console/conversations/999999")).status == 404

    client.session.cookie_jar.clear()
    await login(client, "zhao")
    assert (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).status == 200
    assert (await client.get(
        f"/console/conversations/{desk.theirs.conversation_id}")).status == 403

    client.session.cookie_jar.clear()
    await login(client, "root")
    assert (await client.get(
        f"/console/conversations/{desk.theirs.conversation_id}")).status == 200


async def test_the_timeline_holds_every_channel_of_the_customer(desk: Desk) -> None:
    """Mail with its subject, a chat of another conversation, a call with its recording
    and duration, a note; the customer card beside them."""
    chat = await seed_conversation(desk.db, customer_id=desk.mine.customer_id,
                                   channel=Channel.TELEGRAM, subject="", text="在吗？快递到哪了",
                                   email=None, assignee_id=desk.li, team_id=desk.team_x,
                                   thread_key="777001")
    call = await seed_conversation(desk.db, customer_id=desk.mine.customer_id,
                                   channel=Channel.PHONE, subject="", text="来电：转人工",
                                   email=None, team_id=desk.team_y)
    async with desk.db.transaction() as session:
        interaction = await session.get(Interaction, call.interaction_id)
        assert interaction is not None
        interaction.meta = {"channel": {"call_sid": "CA123"}}
        session.add(CallRecord(provider="twilio", call_id="CA123", from_number="+8613800138000",
                               customer_id=desk.mine.customer_id, status="completed",
                               duration_seconds=185, recording_seconds=42,
                               recording_url="https://api.twilio.example/rec/RE1"))
    client = desk.client
    await login(client, "li")
    html = await (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).text()
    assert "发票抬头错了" in html and "在吗？快递到哪了" in html and "来电：转人工" in html
    assert "3:05" in html and 'href="https://api.twilio.example/rec/RE1"' in html
    assert f'href="/console/conversations/{chat.conversation_id}"' in html
    assert 'data-testid="customer-card"' in html and "zhang.wei@example.cn" in html
    assert ('data-live="interaction.logged ticket.updated message.sent message.failed"'
            in html)  # a reply's delivery state shows live too


async def test_reply_goes_to_the_outbox_on_the_conversations_channel(desk: Desk) -> None:
    """The reply is an outbound interaction with the agent's id and an outbox row for the
    customer's address; the ticket's first response is met; consoles are told."""
    client = desk.client
    token = await login(client, "li")
    url = f"/console/conversations/{desk.mine.conversation_id}/reply"
    response = await post(client, url, token, {"text": "您好，已为您重新开具发票。"})
    assert response.status == 200, await response.text()
    body = await response.json()
    async with desk.db.sessions() as session:
        outbox = await session.get(OutboxMessage, body["outbox_id"])
        interaction = await session.get(Interaction, body["interaction_id"])
        ticket = await session.get(Ticket, desk.mine.ticket_id)
        audits = list(await session.scalars(select(AuditLog).where(
            AuditLog.entity_type == "ticket", AuditLog.action == "reply")))
    assert outbox is not None and interaction is not None and ticket is not None
    assert outbox.channel == Channel.EMAIL
    assert outbox.payload["to"]["email"] == "zhang.wei@example.cn"
    assert outbox.payload["subject"] == "Re: 发票抬头错了"
    assert outbox.payload["metadata"]["agent_name"] == "李娜"
    assert interaction.agent_id == desk.li and interaction.direction == Direction.OUTBOUND
    assert interaction.conversation_id == desk.mine.conversation_id
    assert ticket.first_responded_at is not None
    assert audits and audits[0].actor == "agent:li"
    logged = named(desk.events, "interaction.logged")
    assert logged and logged[-1].data["interaction_id"] == interaction.id
    assert named(desk.events, "ticket.updated")

    empty = await post(client, url, token, {"text": "  "})
    assert empty.status == 400 and "Write a reply" in (await empty.json())["error"]
    plain = await post(client, url, token, {"text": "plain form"}, ajax=False)
    assert plain.status == 303
    assert plain.headers["Location"] == f"/console/conversations/{desk.mine.conversation_id}"


async def test_answering_an_unassigned_conversation_takes_it(desk: Desk) -> None:
    """A reply from the team queue assigns the conversation and ticket to the agent."""
    queued = await seed_conversation(desk.db, name="Alice", email="alice@example.com",
                                     subject="Refund", text="Refund please",
                                     team_id=desk.team_x)
    client = desk.client
    token = await login(client, "li")
    response = await post(client, f"/console/conversations/{queued.conversation_id}/reply",
                          token, {"text": "Done."})
    assert response.status == 200
    async with desk.db.sessions() as session:
        conversation = await session.get(Conversation, queued.conversation_id)
        ticket = await session.get(Ticket, queued.ticket_id)
    assert conversation is not None and conversation.assignee_id == desk.li
    assert ticket is not None and ticket.assignee_id == desk.li
    assert ticket.status == TicketStatus.OPEN
    [assigned] = named(desk.events, "conversation.assigned")
    assert assigned.data == {"conversation_id": queued.conversation_id, "agent_id": desk.li,
                             "team_id": desk.team_x, "reason": "console:replied",
                             "customer_id": queued.customer_id}
    assert queued.conversation_id in row_ids(await (await client.get("/console/inbox")).text())


async def test_reply_on_another_channel_the_customer_has(desk: Desk) -> None:
    """A Telegram identity lets the agent answer there: a Telegram conversation is used
    (its chat id), and a channel the customer has no handle on is refused."""
    client = desk.client
    token = await login(client, "li")
    url = f"/console/conversations/{desk.mine.conversation_id}/reply"
    response = await post(client, url, token, {"text": "Telegram 上回复您", "target":
                                               "telegram:777001"})
    assert response.status == 200, await response.text()
    async with desk.db.sessions() as session:
        outbox = await session.get(OutboxMessage, (await response.json())["outbox_id"])
        assert outbox is not None
        conversation = await session.get(Conversation, outbox.conversation_id)
    assert outbox.channel == Channel.TELEGRAM
    assert outbox.payload["to"]["telegram_id"] == "777001"
    assert conversation is not None and conversation.channel == Channel.TELEGRAM
    assert conversation.thread_key == "777001" and outbox.payload["thread"]["chat_id"] == "777001"
    refused = await post(client, url, token, {"text": "x", "target": "webchat:v-someone"})
    assert refused.status == 400


async def test_canned_response_shortcut_and_variables(desk: Desk) -> None:
    """``/thanks`` becomes the customer's-language canned text with variables filled
    in by plain substitution (a template expression is not evaluated)."""
    async with desk.db.transaction() as session:
        session.add_all([
            CannedResponse(shortcut="thanks", language="zh-CN", title="感谢",
                           body="{{customer.name}}您好，工单 {{ticket.number}} 已处理。"
                                "——{{agent.name}} {{ 7*7 }} {{customer.__class__}}"),
            CannedResponse(shortcut="thanks", language="en", title="Thanks",
                           body="Dear {{customer.name}}, thanks."),
        ])
    client = desk.client
    token = await login(client, "li")
    page = await (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).text()
    assert 'data-shortcut-name="thanks"' in page
    response = await post(client, f"/console/conversations/{desk.mine.conversation_id}/reply",
                          token, {"text": "/thanks"})
    async with desk.db.sessions() as session:
        outbox = await session.get(OutboxMessage, (await response.json())["outbox_id"])
    assert outbox is not None
    assert outbox.payload["text"] == (f"张伟您好，工单 {desk.mine.ticket_number} 已处理。——李娜 "
                                      "{{ 7*7 }} {{customer.__class__}}")


async def test_reply_with_attachments_and_the_size_limit(desk: Desk) -> None:
    """Files are streamed into the blob store and travel with the outbox row; a file over
    the limit is refused with 413."""
    client = desk.client
    token = await login(client, "li")
    url = f"/console/conversations/{desk.mine.conversation_id}/reply"
    form = aiohttp.FormData()
    form.add_field("_csrf", token)
    form.add_field("text", "请查收附件")
    form.add_field("files", "账单内容".encode(), filename="账单.txt", content_type="text/plain")
    response = await client.post(url, data=form, headers={"X-CSRF-Token": token,
                                                          "X-Requested-With": "fetch"})
    assert response.status == 200, await response.text()
    async with desk.db.sessions() as session:
        outbox = await session.get(OutboxMessage, (await response.json())["outbox_id"])
    assert outbox is not None
    [attached] = outbox.payload["attachments"]
    assert attached["filename"] == "账单.txt" and attached["size"] == len("账单内容".encode())
    assert await desk.blobs.get(attached["blob_key"]) == "账单内容".encode()

    desk.client.server.app[SETTINGS_KEY].email.max_attachment_mb = 0.001  # about 1 KB
    big = aiohttp.FormData()
    big.add_field("text", "big")
    big.add_field("files", b"x" * 5000, filename="big.bin")
    refused = await client.post(url, data=big, headers={"X-CSRF-Token": token,
                                                        "X-Requested-With": "fetch"})
    assert refused.status == 413
    blocked = aiohttp.FormData()
    blocked.add_field("files", b"MZ", filename="setup.exe")
    refused = await client.post(url, data=blocked, headers={"X-CSRF-Token": token,
                                                            "X-Requested-With": "fetch"})
    assert refused.status == 400 and ".exe" in (await refused.json())["error"]


async def test_note_with_a_mention_is_internal_and_announced(desk: Desk) -> None:
    """A note is kind note, direction internal; ``@zhao`` becomes a note.mentioned event."""
    client = desk.client
    token = await login(client, "li")
    response = await post(client, f"/console/conversations/{desk.mine.conversation_id}/note",
                          token, {"text": "@zhao 请帮忙看看这张发票，@nobody 不存在"})
    assert response.status == 200, await response.text()
    async with desk.db.sessions() as session:
        note = await session.get(Interaction, (await response.json())["interaction_id"])
        zhao = await session.scalar(select(func.min(OutboxMessage.id)))
    assert note is not None and note.kind == InteractionKind.NOTE
    assert note.direction == Direction.INTERNAL and zhao is None  # nothing to send
    [mentioned] = named(desk.events, "note.mentioned")
    assert mentioned.data["agent_ids"] == note.meta["mentions"] and len(note.meta["mentions"]) == 1
    assert mentioned.data["conversation_id"] == desk.mine.conversation_id
    assert "text" not in mentioned.data
    page = await (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).text()
    assert "请帮忙看看这张发票" in page and "Note by 李娜" in page


async def test_ticket_edit_is_audited_and_announced(desk: Desk) -> None:
    """Status, priority, tags and the assignee change; the audit log has before/after; the
    conversation follows the ticket's assignment."""
    client = desk.client
    token = await login(client, "li")
    url = f"/console/conversations/{desk.mine.conversation_id}/ticket"
    response = await post(client, url, token, {
        "status": "open", "priority": "urgent", "category": "fault",
        "tags": "发票, vip，发票", "assignee_id": str(desk.li), "team_id": str(desk.team_x)})
    assert response.status == 200, await response.text()
    async with desk.db.sessions() as session:
        ticket = await session.get(Ticket, desk.mine.ticket_id)
        entry = await session.scalar(select(AuditLog).where(
            AuditLog.entity_type == "ticket", AuditLog.action == "update"))
    assert ticket is not None and ticket.priority.value == "urgent"
    assert ticket.tags == ["发票", "vip"]
    assert entry is not None and entry.actor == "agent:li"
    assert entry.before == {"priority": "normal", "category": "inquiry", "tags": []}
    assert entry.after == {"priority": "urgent", "category": "fault", "tags": ["发票", "vip"]}
    [updated] = named(desk.events, "ticket.updated")
    assert updated.data["ticket_id"] == desk.mine.ticket_id
    assert set(updated.data["fields"]) == {"priority", "category", "tags"}

    resolve = await client.post(url, data={"_csrf": token, "status": ["open", "resolved"]},
                                allow_redirects=False)
    assert resolve.status == 303
    async with desk.db.sessions() as session:
        ticket = await session.get(Ticket, desk.mine.ticket_id)
    assert ticket is not None and ticket.status == TicketStatus.RESOLVED and ticket.resolved_at

    handover = await post(client, url, token, {"assignee_id": str(desk.wang),
                                               "team_id": str(desk.team_y)})
    assert handover.status == 200
    async with desk.db.sessions() as session:
        conversation = await session.get(Conversation, desk.mine.conversation_id)
    assert conversation is not None and conversation.assignee_id == desk.wang
    assert named(desk.events, "conversation.assigned")[-1].data["agent_id"] == desk.wang
    assert (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).status == 403
    bad = await post(client, url, token, {"priority": "whenever"})
    assert bad.status in (400, 403)


async def test_merging_a_duplicate_ticket(desk: Desk) -> None:
    """The other ticket's conversation moves into this one; it is closed, noted, audited."""
    duplicate = await seed_conversation(desk.db, customer_id=desk.mine.customer_id,
                                        subject="发票抬头错了（再次）", text="再问一次发票的事",
                                        assignee_id=desk.li, team_id=desk.team_x)
    client = desk.client
    token = await login(client, "li")
    url = f"/console/conversations/{desk.mine.conversation_id}/merge"
    response = await post(client, url, token, {"ticket": duplicate.ticket_number.lower()})
    assert response.status == 200, await response.text()
    assert (await response.json())["moved"] == 1
    async with desk.db.sessions() as session:
        other = await session.get(Ticket, duplicate.ticket_id)
        moved = await session.get(Interaction, duplicate.interaction_id)
        notes = list(await session.scalars(select(Interaction).where(
            Interaction.kind == InteractionKind.SYSTEM)))
        actions = set(await session.scalars(select(AuditLog.action).where(
            AuditLog.entity_type == "ticket")))
    assert other is not None and other.status == TicketStatus.CLOSED and "merged" in other.tags
    assert moved is not None and moved.conversation_id == desk.mine.conversation_id
    assert {n.meta["event"] for n in notes} == {"ticket_merged", "merged_into"}
    assert {"merge", "merged_into"} <= actions
    again = await post(client, url, token, {"ticket": duplicate.ticket_number})
    assert again.status == 400
    foreign = await post(client, url, token, {"ticket": desk.theirs.ticket_number})
    assert foreign.status == 403
    page = await (await client.get(f"/console/conversations/{desk.mine.conversation_id}")).text()
    assert f"Ticket {duplicate.ticket_number} was merged into this one" in page


async def test_snooze_leaves_mine_until_the_time_passes(desk: Desk) -> None:
    """Snoozed: pending and out of "mine"; back when the time passed or the agent wakes it."""
    client = desk.client
    token = await login(client, "li")
    conversation_id = desk.mine.conversation_id
    response = await post(client, f"/console/conversations/{conversation_id}/snooze", token,
                          {"hours": "4"})
    assert response.status == 200, await response.text()
    inbox = await (await client.get("/console/inbox")).text()
    assert conversation_id not in row_ids(inbox)
    assert conversation_id in row_ids(await (await client.get(
        "/console/inbox?view=teams")).text())
    async with desk.db.sessions() as session:
        ticket = await session.get(Ticket, desk.mine.ticket_id)
    assert ticket is not None and ticket.status == TicketStatus.PENDING

    async with desk.db.transaction() as session:  # four hours later
        await session.execute(update(Interaction).where(
            Interaction.kind == InteractionKind.SYSTEM).values(
            meta={"event": "snoozed", "snoozed_until": snooze_stamp(utcnow() - timedelta(
                minutes=1))}))
    pages = client.server.app[INBOX_CACHE]  # the remembered inbox page ages too
    pages.clock = lambda: time.monotonic() + 2 * pages.max_age + 1
    assert conversation_id in row_ids(await (await client.get("/console/inbox")).text())

    await post(client, f"/console/conversations/{conversation_id}/snooze", token,
               {"until": (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")})
    assert conversation_id not in row_ids(await (await client.get("/console/inbox")).text())
    woken = await post(client, f"/console/conversations/{conversation_id}/unsnooze", token, {})
    assert woken.status == 200
    assert conversation_id in row_ids(await (await client.get("/console/inbox")).text())
    too_far = await post(client, f"/console/conversations/{conversation_id}/snooze", token,
                         {"hours": str(24 * 365)})
    assert too_far.status == 400


async def test_attachment_download_is_policy_checked(desk: Desk) -> None:
    """The file comes as a download with its Chinese name; another team's agent gets 403."""
    client = desk.client
    await login(client, "li")
    response = await client.get(f"/console/attachments/{desk.mine.interaction_id}/0")
    assert response.status == 200
    assert await response.read() == "发票内容 invoice".encode()
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert quote("发票 2026.pdf", safe="") in disposition
    assert "sandbox" in response.headers["Content-Security-Policy"]
    assert (await client.get(f"/console/attachments/{desk.mine.interaction_id}/5")).status == 404

    client.session.cookie_jar.clear()
    await login(client, "wang")
    refused = await client.get(f"/console/attachments/{desk.mine.interaction_id}/0")
    assert refused.status == 403


async def test_hostile_message_content_renders_inert(desk: Desk) -> None:
    """Script tags and event handlers in a message, subject, name or file name are
    escaped; a mail's HTML is only served sandboxed on its own page."""
    hostile = await seed_conversation(
        desk.db, name='<img src=x onerror=alert("name")>', email="evil@example.com",
        subject='<script>alert("subject")</script>', text=XSS_TEXT,
        html='<p onclick="alert(1)">hi</p><script>alert(2)</script>',
        assignee_id=desk.li, team_id=desk.team_x,
        attachments=[{"blob_key": "sha256/00/00/00", "filename": '"><svg onload=alert(3)>.txt',
                      "content_type": "text/html", "size": 1}])
    client = desk.client
    await login(client, "li")
    for path in (f"/console/conversations/{hostile.conversation_id}", "/console/inbox",
                 f"/console/conversations/{hostile.conversation_id}/timeline",
                 f"/console/customers/{hostile.customer_id}/card"):
        html = await (await client.get(path)).text()
        assert "<script>alert" not in html, path
        assert "<img src=x onerror" not in html, path
        assert "<svg onload" not in html, path
        assert 'onclick="alert' not in html, path
    page = await (await client.get(f"/console/conversations/{hostile.conversation_id}")).text()
    assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r"<script(?![^>]*src=\"/console/static/)", page)
    original = await client.get(f"/console/interactions/{hostile.interaction_id}/html")
    assert original.status == 200
    csp = original.headers["Content-Security-Policy"]
    assert csp.startswith("sandbox;") and "script-src" not in csp and "default-src 'none'" in csp


async def test_customer_card_edit_and_duplicate_merge(desk: Desk) -> None:
    """Fields edited in place are audited; a suggested duplicate merges in one click."""
    lead = await seed_conversation(desk.db, name="张伟 (微信)", email="zw@example.net",
                                   subject="还是发票", assignee_id=desk.li, team_id=desk.team_x)
    async with desk.db.transaction() as session:
        low, high = sorted((desk.mine.customer_id, lead.customer_id))
        suggestion = DuplicateSuggestion(customer_id=low, candidate_id=high, score=88.0,
                                         reasons={"name": 90.0, "phone": 100.0})
        session.add(suggestion)
        await session.flush()
        suggestion_id = suggestion.id
    async with desk.db.transaction() as session:
        session.add(FeedbackResponse(customer_id=desk.mine.customer_id, kind="csat", score=4,
                                     comment="<b>很满意</b>", channel=Channel.EMAIL))
    client = desk.client
    token = await login(client, "li")
    card_url = f"/console/customers/{desk.mine.customer_id}/card"
    card = await (await client.get(card_url)).text()
    assert "张伟 (微信)" in card and 'data-testid="merge-duplicate"' in card
    assert "CSAT <strong>4</strong>" in card and "&lt;b&gt;很满意&lt;/b&gt;" in card
    edited = await post(client, card_url, token, {"display_name": "张伟先生", "language": "zh-CN",
                                                  "tier_code": "", "notes": "常客，偏好电话联系"})
    assert edited.status == 200, await edited.text()
    assert set((await edited.json())["changed"]) == {"display_name", "notes"}
    merged = await post(client, f"{card_url}/merge", token, {"suggestion": str(suggestion_id)})
    assert merged.status == 200, await merged.text()
    async with desk.db.sessions() as session:
        survivor = await session.get(Customer, desk.mine.customer_id)
        gone = await session.get(Customer, lead.customer_id)
        actions = list(await session.scalars(select(AuditLog.action).where(
            AuditLog.entity_type == "customer", AuditLog.actor == "agent:li")))
        status = await session.scalar(select(DuplicateSuggestion.status))
    assert survivor is not None and survivor.display_name == "张伟先生"
    assert survivor.notes == "常客，偏好电话联系"
    assert gone is not None and gone.merged_into_id == desk.mine.customer_id
    assert "update" in actions and "merge" in actions and status == "merged"
    again = await post(client, f"{card_url}/merge", token, {"suggestion": str(suggestion_id)})
    assert again.status == 404
    assert named(desk.events, "customer.updated")
