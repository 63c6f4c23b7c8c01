"""The order of the routing steps, declared in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from routing.context import RoutingContext
from routing.steps.assign import assign
from routing.steps.bot import bot
from routing.steps.bounces import bounces
from routing.steps.care import care_complaints, care_replies
from routing.steps.dedupe import dedupe
from routing.steps.identify import identify
from routing.steps.log import log
from routing.steps.rules import rules
from routing.steps.thread import thread
from routing.steps.ticket import ticket

Step = Callable[[RoutingContext], Awaitable[None]]

DEFAULT_PIPELINE: tuple[tuple[str, Step], ...] = (
    ("dedupe", dedupe),
    ("identify", identify),
    ("care-replies", care_replies),
    ("thread", thread),
    ("log", log),
    ("bot", bot),
    ("bounces", bounces),
    ("ticket", ticket),
    ("care-complaints", care_complaints),
    ("assign", assign),
    ("rules", rules),
)
"""dedupe → identify → care-replies → thread → log → bot → bounces → ticket → care-complaints →
assign → rules; events after commit."""
