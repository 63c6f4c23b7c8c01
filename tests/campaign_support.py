"""Helpers of the campaign tests: a clock to drive, campaigns from TOML text, customers."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from contact_center.campaign_links import CampaignLinks
from contact_center.scheduler import CampaignScheduler
from crm_core.db import Database
from crm_core.models import (
    CampaignSend,
    Channel,
    CustomerTier,
    OutboxMessage,
)
from crm_core.services.campaign_config import CampaignConfig, parse_campaigns
from crm_core.services.customers import create_customer
from routing.events import Event, EventBus

SECRET = b"campaign-test-secret"
BASE_URL = "https://cc.example.test"


class Clock:
    """A clock the test moves: ``clock()`` is now."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def set(self, moment: datetime) -> None:
        """Jump to a moment."""
        self.now = moment

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)``; returns the new now."""
        self.now = self.now + timedelta(**delta)
        return self.now


def utc(*args: int) -> datetime:
    """A UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def config_from(text: str, *, defaults: str = "") -> CampaignConfig:
    """A campaigns file from TOML text (defaults: no quiet hours, no caps)."""
    head = defaults or '[defaults]\ntimezone = "Asia/Shanghai"\nlanguage = "zh-CN"\n'
    return parse_campaigns(tomllib.loads(head + "\n" + text), source="test.toml")


TEMPLATES = """
[campaigns.templates.default.zh-CN]
text = "{{ customer.greeting }}，您好！{{ opt_out_hint }}"
[campaigns.templates.default.en]
text = "Hello {{ customer.greeting }}! {{ opt_out_hint }}"
[campaigns.templates.email.zh-CN]
subject = "{{ campaign.name }}"
text = "{{ customer.greeting }}，您好！"
[campaigns.templates.email.en]
subject = "{{ campaign.name }}"
text = "Hello {{ customer.greeting }}!"
"""


def campaign(key: str, trigger: str, *, extra: str = "", templates: str = TEMPLATES) -> str:
    """One ``[[campaigns]]`` table with the standard templates."""
    return (f'[[campaigns]]\nkey = "{key}"\nname = "{key}"\ntrigger = {trigger}\n'
            f"{extra}\n{templates}")


class Recorder:
    """Collects published events."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.bus = EventBus()
        self.bus.subscribe("*", self._keep)

    async def _keep(self, event: Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Event]:
        """Events of one name."""
        return [e for e in self.events if e.name == name]


def scheduler(db: Database, config: CampaignConfig, clock: Clock, **kwargs: Any,
              ) -> CampaignScheduler:
    """A scheduler on the test database with the test clock and link secret."""
    kwargs.setdefault("timezone", "Asia/Shanghai")
    return CampaignScheduler(db, config, links=CampaignLinks(BASE_URL, SECRET), now=clock,
                             **kwargs)


async def add_customer(db: Database, name: str = "张伟", **fields: Any) -> int:
    """A customer made through the service (validated, audited)."""
    async with db.transaction() as session:
        customer = await create_customer(session, {"display_name": name, **fields},
                                         actor="test", region="CN")
        return customer.id


async def add_tier(db: Database, code: str = "vip") -> None:
    """A customer tier the customers can be put in."""
    async with db.transaction() as session:
        session.add(CustomerTier(code=code, name=code.upper(), rank=10))


async def sends(db: Database, **where: Any) -> list[CampaignSend]:
    """Campaign sends, oldest first, filtered by column values."""
    async with db.sessions() as session:
        query = select(CampaignSend).order_by(CampaignSend.id)
        for name, value in where.items():
            query = query.where(getattr(CampaignSend, name) == value)
        return list(await session.scalars(query))


async def outbox(db: Database, channel: Channel | None = None) -> list[OutboxMessage]:
    """Outbox rows, oldest first."""
    async with db.sessions() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if channel is not None:
            query = query.where(OutboxMessage.channel == channel)
        return list(await session.scalars(query))


async def count(db: Database, model: Any, *where: Any) -> int:
    """Rows of a model matching conditions."""
    async with db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where))
                   or 0)


def email_customer(address: str, **fields: Any) -> dict[str, Any]:
    """Fields of a customer reachable by e-mail (consent given)."""
    return {"emails": [address], "marketing_opt_in": {"email": True}, **fields}
