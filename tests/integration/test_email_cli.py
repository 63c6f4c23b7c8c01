"""``contact-center email …``: archive import, mailbox fetch and the quarantine, end to end."""

from __future__ import annotations

import email.policy
import json
import mailbox
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from crm_core.models import Direction, Interaction, QuarantinedMessage, Ticket
from tests.conftest import Mailbox
from tests.integration.test_cli import db_url, invoke, migrated, with_database

__all__ = ["db_url"]  # a fixture shared with the CLI tests

pytestmark = pytest.mark.usefixtures("clean_settings_env")


def message(subject: str, sender: str, message_id: str, date: str, body: str) -> bytes:
    """A mail as CRLF bytes."""
    mail = EmailMessage(policy=email.policy.SMTP)
    mail["From"] = sender
    mail["To"] = "support@shop.example"
    mail["Subject"] = subject
    mail["Message-ID"] = message_id
    mail["Date"] = date
    mail.set_content(body)
    return mail.as_bytes()


def archive(root: Path) -> Path:
    """A folder with an .eml file, a Maildir and an mbox, one message repeated."""
    folder = root / "old-helpdesk"
    folder.mkdir()
    first = message("旧工单：退款", "王芳 <wang.fang@example.cn>", "<a1@old>",
                    "Mon, 03 Jun 2024 10:00:00 +0800", "请退款。")
    (folder / "one.eml").write_bytes(first)
    maildir = mailbox.Maildir(folder / "Maildir", create=True)
    maildir.add(first)  # the same mail again: must not become a second interaction
    maildir.add(message("Invoice", "Bob <bob@example.com>", "<a2@old>",
                        "Tue, 04 Jun 2024 09:00:00 +0000", "Where is my invoice?"))
    maildir.close()
    box = mailbox.mbox(folder / "archive.mbox", create=True)
    box.add(message("Delivery", "Carol <carol@example.com>", "<a3@old>",
                    "Wed, 05 Jun 2024 08:00:00 +0000", "Late delivery."))
    box.add(b"Subject: nobody sent this\r\n\r\nno sender\r\n")
    box.close()
    return folder


def count(db_url: str, model: Any, *where: Any) -> int:
    async def work(database: Any) -> int:
        async with database.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)))

    return with_database(db_url, work)


def test_import_reports_each_message_and_a_second_import_changes_nothing(
    db_url: str, tmp_path: Path
) -> None:
    """Eml, Maildir and mbox go through the pipeline; duplicates and bad mail are reported."""
    migrated(db_url)
    folder = archive(tmp_path)
    result = invoke(["email", "import", str(folder), "--json"], db_url)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 5
    statuses = sorted(line["status"] for line in lines)
    assert statuses == ["duplicate", "quarantined", "routed", "routed", "routed"]
    routed = [line for line in lines if line["status"] == "routed"]
    assert all(line["ticket"] and line["ticket"].startswith("T-") for line in routed)
    assert count(db_url, Interaction, Interaction.direction == Direction.INBOUND) == 3
    assert count(db_url, Ticket) == 3

    async def dates(database: Any) -> list[str]:
        async with database.sessions() as session:
            rows = await session.scalars(
                select(Interaction.occurred_at).where(Interaction.direction == Direction.INBOUND)
                .order_by(Interaction.occurred_at))
            return [value.date().isoformat() for value in rows]

    assert with_database(db_url, dates) == ["2024-06-03", "2024-06-04", "2024-06-05"]

    again = invoke(["email", "import", str(folder), "--json"], db_url)
    assert again.exit_code == 0, again.output
    statuses = sorted(json.loads(line)["status"] for line in again.stdout.splitlines())
    assert statuses == ["duplicate"] * 4 + ["quarantined"]
    assert count(db_url, Interaction, Interaction.direction == Direction.INBOUND) == 3
    assert count(db_url, QuarantinedMessage) == 1  # the same bytes are quarantined once


def test_quarantine_list_reprocess_and_discard(db_url: str, tmp_path: Path) -> None:
    """An admin sees quarantined mail, can retry it and can discard it."""
    migrated(db_url)
    bad = tmp_path / "bad.eml"
    bad.write_bytes(b"Subject: no sender\r\n\r\nhello\r\n")
    assert invoke(["email", "import", str(bad)], db_url).exit_code == 0
    listing = invoke(["email", "quarantine", "list"], db_url)
    assert listing.exit_code == 0, listing.output
    assert "no sender address" in listing.stdout and "import" in listing.stdout
    item_id = listing.stdout.split()[0]
    retried = invoke(["email", "quarantine", "reprocess", item_id], db_url)
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.startswith("quarantined")  # still unreadable, still kept
    assert invoke(["email", "quarantine", "discard", item_id], db_url).exit_code == 0
    assert invoke(["email", "quarantine", "list"], db_url).stdout.strip() == ""
    assert "discarded" in invoke(["email", "quarantine", "list", "--all"], db_url).stdout
    missing = invoke(["email", "quarantine", "discard", item_id], db_url)
    assert missing.exit_code != 0 and "no quarantined item" in missing.output


def test_fetch_once_reads_a_configured_mailbox(
    db_url: str, tmp_path: Path, mailbox: Mailbox
) -> None:
    """A mailbox from the TOML config, password from the environment, read once."""
    migrated(db_url)
    mailbox.deliver(message("你好", "张伟 <zhang.wei@example.cn>", "<f1@example.cn>",
                            "Thu, 03 Dec 2026 10:00:00 +0800", "请问营业时间？"))
    config = tmp_path / "cc.toml"
    config.write_text(
        "[[email.mailboxes]]\n"
        f'name = "support"\nhost = "{mailbox.host}"\nport = {mailbox.port}\n'
        f'security = "plain"\nusername = "{mailbox.user}"\npassword_env = "SUPPORT_IMAP_PW"\n',
        encoding="utf-8",
    )
    env = {"CC_CONFIG": str(config), "SUPPORT_IMAP_PW": mailbox.password}
    result = invoke(["email", "fetch", "--once"], db_url, **env)
    assert result.exit_code == 0, result.output
    assert "support: 1 message(s) read" in result.stdout
    assert invoke(["email", "fetch", "--once"], db_url, **env).stdout.strip() == (
        "support: 0 message(s) read"
    )
    missing_secret = invoke(["email", "fetch", "--once"], db_url, CC_CONFIG=str(config))
    assert missing_secret.exit_code != 0
    assert "SUPPORT_IMAP_PW is not set" in missing_secret.output
