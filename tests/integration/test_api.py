"""The REST API: tokens (scopes, revocation, last use), rate limits, the error format,
cursor pages, customers, replies through the outbox, tickets, PII export and erasure."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from contact_center.api.ratelimit import MemoryRateLimiter, RedisRateLimiter
from crm_core.db import Database
from crm_core.models import ApiToken, AuditLog, Customer, OutboxMessage, utcnow
from crm_core.services import api_tokens
from crm_core.services.api_tokens import hash_token, revoke_token
from tests.integration.api_support import api_client, bearer, issue_token
from tests.integration.console_support import add_agent, seed_conversation


def error_of(body: dict) -> dict:
    """The error object, after checking the one error format."""
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "field"}
    return body["error"]


async def test_a_token_is_stored_hashed_and_its_last_use_noted(db: Database,
                                                              tmp_path: Path) -> None:
    client = await api_client(db, tmp_path)
    try:
        token = await issue_token(db, ["customers:read"])
        async with db.sessions() as session:
            row = await session.scalar(select(ApiToken))
            assert row is not None
            assert row.token_hash == hash_token(token) and token not in row.token_hash
            assert row.last_used_at is None
        response = await client.get("/api/v1/customers", headers=bearer(token))
        assert response.status == 200
        async with db.sessions() as session:
            row = await session.scalar(select(ApiToken))
            assert row is not None and row.last_used_at is not None
    finally:
        await client.close()


async def test_scopes_and_revocation(db: Database, tmp_path: Path) -> None:
    client = await api_client(db, tmp_path)
    try:
        reader = await issue_token(db, ["customers:read"])
        response = await client.post("/api/v1/customers", json={"display_name": "李雷"},
                                     headers=bearer(reader))
        assert response.status == 403
        assert error_of(await response.json())["code"] == "forbidden"
        assert (await client.get("/api/v1/tickets", headers=bearer(reader))).status == 403
        assert (await client.get("/api/v1/customers", headers=bearer(reader))).status == 200

        async with db.transaction() as session:
            row = await session.scalar(select(ApiToken))
            assert row is not None
            await revoke_token(session, row.id, actor="test")
        response = await client.get("/api/v1/customers", headers=bearer(reader))
        assert response.status == 401
        assert error_of(await response.json())["code"] == "unauthorized"
        for headers in ({}, {"Authorization": "Basic abc"}, bearer("cct_not-a-token")):
            response = await client.get("/api/v1/customers", headers=headers)
            assert response.status == 401
    finally:
        await client.close()


async def test_a_revocation_elsewhere_holds_within_the_token_cache_time(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(api_tokens.TOKENS, "monotonic", lambda: now[0])
    api_tokens.TOKENS.forget()
    client = await api_client(db, tmp_path)
    try:
        token = await issue_token(db, ["customers:read"])
        assert (await client.get("/api/v1/customers", headers=bearer(token))).status == 200
        async with db.transaction() as session:  # as the CLI in another process does
            await session.execute(update(ApiToken).values(revoked_at=utcnow()))
        assert (await client.get("/api/v1/customers", headers=bearer(token))).status == 200
        now[0] = api_tokens.TOKENS.seconds + 0.1
        assert (await client.get("/api/v1/customers", headers=bearer(token))).status == 401
    finally:
        await client.close()


async def test_a_cached_token_is_refused_once_it_expires(
        db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await api_client(db, tmp_path)
    try:
        token = await issue_token(db, ["customers:read"])
        async with db.transaction() as session:
            await session.execute(update(ApiToken).values(
                expires_at=utcnow() + timedelta(seconds=2)))
        assert (await client.get("/api/v1/customers", headers=bearer(token))).status == 200
        later = utcnow() + timedelta(seconds=3)
        monkeypatch.setattr("contact_center.api.utcnow", lambda: later)
        assert (await client.get("/api/v1/customers", headers=bearer(token))).status == 401
    finally:
        await client.close()


async def test_rate_limit_answers_429_with_retry_after(db: Database, tmp_path: Path) -> None:
    client = await api_client(db, tmp_path)
    try:
        token = await issue_token(db, ["customers:read"], rate_limit=3)
        other = await issue_token(db, ["customers:read"], rate_limit=3)
        statuses = [(await client.get("/api/v1/customers", headers=bearer(token))).status
                    for _ in range(3)]
        assert statuses == [200, 200, 200]
        response = await client.get("/api/v1/customers", headers=bearer(token))
        assert response.status == 429
        assert error_of(await response.json())["code"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        # the budget is per token
        assert (await client.get("/api/v1/customers", headers=bearer(other))).status == 200
    finally:
        await client.close()


async def test_memory_limiter_opens_a_new_window() -> None:
    now = [1000.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    assert (await limiter.hit("t", 1)).allowed
    refused = await limiter.hit("t", 1)
    assert not refused.allowed and refused.retry_after == 20  # window ends at 1020
    now[0] = 1020.0
    assert (await limiter.hit("t", 1)).allowed


async def test_redis_limiter_is_shared_between_instances(redis_client: object,
                                                         redis_prefix: str) -> None:
    first = RedisRateLimiter(redis_client, prefix=redis_prefix, clock=lambda: 1000.0)
    second = RedisRateLimiter(redis_client, prefix=redis_prefix, clock=lambda: 1000.0)
    assert (await first.hit("t", 2)).allowed
    assert (await second.hit("t", 2)).allowed
    verdict = await first.hit("t", 2)
    assert not verdict.allowed and verdict.retry_after == 20


async def test_bad_input_gets_4xx_in_the_error_format(db: Database, tmp_path: Path) -> None:
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db))
        cases = [
            ("POST", "/api/v1/customers", {"data": "not json", "headers": {
                **headers, "Content-Type": "application/json"}}, 400, "invalid_json"),
            ("POST", "/api/v1/customers", {"data": "x=1", "headers": {
                **headers, "Content-Type": "application/x-www-form-urlencoded"}},
             415, "unsupported_media_type"),
            ("POST", "/api/v1/customers", {"json": {"display_name": "x", "bogus": 1},
                                           "headers": headers}, 400, "validation_error"),
            ("POST", "/api/v1/customers", {"json": {"display_name": "a\u0000b"},
                                           "headers": headers}, 400, "validation_error"),
            ("POST", "/api/v1/customers", {"json": {"emails": ["not-an-email"],
                                                    "display_name": "x"},
                                           "headers": headers}, 400, "validation_error"),
            ("GET", "/api/v1/customers/999999", {"headers": headers}, 404, "not_found"),
            ("GET", "/api/v1/customers/99999999999", {"headers": headers}, 404, "not_found"),
            ("GET", "/api/v1/customers?limit=0", {"headers": headers}, 400, "validation_error"),
            ("GET", "/api/v1/customers?cursor=zzz", {"headers": headers}, 400,
             "invalid_cursor"),
            ("DELETE", "/api/v1/tickets", {"headers": headers}, 405, "method_not_allowed"),
            ("POST", "/api/v1/customers", {"data": b"{" * 2_000_000, "headers": {
                **headers, "Content-Type": "application/json"}}, 413, "too_large"),
        ]
        for method, path, kwargs, status, code in cases:
            response = await client.request(method, path, **kwargs)
            assert response.status == status, (path, kwargs.get("json"))
            error = error_of(await response.json())
            assert error["code"] == code, (path, error)
        response = await client.post("/api/v1/customers", json={"display_name": "x",
                                                                "bogus": 1}, headers=headers)
        assert error_of(await response.json())["field"] == "bogus"
    finally:
        await client.close()


async def test_customers_crud_search_pages_and_identities(db: Database, tmp_path: Path) -> None:
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db))
        ids = []
        for n in range(5):
            response = await client.post("/api/v1/customers", headers=headers, json={
                "display_name": f"客户{n}", "emails": [f"c{n}@example.com"], "tags": ["vip"]})
            assert response.status == 201
            ids.append((await response.json())["id"])
        duplicate = await client.post("/api/v1/customers", headers=headers, json={
            "display_name": "copy", "emails": ["C0@Example.com"]})
        assert duplicate.status == 409
        assert error_of(await duplicate.json())["code"] == "conflict"

        seen, cursor = [], None
        while True:
            query = "?limit=2&tag=vip" + (f"&cursor={cursor}" if cursor else "")
            page = await (await client.get("/api/v1/customers" + query, headers=headers)).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(ids, reverse=True)

        found = await (await client.get("/api/v1/customers?q=c3@example.com",
                                        headers=headers)).json()
        assert [c["id"] for c in found["items"]] == [ids[3]]

        changed = await client.patch(f"/api/v1/customers/{ids[0]}", headers=headers,
                                     json={"city": "上海"})
        assert changed.status == 200 and (await changed.json())["city"] == "上海"
        added = await client.post(f"/api/v1/customers/{ids[0]}/identities", headers=headers,
                                  json={"kind": "phone", "value": "138 0013 8000"})
        assert added.status == 201
        phones = [i for i in (await added.json())["identities"] if i["kind"] == "phone"]
        assert [p["value"] for p in phones] == ["+8613800138000"]
        removed = await client.delete(
            f"/api/v1/customers/{ids[0]}/identities/{phones[0]['id']}", headers=headers)
        assert removed.status == 204
        listed = await (await client.get(f"/api/v1/customers/{ids[0]}/identities",
                                         headers=headers)).json()
        assert [i["kind"] for i in listed["items"]] == ["email"]

        merged = await client.post(f"/api/v1/customers/{ids[0]}/merge", headers=headers,
                                   json={"merged_id": ids[1]})
        assert merged.status == 200
        gone = await client.get(f"/api/v1/customers/{ids[1]}", headers=headers)
        assert gone.status == 404
        assert (await client.delete(f"/api/v1/customers/{ids[2]}",
                                    headers=headers)).status == 204
        async with db.sessions() as session:
            actors = set(await session.scalars(select(AuditLog.actor)))
        assert any(a.startswith("api:") for a in actors)
    finally:
        await client.close()


async def test_reply_goes_through_the_outbox(db: Database, tmp_path: Path) -> None:
    seeded = await seed_conversation(db)
    agent_id = await add_agent(db, "li", name="李娜")
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db, ["conversations:read", "conversations:write"],
                                           agent_id=agent_id))
        response = await client.post(f"/api/v1/conversations/{seeded.conversation_id}/messages",
                                     headers=headers, json={"text": "已为您重开发票。"})
        assert response.status == 202
        body = await response.json()
        async with db.sessions() as session:
            outbox = await session.get(OutboxMessage, body["outbox_id"])
            assert outbox is not None and outbox.channel.value == "email"
        messages = await (await client.get(
            f"/api/v1/conversations/{seeded.conversation_id}/messages",
            headers=headers)).json()
        assert [m["direction"] for m in messages["items"]] == ["inbound", "outbound"]
        assert messages["items"][1]["text"] == "已为您重开发票。"
        assert messages["items"][1]["agent_id"] == agent_id  # the token acts for its agent
        listed = await (await client.get(
            f"/api/v1/conversations?customer_id={seeded.customer_id}", headers=headers)).json()
        assert [c["id"] for c in listed["items"]] == [seeded.conversation_id]
    finally:
        await client.close()


async def test_tickets_status_moves_are_checked(db: Database, tmp_path: Path) -> None:
    seeded = await seed_conversation(db)
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db))
        open_list = await (await client.get("/api/v1/tickets?open=true",
                                            headers=headers)).json()
        assert [t["id"] for t in open_list["items"]] == [seeded.ticket_id]
        created = await client.post("/api/v1/tickets", headers=headers, json={
            "customer_id": seeded.customer_id, "subject": "回访", "priority": "high"})
        assert created.status == 201
        ticket = await created.json()
        assert ticket["number"].startswith("T-") and ticket["status"] == "new"
        closed = await client.patch(f"/api/v1/tickets/{ticket['id']}", headers=headers,
                                    json={"status": "closed"})
        assert (await closed.json())["closed_at"] is not None
        refused = await client.patch(f"/api/v1/tickets/{ticket['id']}", headers=headers,
                                     json={"status": "pending"})
        assert refused.status == 409
        assert error_of(await refused.json())["code"] == "invalid_state"
        reopened = await client.patch(f"/api/v1/tickets/{ticket['id']}", headers=headers,
                                      json={"status": "open"})
        assert (await reopened.json())["closed_at"] is None
        only_closed = await (await client.get("/api/v1/tickets?status=closed&status=resolved",
                                              headers=headers)).json()
        assert only_closed["items"] == []
        unknown = await client.post("/api/v1/tickets", headers=headers, json={
            "customer_id": 999999, "subject": "x"})
        assert unknown.status == 400
    finally:
        await client.close()


async def test_pii_export_and_erase_are_audited(db: Database, tmp_path: Path) -> None:
    seeded = await seed_conversation(db, name="韩梅梅", email="meimei@example.cn")
    client = await api_client(db, tmp_path)
    try:
        reader = bearer(await issue_token(db, ["customers:read"]))
        path = f"/api/v1/customers/{seeded.customer_id}"
        assert (await client.get(path + "/export", headers=reader)).status == 403
        headers = bearer(await issue_token(db, ["pii:export", "pii:erase"]))
        export = await client.get(path + "/export", headers=headers)
        assert export.status == 200
        data = await export.json()
        assert data["customer"]["display_name"] == "韩梅梅"
        assert [i["value"] for i in data["identities"]] == ["meimei@example.cn"]
        assert len(data["interactions"]) == 1 and len(data["tickets"]) == 1
        erased = await client.post(path + "/erase", headers=headers,
                                   json={"reason": "customer asked"})
        assert erased.status == 200
        again = await client.post(path + "/erase", headers=headers, json={"reason": "again"})
        assert again.status == 409
        async with db.sessions() as session:
            customer = await session.get(Customer, seeded.customer_id)
            assert customer is not None and customer.erased_at is not None
            assert customer.display_name != "韩梅梅"
            actions = set(await session.scalars(select(AuditLog.action).where(
                AuditLog.entity_type == "customer",
                AuditLog.entity_id == str(seeded.customer_id))))
        assert {"export", "erase"} <= actions
    finally:
        await client.close()


async def test_reports_feedback_campaigns(db: Database, tmp_path: Path) -> None:
    await seed_conversation(db)
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db))
        summary = await (await client.get("/api/v1/reports/summary", headers=headers)).json()
        assert summary["customers"] == 1 and summary["open_tickets"] == 1
        assert summary["conversations_by_channel"] == {"email": 1}
        feedback = await client.get("/api/v1/feedback?kind=csat", headers=headers)
        assert feedback.status == 200 and (await feedback.json())["items"] == []
        campaigns = await client.get("/api/v1/campaigns", headers=headers)
        assert campaigns.status == 200
        missing = await client.post("/api/v1/campaigns/999/trigger", headers=headers,
                                    json={"customer_ids": [1]})
        assert missing.status == 404
    finally:
        await client.close()


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/docs"])
async def test_spec_and_docs_are_public_and_hardened(sqlite_db: Database, tmp_path: Path,
                                                     path: str) -> None:
    client = await api_client(sqlite_db, tmp_path)
    try:
        response = await client.get(path)
        assert response.status == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        if path.endswith(".json"):
            spec = await response.json()
            assert spec["openapi"] == "3.1.0"
            assert "/api/v1/customers/{customer_id}" in spec["paths"]
        else:
            csp = response.headers["Content-Security-Policy"]
            assert "script-src" not in csp and "default-src 'none'" in csp
            assert "<script" not in await response.text()
    finally:
        await client.close()


async def test_trigger_plans_sends_once_per_occurrence(db: Database, tmp_path: Path) -> None:
    from contact_center.scheduler import build_scheduler
    from contact_center.settings import Settings
    from crm_core.models import Campaign, CampaignSend

    await build_scheduler(Settings(data_dir=tmp_path), db).sync()
    seeded = await seed_conversation(db)
    client = await api_client(db, tmp_path)
    try:
        headers = bearer(await issue_token(db, ["campaigns:read", "campaigns:write"]))
        listed = await (await client.get("/api/v1/campaigns", headers=headers)).json()
        chosen = next(c for c in listed["items"] if c["key"] == "birthday-greeting")
        path = f"/api/v1/campaigns/{chosen['id']}/trigger"
        body = {"customer_ids": [seeded.customer_id], "occurrence": "spring-2027"}
        first = await client.post(path, headers=headers, json=body)
        assert first.status == 202 and (await first.json())["planned"] == 1
        again = await client.post(path, headers=headers, json=body)
        assert (await again.json())["planned"] == 0
        unknown = await client.post(path, headers=headers, json={"customer_ids": [999999]})
        assert unknown.status == 400
        async with db.sessions() as session:
            rows = list(await session.scalars(select(CampaignSend)))
            assert [(r.customer_id, r.occurrence, r.status) for r in rows] == [
                (seeded.customer_id, "api:spring-2027", "pending")]
            assert await session.get(Campaign, chosen["id"]) is not None
    finally:
        await client.close()
