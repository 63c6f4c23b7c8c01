"""Plugs the parts together from settings: bus, routing engine, events, outbox dispatcher."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contact_center.settings import Settings
from crm_core.db import Database
from routing.adapters import ChannelRegistry
from routing.bot import BotRuntime
from routing.bus import DatabaseBus, RetryPolicy
from routing.context import RoutingConfig
from routing.engine import RoutingEngine
from routing.events import EventBus, EventSink, RedisEventForwarder
from routing.knowledge import load_config as load_knowledge_config
from routing.outbox import OutboxDispatcher
from routing.rules import load_rules


def retry_policy(settings: Settings) -> RetryPolicy:
    """The bus's retry policy from the routing settings."""
    routing = settings.routing
    return RetryPolicy(
        max_attempts=routing.max_attempts,
        base_delay=timedelta(seconds=routing.retry_base_seconds),
        lease=timedelta(seconds=routing.lease_seconds),
    )


def bot_runtime(settings: Settings) -> BotRuntime | None:
    """The self-service bot when ``[bot] channels`` names any, else None."""
    if not settings.bot.channels:
        return None
    return BotRuntime(
        channels=dict(settings.bot.channels),
        flows_file=settings.bot.flows_file,
        region=settings.locale.default_region,
        default_language=settings.locale.default_language,
        knowledge_config=load_knowledge_config(settings.bot.knowledge_file),
    )


def routing_config(settings: Settings) -> RoutingConfig:
    """The pipeline's configuration, with the rules file loaded (and the bot, if on)."""
    routing = settings.routing
    return RoutingConfig(
        bot=bot_runtime(settings),
        region=settings.locale.default_region,
        rules=load_rules(routing.rules_file),
        link_threshold=routing.link_threshold,
        suggest_threshold=routing.suggest_threshold,
        chat_idle_gap=timedelta(minutes=routing.chat_idle_minutes),
        default_language=settings.locale.default_language,
    )


def redis_client(settings: Settings) -> Any | None:
    """A Redis client when scale-out is configured, else ``None``."""
    if not settings.redis_url:
        return None
    from redis.asyncio import Redis

    return Redis.from_url(settings.redis_url)


def build_bus(settings: Settings, database: Database, redis: Any | None) -> Any:
    """Redis Streams in scale-out mode, the database table otherwise."""
    if redis is not None:
        from routing.redis_bus import RedisStreamBus

        return RedisStreamBus(redis, retry_policy(settings))
    return DatabaseBus(database, retry_policy(settings))


def build_events(redis: Any | None) -> EventBus:
    """In-process events, forwarded to Redis pub/sub in scale-out mode."""
    events = EventBus()
    if redis is not None:
        events.forwarders.append(RedisEventForwarder(redis))
    return events


def build_engine(settings: Settings, database: Database, redis: Any | None = None) -> RoutingEngine:
    """The routing engine on the configured bus (with the campaigns' ``[feedback]`` rules
    for the care steps, so separate workers classify feedback like ``serve`` does)."""
    from contact_center.scheduler import load_config
    from routing.steps.care import configure_care

    configure_care(load_config(settings).feedback)
    events = build_events(redis)
    return RoutingEngine(
        database,
        build_bus(settings, database, redis),
        routing_config(settings),
        events,
        batch_size=settings.routing.batch_size,
    )


def build_dispatcher(
    settings: Settings, database: Database, registry: ChannelRegistry | None = None,
    redis: Any | None = None, events: EventSink | None = None,
) -> OutboxDispatcher:
    """The outbox dispatcher over the configured channel adapters (its sent/failed events
    go to ``events``, the engine's bus, so consoles see a reply leave or fail)."""
    from contact_center.channel_setup import build_registry

    return OutboxDispatcher(
        database, registry or build_registry(settings, redis=redis), retry_policy(settings),
        events=events,
    )
