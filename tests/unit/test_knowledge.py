"""Knowledge-base matching on the demo articles: precision, recall and the threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contact_center.demo_knowledge import ARTICLES
from routing.knowledge import (
    Article,
    KnowledgeBase,
    KnowledgeConfig,
    KnowledgeError,
    detect_language,
    parse_config,
    words,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "kb" / "questions.json"


def demo_base(config: KnowledgeConfig | None = None) -> tuple[KnowledgeBase, dict[int, str]]:
    articles = [
        Article(id=i, language=a["language"], title=a["title"], answer=a["answer"],
                questions=tuple(a["questions"].splitlines()),
                keywords=tuple(a["keywords"].split(",")))
        for i, a in enumerate(ARTICLES)
    ]
    return KnowledgeBase(articles, config), {i: a["key"] for i, a in enumerate(ARTICLES)}


def test_precision_and_recall_on_the_fixture() -> None:
    questions = json.loads(FIXTURE.read_text(encoding="utf-8"))["questions"]
    assert len(questions) >= 50
    assert {detect_language(q["q"]) for q in questions} == {"zh-CN", "en"}
    base, keys = demo_base()
    answered = correct = 0
    wrong: list[str] = []
    for item in questions:
        match = base.match(item["q"])
        if not match.confident:
            if item["expected"] is not None:
                wrong.append(f"missed {item['q']!r} ({match.score})")
            continue
        answered += 1
        assert match.article is not None
        if keys[match.article.id] == item["expected"]:
            correct += 1
        else:
            wrong.append(f"{item['q']!r} → {keys[match.article.id]} ({match.score})")
    in_scope = sum(1 for q in questions if q["expected"] is not None)
    precision = correct / answered
    recall = correct / in_scope
    print(f"\nknowledge base: {len(questions)} questions, threshold {base.threshold}: "
          f"precision {precision:.3f}, recall {recall:.3f}; misses: {wrong}")
    assert precision >= 0.9, wrong
    assert recall >= 0.85, wrong


def test_answers_in_the_language_of_the_question() -> None:
    base, keys = demo_base()
    zh = base.match("退款多久到账", "en")
    en = base.match("how long does a refund take", "zh-CN")
    assert zh.article is not None and zh.article.language == "zh-CN"
    assert en.article is not None and en.article.language == "en"
    assert keys[zh.article.id] == keys[en.article.id] == "refund"


def test_synonyms_and_segmentation() -> None:
    assert "退款" in words("我想退款")
    base, keys = demo_base()
    plain = base.match("退钱要几天")
    assert plain.confident and plain.article is not None and keys[plain.article.id] == "refund"
    without = demo_base(KnowledgeConfig(threshold=50, synonyms=()))[0].match("退钱要几天")
    assert without.score < plain.score


@pytest.mark.parametrize("question", ["今天天气怎么样", "tell me a joke", "你们招聘吗", "???"])
def test_low_confidence_is_not_answered(question: str) -> None:
    base, _ = demo_base()
    match = base.match(question)
    assert not match.confident
    assert match.score < base.threshold


def test_threshold_decides() -> None:
    strict, _ = demo_base(KnowledgeConfig(threshold=99.5, synonyms=KnowledgeConfig.default()
                                          .synonyms))
    assert not strict.match("退钱要几天").confident
    assert strict.match("退钱要几天").article is not None


def test_config_errors_name_the_problem() -> None:
    with pytest.raises(KnowledgeError, match="threshold"):
        parse_config({"threshold": 0})
    with pytest.raises(KnowledgeError, match=r"synonyms\[0\]"):
        parse_config({"synonyms": [["only"]]})
    with pytest.raises(KnowledgeError, match="unknown key"):
        parse_config({"treshold": 50})
