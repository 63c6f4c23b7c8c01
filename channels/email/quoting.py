"""Cut quoted earlier messages and signatures from a reply, in English and Chinese.

mail-parser-reply knows the reply headers of many mail programs and languages; what it
misses in mail our customers send is added here: the Chinese ``在 … 写道：`` and
``… 于 … 写道：`` lines, Foxmail/QQ ``原始邮件`` separators, the ``-- `` signature
delimiter, "sent from my phone" footers and a trailing block of ``>`` quotes. The full
text is always kept on the interaction; this only decides what the agent sees first.
"""

from __future__ import annotations

import re

from mailparser_reply import EmailReplyParser

_PARSER = EmailReplyParser(languages=["en", "zh", "de", "fr", "es", "ja"])

_CUT_LINES = re.compile(
    r"""^(?:
        [-_=\s]*(?:原始邮件|原始郵件|Original\ Message|Forwarded\ message|转发的邮件)[-_=\s]*
      | (?:在|On)\s.{4,200}(?:写道|寫道|wrote)\s*[:：]?
      | .{1,200}于\s?\d{4}\s?年.{0,80}(?:写道|寫道)\s*[:：]?
      | -{2}\s?
      | _{10,}
      | (?:Sent\ from\ my|Get\ Outlook\ for|从我的|發自我的|发自我的|来自我的).{0,60}
    )$""",
    re.VERBOSE | re.IGNORECASE,
)
_QUOTED = re.compile(r"^\s*>")


def _cut_at_markers(text: str) -> str:
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if index and _CUT_LINES.match(line.rstrip()):
            return "\n".join(lines[:index])
    return text


def _drop_trailing_quotes(text: str) -> str:
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end and (_QUOTED.match(lines[end - 1]) or not lines[end - 1].strip()):
        end -= 1
    return "\n".join(lines[:end]) if end else text


def strip_reply(text: str) -> str:
    """The new part of a reply: quoted history, reply headers and signature removed.

    Never returns an empty string for a non-empty text: a message that is all quote
    (a bare forward) keeps its full text.
    """
    if not text.strip():
        return ""
    try:
        reply = _PARSER.parse_reply(text=text)
    except Exception:  # a regex library failing on odd input must not lose the mail
        reply = text
    reply = _drop_trailing_quotes(_cut_at_markers(reply or text)).strip()
    return reply or text.strip()
