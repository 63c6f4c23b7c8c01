"""Import mail archives — ``.eml`` files, Maildir folders, mbox files — through intake.

For teams moving from another system: every message takes the same path as live mail
(blob store, parser, bus or quarantine), keeps its own date, and is reported one by one.
Re-importing the same archive changes nothing: the idempotency keys are Message-IDs.
"""

from __future__ import annotations

import mailbox
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from channels.email.inbound import IntakeResult, MailIntake, MailSource

_MBOX_START = b"From "


@dataclass(frozen=True)
class ImportItem:
    """One message found in an archive, with where it came from."""

    ref: str
    raw: bytes


@dataclass(frozen=True)
class ImportReport:
    """What became of one imported message."""

    ref: str
    result: IntakeResult


def _is_maildir(path: Path) -> bool:
    return all((path / sub).is_dir() for sub in ("cur", "new", "tmp"))


def _is_mbox(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(_MBOX_START)) == _MBOX_START
    except OSError:
        return False


def _maildir_items(path: Path) -> Iterator[ImportItem]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys()):
        yield ImportItem(f"{path}#{key}", box.get_bytes(key))
    for folder in sorted(box.list_folders()):
        yield from _maildir_items(path / f".{folder}")


def _mbox_items(path: Path) -> Iterator[ImportItem]:
    box = mailbox.mbox(path, factory=None, create=False)
    try:
        for index, key in enumerate(box.keys(), start=1):
            yield ImportItem(f"{path}#{index}", box.get_bytes(key))
    finally:
        box.close()


def iter_archive(path: Path) -> Iterator[ImportItem]:
    """Every message under ``path``: a file (.eml or mbox), a Maildir, or a directory of them."""
    if path.is_file():
        if _is_mbox(path):
            yield from _mbox_items(path)
        else:
            yield ImportItem(str(path), path.read_bytes())
        return
    if not path.is_dir():
        raise FileNotFoundError(f"no such file or directory: {path}")
    if _is_maildir(path):
        yield from _maildir_items(path)
        return
    for child in sorted(path.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() or child.suffix.lower() in {".eml", ".mbox", ".mbx", ""}:
            yield from iter_archive(child)


async def import_archive(
    path: Path, intake: MailIntake, *, mailbox_name: str | None = None, team: str | None = None
) -> list[ImportReport]:
    """Feed every message under ``path`` to ``intake``; one report per message."""
    reports = []
    for item in iter_archive(path):
        result = await intake.ingest(item.raw, MailSource(
            source="import", source_ref=item.ref[-500:], mailbox=mailbox_name, team=team,
            use_date_header=True, extra={"imported_from": item.ref[-300:]},
        ))
        reports.append(ImportReport(item.ref, result))
    return reports
