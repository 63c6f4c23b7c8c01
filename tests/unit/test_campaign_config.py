"""The campaigns file: the shipped example, precise errors, quiet hours, feedback rules,
survey answers and signed links."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from contact_center.campaign_links import BadToken, CampaignLinks, safe_target, sign, verify
from crm_core.models import Channel
from crm_core.services.campaign_config import (
    DEFAULT_CAMPAIGNS_PATH,
    CampaignConfigError,
    QuietHours,
    load_campaigns,
    parse_campaigns,
    render,
)
from crm_core.services.feedback import parse_button, parse_score_text

ROOT = Path(__file__).resolve().parents[2]


def parse(text: str) -> object:
    return parse_campaigns(tomllib.loads(text), source="campaigns.toml")


GOOD = """
[[campaigns]]
key = "hello"
name = "Hello"
trigger = { kind = "once", at = 2026-05-04T10:00:00 }
[campaigns.templates.default.zh-CN]
text = "您好 {{ customer.name }}"
"""


def test_the_shipped_example_loads_with_the_four_campaigns() -> None:
    config = load_campaigns(DEFAULT_CAMPAIGNS_PATH)
    assert [c.key for c in config.campaigns] == [
        "birthday-greeting", "contract-renewal", "complaint-check-in", "csat-after-resolution"]
    birthday, renewal, check_in, survey = config.campaigns
    assert (birthday.trigger.kind, birthday.purpose, birthday.trigger.send_time) == (
        "birthday", "marketing", time(10, 0))
    assert birthday.quiet_hours == QuietHours(time(21, 0), time(9, 0))
    assert (renewal.trigger.kind, renewal.trigger.days, renewal.trigger.attribute) == (
        "contract_end", 30, "contract_end")
    assert check_in.action == "task" and check_in.task is not None
    assert check_in.task.team == "投诉处理 Complaints" and check_in.trigger.categories == (
        "complaint",)
    assert survey.action == "survey" and survey.holdout_percent == 10
    assert survey.survey is not None and survey.survey.kind == "csat"
    assert config.defaults.frequency_cap is not None
    assert config.defaults.frequency_cap.max == 3


def test_templates_pick_channel_then_default_and_the_customers_language() -> None:
    config = load_campaigns(DEFAULT_CAMPAIGNS_PATH)
    survey = config.get("csat-after-resolution")
    assert survey is not None
    picked = survey.template(None, Channel.TELEGRAM, "en-GB", "zh-CN")
    assert picked is not None and picked.language == "en"
    picked = survey.template(None, Channel.EMAIL, "fr", "zh-CN")
    assert picked is not None and picked.language == "zh-CN" and picked.subject is not None
    birthday = config.get("birthday-greeting")
    assert birthday is not None
    chat = birthday.template(None, Channel.TELEGRAM, "zh", "zh-CN")
    assert chat is not None and chat.language == "zh-CN"
    text = render(chat.text, {"customer": {"greeting": "于先生"}, "opt_out_hint": "回复 TD 退订"})
    assert text.startswith("于先生，祝您生日快乐！") and text.endswith("回复 TD 退订")


@pytest.mark.parametrize(("text", "where", "message"), [
    (GOOD.replace('name = "Hello"', 'name = "Hello"\ncolour = "red"'),
     "campaigns[0] (hello).colour", "unknown key 'colour'"),
    (GOOD.replace('kind = "once"', 'kind = "sometimes"'),
     "campaigns[0] (hello).trigger.kind", "'sometimes' is not one of"),
    (GOOD.replace('{ kind = "once", at = 2026-05-04T10:00:00 }',
                  '{ kind = "cron", cron = "61 * * * *" }'),
     "campaigns[0] (hello).trigger.cron", "is not a cron expression"),
    (GOOD.replace('{ kind = "once", at = 2026-05-04T10:00:00 }',
                  '{ kind = "birthday", at = "25:00" }'),
     "campaigns[0] (hello).trigger.at", "is not a time of day"),
    (GOOD.replace('{ kind = "once", at = 2026-05-04T10:00:00 }',
                  '{ kind = "contract_end", days_before = -3 }'),
     "campaigns[0] (hello).trigger.days_before", "whole number from 0 to 3650"),
    (GOOD.replace("customer.name", "customer.nickname"),
     "campaigns[0] (hello).templates.default.zh-CN.text", "template error"),
    (GOOD.replace("customer.name }}", "customer.name }"),
     "campaigns[0] (hello).templates.default.zh-CN.text", "template error"),
    (GOOD.replace("customer.name", "ticket.number"),
     "campaigns[0] (hello).templates.default.zh-CN.text", "template error"),
    (GOOD.replace('name = "Hello"', 'name = "Hello"\naudience = { tier = "vip", shoe = 1 }'),
     "campaigns[0] (hello).audience.shoe", "Extra inputs"),
    (GOOD.replace('name = "Hello"', 'name = "Hello"\nchannels = ["fax"]'),
     "campaigns[0] (hello).channels[0]", "'fax' is not one of"),
    (GOOD.replace("default.zh-CN", "email.zh-CN"),
     "campaigns[0] (hello).templates", "no template for channel telegram"),
    (GOOD + GOOD, "campaigns[1] (hello).key", "used by another campaign"),
    (GOOD.replace('name = "Hello"', 'name = "Hello"\nholdout_percent = 95'),
     "campaigns[0] (hello).holdout_percent", "from 0 to 90"),
    (GOOD.replace('name = "Hello"', 'name = "Hello"\nquiet_hours = { start = "22:00" }'),
     "campaigns[0] (hello).quiet_hours.end", "missing"),
    (GOOD.replace('name = "Hello"', 'name = "Hello"\ntask = { kind = "call" }'),
     "campaigns[0] (hello).task", "only for action"),
    (GOOD.replace('key = "hello"', 'key = "Hello World"'),
     "campaigns[0] (Hello World).key", "lower-case letters"),
    ("[defaults]\ntimezone = \"Mars/Olympus\"\n", "defaults.timezone", "not a time zone"),
    ("[feedback.classes]\nanger = [\"grr\"]\n", "feedback.classes.anger", "unknown class"),
])
def test_mistakes_name_the_file_the_campaign_and_the_key(text: str, where: str,
                                                         message: str) -> None:
    with pytest.raises(CampaignConfigError) as caught:
        parse(text)
    error = caught.value
    assert error.source == "campaigns.toml"
    assert error.where == where, str(error)
    assert message in error.message, str(error)
    assert str(error).startswith(f"campaigns.toml: {where}: ")


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError, match="no such file"):
        load_campaigns(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[campaigns]\n", encoding="utf-8")
    with pytest.raises(CampaignConfigError, match="not valid TOML"):
        load_campaigns(broken)


def test_the_sandbox_refuses_python_internals() -> None:
    text = GOOD.replace("{{ customer.name }}", "{{ customer.__class__.__mro__ }}")
    with pytest.raises(CampaignConfigError, match="template error"):
        parse(text)


def test_quiet_hours_across_midnight_release_at_the_local_end() -> None:
    quiet = QuietHours(time(21, 30), time(8, 30))
    shanghai = ZoneInfo("Asia/Shanghai")
    assert quiet.contains(time(23, 0)) and quiet.contains(time(2, 0))
    assert not quiet.contains(time(8, 30)) and not quiet.contains(time(21, 29))
    late = datetime(2026, 5, 4, 15, 0, tzinfo=UTC)  # 23:00 in Shanghai
    assert quiet.release(late, shanghai) == datetime(2026, 5, 5, 0, 30, tzinfo=UTC)
    early = datetime(2026, 5, 4, 18, 0, tzinfo=UTC)  # 02:00 in Shanghai
    assert quiet.release(early, shanghai) == datetime(2026, 5, 5, 0, 30, tzinfo=UTC)
    assert quiet.release(datetime(2026, 5, 4, 4, 0, tzinfo=UTC), shanghai) is None
    day = QuietHours(time(12, 0), time(14, 0))
    assert day.contains(time(13, 0)) and not day.contains(time(14, 0))
    assert not QuietHours(time(9, 0), time(9, 0)).contains(time(9, 0))


@pytest.mark.parametrize(("text", "expected"), [
    ("客服态度太差了，我要投诉！", "complaint"),
    ("问题到现在还没解决，很失望", "complaint"),
    ("The agent was rude and my issue is still not resolved.", "complaint"),
    ("ＣＯＭＰＬＡＩＮＴ about the delivery", "complaint"),
    ("建议增加晚上的客服时间", "suggestion"),
    ("It would be nice if you could add WeChat Pay.", "suggestion"),
    ("非常感谢，客服很耐心很专业", "praise"),
    ("Thanks, great job!", "praise"),
    ("请问发票什么时候能开好", "question"),
    ("Why was I charged twice?", "question"),
    ("好的", None),
    ("shows up fine", None),  # "how" must start a word
])
def test_comments_are_classified_in_chinese_and_english(text: str,
                                                        expected: str | None) -> None:
    spec = load_campaigns(DEFAULT_CAMPAIGNS_PATH).feedback
    classification, hits = spec.classify(text)
    assert classification == expected
    assert bool(hits) == (expected is not None)


def test_opt_out_words_must_be_the_whole_message() -> None:
    spec = load_campaigns(DEFAULT_CAMPAIGNS_PATH).feedback
    for word in ("STOP", "stop", " 退订 ", "TD", "td", "退订。", "ＳＴＯＰ", "取消订阅"):
        assert spec.is_opt_out(word), word
    for text in ("please don't stop", "如何退订会员？", "", None, "TDD"):
        assert not spec.is_opt_out(text), text


def test_survey_answers_from_buttons_and_texts() -> None:
    assert parse_button("csat:5") == parse_button("csat:5")
    answer = parse_button("nps:9:123")
    assert answer is not None and (answer.kind, answer.score, answer.send_id) == ("nps", 9, 123)
    assert parse_button("csat:7") is None and parse_button("menu:1") is None
    assert parse_button("csat:5:x") is None
    for text, score in (("5", 5), ("５", 5), ("5分", 5), (" 4 ", 4), ("五", 5), ("3星", 3),
                        ("1.", 1)):
        assert parse_score_text(text, "csat") == score, text
    for text in ("6", "0", "5 stars but slow", "五分钟后再说", "", "12"):
        assert parse_score_text(text, "csat") is None, text
    assert parse_score_text("10", "nps") == 10 and parse_score_text("0", "nps") == 0


def test_signed_links_refuse_tampering_other_purposes_and_expiry() -> None:
    secret = b"s3cret"
    token = sign(secret, "unsubscribe", {"s": 1, "c": 2, "ch": "email"})
    assert verify(secret, "unsubscribe", token) == {"s": 1, "c": 2, "ch": "email"}
    body, mac = token.split(".")
    forged = sign(secret, "unsubscribe", {"s": 1, "c": 3, "ch": "email"}).split(".")[0]
    for bad in (f"{forged}.{mac}", f"{body}.{mac[:-1]}B", f"{body}.", "", "a.b.c",
                token + "=", sign(b"other", "unsubscribe", {"c": 2})):
        with pytest.raises(BadToken):
            verify(secret, "unsubscribe", bad)
    with pytest.raises(BadToken):
        verify(secret, "feedback", token)
    now = datetime(2026, 5, 4, tzinfo=UTC)
    links = CampaignLinks("https://cc.example/", secret)
    url = links.feedback_url(1, 2, "csat", now + timedelta(days=3))
    assert url.startswith("https://cc.example/feedback/")
    live = url.rsplit("/", 1)[1]
    assert verify(secret, "feedback", live, now=now)["k"] == "csat"
    with pytest.raises(BadToken) as caught:
        verify(secret, "feedback", live, now=now + timedelta(days=4))
    assert caught.value.expired
    assert safe_target("https://example.cn/x") and not safe_target("javascript:alert(1)")
    assert not safe_target("//evil.example/x") and not safe_target("/relative")


def test_the_default_settings_validate_the_campaigns_file() -> None:
    from contact_center.settings import CampaignSettings

    assert CampaignSettings().file == ROOT / "config" / "campaigns.toml"
    with pytest.raises(ValueError, match="no such file"):
        CampaignSettings(file=ROOT / "config" / "missing.toml")
