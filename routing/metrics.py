"""Prometheus metrics of the message flow, one registry per process.

Counters and the latency histogram are updated where the work happens (the routing
engine, the outbox dispatcher, the webhooks); the gauges (bus depth, outbox pending)
are sampled from the bus and the database when ``/metrics`` is scraped. Each process —
every ``serve``, ``worker`` and ``scheduler`` — serves its own numbers; Prometheus adds
them up across the targets it scrapes.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_PUBLISHED = Counter(
    "cc_messages_published_total",
    "Inbound messages handed to the bus by this process (channel adapters, webhooks).",
    ["channel"],
)
MESSAGES_IN = Counter(
    "cc_messages_in_total",
    "Inbound messages the routing engine of this process finished, by outcome "
    "(routed, duplicate, retry, dead, lost).",
    ["channel", "outcome"],
)
MESSAGES_OUT = Counter(
    "cc_messages_out_total",
    "Outbox sends tried by this process, by result (sent, retry, failed).",
    ["channel", "result"],
)
PROCESSING_SECONDS = Histogram(
    "cc_routing_processing_seconds",
    "Time the routing pipeline took over one inbound message.",
    ["channel"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ERRORS = Counter(
    "cc_errors_total",
    "Errors by component (routing, outbox, intake, webhook, scheduler).",
    ["component"],
)
WEBHOOK_FAILURES = Counter(
    "cc_webhook_failures_total",
    "Webhook requests answered with an error status or an exception, by webhook.",
    ["webhook", "status"],
)
BUS_PENDING = Gauge(
    "cc_bus_pending",
    "Entries of a bus topic not yet acknowledged (waiting and in flight), sampled at scrape.",
    ["topic"],
)
OUTBOX_PENDING = Gauge(
    "cc_outbox_pending",
    "Outbox messages waiting to be sent or being sent, sampled at scrape.",
)
