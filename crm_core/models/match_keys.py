"""The fuzzy identity matcher's index (see ``crm_core.identity``).

Each active customer has a handful of short *blocking keys* (name in pinyin, surname
plus one given-name character, halves of the romanized name, birthday, phone suffix,
e-mail local part) and one compact *match profile* (the name as compared, birthday,
city, street). Two records that might be one person share at least one key, so the matcher
only compares a customer with the few others that share one, however many customers
there are, and scores them from their profiles without touching the wide customers
table. Both live in the database, not in a process, so every web and worker process
sees the same index.

Deliberately no foreign keys to ``customers``: this is a derived index, rewritten by
``crm_core.identity`` whenever a customer changes (and empty for deleted, merged-away
and erased ones); a foreign key would make ``merge_customers`` move the rows to the
survivor like personal records. ``rebuild_match_keys`` drops rows of customers that
no longer exist.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import Date, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.models.base import Base

MATCH_KEY_LENGTH = 64


class CustomerMatchKey(Base):
    """One blocking key of one active customer; ``(key, customer_id)`` is the lookup order."""

    __tablename__ = "customer_match_keys"
    __table_args__ = (
        Index("ix_customer_match_keys_customer_id", "customer_id"),
        {"sqlite_with_rowid": False},
    )

    key: Mapped[str] = mapped_column(String(MATCH_KEY_LENGTH), primary_key=True)
    """``namespace:value``, e.g. ``n:weiming zhang``, ``c:张伟``, ``b:19900102``, ``p:0138000``."""
    customer_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)


class CustomerMatchProfile(Base):
    """What the matcher compares of one active customer, in the form it compares it."""

    __tablename__ = "customer_match_profiles"
    __table_args__ = ({"sqlite_with_rowid": False},)

    customer_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    name_chars: Mapped[str] = mapped_column(String(200), default="")
    """Folded letters and characters of the name, no spaces (``张伟明``, ``jonathansmith``)."""
    name_roman: Mapped[str] = mapped_column(String(200), default="")
    """The name romanized (pinyin), words sorted (``weiming zhang``)."""
    birthday: Mapped[date | None] = mapped_column(Date)
    city: Mapped[str | None] = mapped_column(String(100))
    """The city folded and romanized (``北京市`` → ``beijing``)."""
    street: Mapped[str | None] = mapped_column(String(100))
    """The street address folded to letters, digits and characters."""
