"""Display names of report tables, columns, metrics and values, in the agent's language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def labels(gettext: Callable[..., str]) -> Callable[[str], str]:
    """``label(key)``: the translated name of a report key, or the key itself (customer
    names, months, stage codes … pass through)."""
    _ = gettext
    words: dict[str, str] = {
        # reports
        "dashboard": _("Dashboard"), "agents": _("Agent performance"), "sales": _("Sales"),
        "forecast": _("Revenue forecast"), "composition": _("Customer composition"),
        "rfm": _("RFM segments"), "satisfaction": _("Satisfaction trend"),
        "churn": _("Churn"), "ranking": _("Customer value"), "channels": _("Channel mix"),
        # tables
        "summary": _("Summary"), "volume": _("Today's volume by channel"),
        "pipeline": _("Pipeline by stage"), "monthly": _("By month"),
        "category": _("Category"), "industry": _("Industry"), "region": _("Region"),
        "tier": _("Tier"), "level": _("Member level"), "segments": _("Segments"),
        "trend": _("CSAT by month"), "reasons": _("Churn reasons"), "cohorts": _("Cohorts"),
        "top": _("Top customers"), "rising": _("Rising customers"),
        # columns
        "metric": _("Metric"), "value": _("Value"), "channel": _("Channel"),
        "inbound": _("Inbound"), "outbound": _("Outbound"), "share": _("Share"),
        "agent_id": _("Agent ID"), "agent": _("Agent"), "conversations": _("Conversations"),
        "replies": _("Replies"), "first_response_p50_min": _("First response p50 (min)"),
        "first_response_p90_min": _("First response p90 (min)"),
        "resolution_p50_min": _("Resolution p50 (min)"),
        "resolution_p90_min": _("Resolution p90 (min)"), "resolved": _("Resolved"),
        "csat_average": _("CSAT average"), "csat_responses": _("CSAT responses"),
        "care_tasks_done": _("Care tasks done"), "follow_ups": _("Follow-ups"),
        "revenue": _("Revenue"), "customers": _("Customers"), "segment": _("Segment"),
        "month": _("Month"), "responses": _("Responses"), "satisfied": _("Satisfied"),
        "customers_at_start": _("Customers at start"), "new_customers": _("New customers"),
        "churned": _("Churned"), "churn_rate": _("Churn rate"), "reason": _("Reason"),
        "cohort": _("Cohort"), "customer_id": _("Customer ID"), "customer": _("Customer"),
        "lifetime_value": _("Lifetime value"), "previous": _("Previous period"),
        "growth": _("Growth"), "stage": _("Stage"), "deals": _("Deals"), "amount": _("Amount"),
        "weighted": _("Weighted"), "orders": _("Orders"), "source": _("Source"),
        "count": _("Count"), "expected": _("Expected"),
        # metrics
        "inbound_total": _("Inbound volume"), "open_tickets": _("Open tickets"),
        "overdue_tickets": _("Overdue tickets"), "sla_first_response": _("SLA: first response"),
        "sla_resolution": _("SLA: resolution"), "sla_attainment": _("SLA attainment"),
        "csat_satisfied": _("CSAT satisfied"), "agents_online": _("Agents online"),
        "agents_active": _("Active agents"), "payments": _("Payments"),
        "receivables": _("Receivables"), "receivables_overdue": _("Receivables overdue"),
        "deals_won": _("Deals won"), "deals_lost": _("Deals lost"), "win_rate": _("Win rate"),
        "pipeline_expected": _("Pipeline expected"), "renewal_rate": _("Renewal rate"),
        "renewals_expected": _("Renewals expected"), "total_expected": _("Total expected"),
        "renewals": _("Renewals"),
        # values
        "champions": _("Champions"), "loyal": _("Loyal"), "new": _("New"),
        "need_attention": _("Need attention"), "at_risk": _("At risk"),
        "hibernating": _("Hibernating"), "(none)": _("(none)"),
        "email": _("E-mail"), "telegram": _("Telegram"), "webchat": _("Web chat"),
        "phone": _("Phone"), "internal": _("Internal"),
    }

    def label(key: Any) -> str:
        text = str(key)
        if text.startswith("stage:"):
            return _("Stage {stage}", stage=text[6:])
        return words.get(text, text)

    return label
