"""How the agent's screens show values: times in the business time zone, sizes, durations,
and the translated labels of the domain's closed vocabularies (status, priority …)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from contact_center.web.i18n import translator
from crm_core.models import utcnow


def _labels(_: Callable[..., str]) -> dict[str, dict[str, str]]:
    return {
        "status": {"new": _("New"), "open": _("Open"), "pending": _("Pending"),
                   "resolved": _("Resolved"), "closed": _("Closed")},
        "priority": {"low": _("Low"), "normal": _("Normal"), "high": _("High"),
                     "urgent": _("Urgent")},
        "category": {"inquiry": _("Inquiry"), "complaint": _("Complaint"),
                     "suggestion": _("Suggestion"), "fault": _("Fault"),
                     "other": _("Other (category)")},
        "channel": {"email": _("E-mail"), "telegram": _("Telegram"), "webchat": _("Web chat"),
                    "phone": _("Phone"), "internal": _("Internal")},
        "view": {"mine": _("Mine"), "unassigned": _("Unassigned"), "teams": _("My teams"),
                 "all": _("All")},
        "lifecycle": {"lead": _("Lead"), "prospect": _("Prospect"), "active": _("Active"),
                      "dormant": _("Dormant"), "churned": _("Churned")},
        "identity": {"email": _("E-mail"), "phone": _("Phone"), "telegram": _("Telegram"),
                     "webchat": _("Web chat"), "external": _("External id")},
        "outbox": {"pending": _("Queued"), "sending": _("Sending"), "sent": _("Sent"),
                   "failed": _("Failed")},
        "match_reason": {
            "name": _("Name"), "phone": _("Phone"), "email": _("E-mail"),
            "birthday": _("Birthday"), "city": _("City"), "address": _("Address"),
            "shared_handles": _("Shared contact details"),
        },
        "duplicate_source": {"routing": _("Routing (a new contact)"),
                             "scan": _("Duplicate scan")},
        # the audit log's words (codes stay as they are stored; unknown ones show raw)
        "audit_action": {
            "create": _("created"), "update": _("changed"), "delete": _("deleted"),
            "restore": _("restored"), "merge": _("merged"), "merged_into": _("merged into"),
            "erase": _("erased"), "export": _("exported"), "import": _("imported"),
            "login": _("signed in"), "lock": _("locked out"), "password": _("password set"),
            "reset_link": _("set-up link issued"), "reply": _("replied"),
            "snooze": _("snoozed"), "unsnooze": _("woken"), "cancel": _("cancelled"),
            "complete": _("completed"), "move": _("moved"), "payment": _("payment"),
            "reclassify": _("reclassified"), "lifecycle": _("lifecycle changed"),
            "opt_out": _("opted out"), "enable": _("enabled"), "disable": _("disabled"),
            "revoke": _("revoked"), "trigger": _("triggered"),
            "dismiss_duplicate": _("not the same person"), "load_demo": _("demo loaded"),
        },
        "record_type": {
            "customer": _("Customer"), "agent": _("Agent"), "team": _("Team"),
            "ticket": _("Ticket"), "conversation": _("Conversation"),
            "organization": _("Organization"), "opportunity": _("Deal"),
            "order": _("Order"), "contract": _("Contract"), "campaign": _("Campaign"),
            "care_task": _("Care task"), "segment": _("Segment"),
            "canned_response": _("Canned response"), "kb_article": _("Knowledge article"),
            "bot_flows": _("Bot flows"), "api_token": _("API token"),
            "webhook": _("Webhook"), "customer_import": _("Customer import"),
            "demo": _("Demo data"),
        },
    }


class Display:
    """Formatting helpers handed to the templates as ``show``."""

    def __init__(self, language: str, timezone: str) -> None:
        self.language = language
        self.zone = ZoneInfo(timezone)
        self._labels = _labels(translator(language))

    def label(self, kind: str, value: object) -> str:
        """The translated label of an enum value (the raw value when unknown)."""
        raw = getattr(value, "value", value)
        return self._labels.get(kind, {}).get(str(raw), str(raw)) if raw is not None else ""

    def choices(self, kind: str) -> list[tuple[str, str]]:
        """``(value, label)`` pairs of one vocabulary, in their natural order."""
        return list(self._labels.get(kind, {}).items())

    def when(self, moment: datetime | None) -> str:
        """``2026-12-05 14:03`` in the business time zone ('' for none)."""
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime("%Y-%m-%d %H:%M")

    def iso(self, moment: datetime | None) -> str:
        """The ISO form, for ``<time datetime>``."""
        return moment.isoformat() if moment else ""

    def input_value(self, moment: datetime | None) -> str:
        """A ``datetime-local`` input value in the business time zone."""
        if moment is None:
            return ""
        return moment.astimezone(self.zone).strftime("%Y-%m-%dT%H:%M")

    def overdue(self, moment: datetime | None) -> bool:
        """Whether ``moment`` has passed."""
        return moment is not None and moment < utcnow()

    @staticmethod
    def duration(seconds: int | None) -> str:
        """``1:05:09`` or ``4:09`` ('' for none)."""
        if seconds is None:
            return ""
        hours, rest = divmod(int(seconds), 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

    @staticmethod
    def size(count: int | None) -> str:
        """``812 B``, ``3.4 KB``, ``1.2 MB``."""
        value = float(count or 0)
        for unit in ("B", "KB", "MB"):
            if value < 1024 or unit == "MB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        return f"{value:.1f} MB"
