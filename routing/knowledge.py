"""Knowledge-base matching: a customer's free-text question → the best article, or none.

Questions and articles are cut into words — Chinese with jieba (the ``rjieba`` binding of
jieba-rs: its dictionary is compiled into the package, loaded on the first cut and then
kept; nothing is downloaded or written) and Latin text on word boundaries — folded
(full-width, case), stripped of filler words, and mapped to one word per synonym group
(``退钱`` and ``退款`` are the same word; so are "refund" and "money back"). Each
article is compared with its title and every sample question it lists: the share of
words in common (typos forgiven by rapidfuzz) blended with rapidfuzz's token-sort
ratio, plus a bonus for each of the article's keywords in the question. The best score
(0–100) wins when it reaches the threshold; below it the bot offers an agent.

Synonyms and the threshold come from ``config/knowledge.toml``.
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[1] / "config" / "knowledge.toml"
"""Synonyms and threshold shipped with the code."""

DEFAULT_THRESHOLD = 50.0
"""Score (0–100) a match needs to be answered without an agent."""

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_WORD = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[a-z0-9]+(?:'[a-z]+)?")
_STOP_EN_WORDS = (
    "a an the i me my we our you your it its is are was be been am do does did can could "
    "would should will shall to of in on at for from with by about how what when where why "
    "which who please hi hello hey there this that these those and or but if so any some have "
    "has had get got there's i'm i've want wanna need like know tell much many"
)
_STOP_EN = frozenset(_STOP_EN_WORDS.split())
_STOP_ZH_WORDS = (
    "我 我们 你 你们 您 的 了 吗 呢 吧 啊 呀 是 在 有 要 想 请问 请 一下 "
    "怎么 怎样 如何 什么 可以 能 能不能 可不可以 还 就 都 和 与 么 嘛 个 这 "
    "那 哪 哪里 多少 多久 时候 你好 您好 麻烦 问 问下 问一下 谢谢"
)
_STOP_ZH = frozenset(_STOP_ZH_WORDS.split())
_KEYWORD_BONUS = 12.0
_FUZZY_WORD = 85.0


class KnowledgeError(ValueError):
    """``config/knowledge.toml`` cannot be used; the message says where."""


@dataclass(frozen=True)
class Article:
    """One article as the matcher sees it."""

    id: int
    language: str
    title: str
    answer: str
    questions: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Match:
    """The best article for a question and how sure the matcher is (0–100)."""

    article: Article | None
    score: float
    confident: bool


@dataclass(frozen=True)
class KnowledgeConfig:
    """Synonym groups (the first word of a group stands for all) and the threshold."""

    threshold: float = DEFAULT_THRESHOLD
    synonyms: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def default(cls) -> KnowledgeConfig:
        """The shipped ``config/knowledge.toml`` (read once)."""
        return _default_config()


@functools.cache
def _default_config() -> KnowledgeConfig:
    return load_config(DEFAULT_CONFIG_PATH)


def load_config(path: Path) -> KnowledgeConfig:
    """Read and check a knowledge config file; raise :class:`KnowledgeError` when unfit."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KnowledgeError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise KnowledgeError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Mapping[str, Any], *, source: str = "<knowledge>") -> KnowledgeConfig:
    """A :class:`KnowledgeConfig` from parsed TOML (``threshold``, ``synonyms``)."""
    unknown = set(data) - {"threshold", "synonyms"}
    if unknown:
        raise KnowledgeError(f"{source}: unknown key {sorted(unknown)[0]!r}; known: "
                             "threshold, synonyms")
    threshold = data.get("threshold", DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not (
        0 < threshold <= 100
    ):
        raise KnowledgeError(f"{source}: threshold: must be a number above 0 and at most 100")
    groups = data.get("synonyms", [])
    if not isinstance(groups, list):
        raise KnowledgeError(f"{source}: synonyms: must be a list of lists of words")
    result: list[tuple[str, ...]] = []
    for i, group in enumerate(groups):
        if not isinstance(group, list) or len(group) < 2 or not all(
            isinstance(w, str) and w.strip() for w in group
        ):
            raise KnowledgeError(f"{source}: synonyms[{i}]: must list two or more words")
        result.append(tuple(w.strip() for w in group))
    return KnowledgeConfig(threshold=float(threshold), synonyms=tuple(result))


def detect_language(text: str) -> str:
    """``zh-CN`` when the text has Chinese characters, else ``en``."""
    return "zh-CN" if _CJK.search(text or "") else "en"


def fold(text: str) -> str:
    """Full-width folded, lower-cased text with single spaces (for storing and grouping)."""
    return " ".join(unicodedata.normalize("NFKC", text or "").casefold().split())


@functools.cache
def _segmenter() -> Any:
    """The jieba segmenter, imported on first use (its dictionary loads on the first cut)."""
    import rjieba

    return rjieba


def words(text: str) -> list[str]:
    """The words of ``text``: Chinese cut by jieba, Latin split, both folded."""
    result: list[str] = []
    for chunk in _WORD.findall(fold(text)):
        if _CJK.match(chunk):
            result.extend(w for w in _segmenter().cut(chunk, hmm=True) if w.strip())
        else:
            result.append(chunk)
    return result


class _Vocabulary:
    """Maps words (and multi-word phrases) to their synonym group's first word."""

    def __init__(self, groups: Iterable[Sequence[str]]) -> None:
        self.single: dict[str, str] = {}
        self.phrases: list[tuple[tuple[str, ...], str]] = []
        for group in groups:
            head = "_".join(words(group[0])) or fold(group[0])
            for word in group:
                parts = tuple(words(word))
                if len(parts) == 1:
                    self.single[parts[0]] = head
                elif parts:
                    self.phrases.append((parts, head))
        self.phrases.sort(key=lambda p: -len(p[0]))

    def terms(self, text: str) -> list[str]:
        """Canonical content words of ``text`` (stop words dropped, synonyms merged)."""
        raw = words(text)
        out: list[str] = []
        i = 0
        while i < len(raw):
            for parts, head in self.phrases:
                if tuple(raw[i : i + len(parts)]) == parts:
                    out.append(head)
                    i += len(parts)
                    break
            else:
                word = raw[i]
                i += 1
                if word in _STOP_EN or word in _STOP_ZH:
                    continue
                out.append(self.single.get(word, _stem(word)))
        return out


def _stem(word: str) -> str:
    """A crude English plural/verb-ending fold ("refunds" → "refund", "shipping" → "ship")."""
    if not word.isascii() or len(word) <= 4:
        return word
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


@dataclass
class _Entry:
    article: Article
    samples: list[tuple[frozenset[str], str]] = field(default_factory=list)
    keywords: frozenset[str] = frozenset()


class KnowledgeBase:
    """Articles ready for matching; build once per change of the articles."""

    def __init__(self, articles: Iterable[Article], config: KnowledgeConfig | None = None) -> None:
        self.config = config or KnowledgeConfig.default()
        self.vocabulary = _Vocabulary(self.config.synonyms)
        self.entries: dict[str, list[_Entry]] = {}
        # word → the entries that use it, per language: only those are scored
        self.index: dict[str, dict[str, set[int]]] = {}
        for article in articles:
            entry = _Entry(article)
            for sample in (article.title, *article.questions):
                terms = self.vocabulary.terms(sample)
                if terms:
                    entry.samples.append((frozenset(terms), " ".join(sorted(terms))))
            entry.keywords = frozenset(
                t for k in article.keywords for t in [" ".join(self.vocabulary.terms(k))] if t
            )
            entries = self.entries.setdefault(article.language, [])
            index = self.index.setdefault(article.language, {})
            for terms, _ in entry.samples:
                for term in terms:
                    index.setdefault(term, set()).add(len(entries))
            for keyword in entry.keywords:
                for term in keyword.split():
                    index.setdefault(term, set()).add(len(entries))
            entries.append(entry)
        self.latin: dict[str, list[str]] = {
            language: [t for t in index if t.isascii() and len(t) > 3]
            for language, index in self.index.items()
        }

    @property
    def threshold(self) -> float:
        """The score a match needs."""
        return self.config.threshold

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())

    def match(self, question: str, language: str | None = None) -> Match:
        """The best article for ``question`` in ``language`` (detected when None).

        ``confident`` is whether the score reaches the threshold; an article is returned
        either way (for the console's "nearly answered" view) unless nothing matched at all.
        """
        language = language or detect_language(question)
        if detect_language(question) != language and detect_language(question) in self.entries:
            language = detect_language(question)  # a question in the other language
        terms = self.vocabulary.terms(question)
        if not terms:
            return Match(None, 0.0, False)
        query = frozenset(terms)
        joined = " ".join(sorted(terms))
        index = self.index.get(language, {})
        entries = self.entries.get(language, [])
        # typos: each longer Latin word also stands for the known words close to it
        near = {
            term: frozenset(m for m, _, _ in process.extract(
                term, self.latin.get(language, []), scorer=fuzz.ratio,
                score_cutoff=_FUZZY_WORD, limit=None) if m != term)
            for term in query if term.isascii() and len(term) > 3
        }
        candidates: set[int] = set()
        for term in query:
            candidates |= index.get(term, set())
            for other in near.get(term, ()):
                candidates |= index.get(other, set())
        best: tuple[float, Article | None] = (0.0, None)
        for position in sorted(candidates):
            entry = entries[position]
            score = max((self._score(query, joined, s, j, near) for s, j in entry.samples),
                        default=0.0)
            hits = sum(1 for k in entry.keywords if k in joined or k in query)
            score = min(100.0, score + _KEYWORD_BONUS * hits)
            if score > best[0]:
                best = (score, entry.article)
        score, article = best
        return Match(article, round(score, 1), article is not None and score >= self.threshold)

    @staticmethod
    def _score(query: frozenset[str], joined: str, sample: frozenset[str], sjoined: str,
               near: Mapping[str, frozenset[str]]) -> float:
        common = 0.0
        for term in query:
            if term in sample:
                common += 1
            elif not near.get(term, frozenset()).isdisjoint(sample):
                common += 0.8
        dice = 2 * common / (len(query) + len(sample))
        coverage = common / len(query)
        return 100 * (0.45 * dice + 0.3 * coverage) + 0.25 * fuzz.token_sort_ratio(joined, sjoined)
