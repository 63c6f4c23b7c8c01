"""Records of scheduled reports that were sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base, utcnow


class ReportDelivery(Base):
    """A scheduled report that went out (``key`` like ``weekly:2026-W19``): sent once."""

    __tablename__ = "report_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(100), unique=True)
    recipients: Mapped[list[str]] = mapped_column(default=list)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
