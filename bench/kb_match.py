"""Benchmark: knowledge-base matching speed, and precision/recall on the fixture.

- ``first_answer_ms``: indexing the 20 demo articles and answering one question in a
  fresh process, jieba's dictionary load included (it happens once);
- ``build_ms``: indexing ``--articles`` articles (the 20 demo articles, repeated with
  numbered titles to reach the count);
- ``questions_per_s`` / ``p99_ms``: matching the 72 fixture questions, repeated;
- ``precision_percent`` / ``recall_percent``: on the fixture against the 20 demo articles, at the
  shipped threshold.

Target: a bot answer must not wait on matching: p99 ≤ 20 ms with 500 articles (an inverted
index scores only the articles that share a word with the question).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from _common import PROJECT_ROOT, environment, print_table, rate, write_results

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def main() -> None:
    """Run the benchmark and write ``bench/results/kb_match.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--articles", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    from contact_center.demo_knowledge import ARTICLES
    from routing.knowledge import Article, KnowledgeBase

    def article(i: int, item: dict[str, str], suffix: str = "") -> Article:
        return Article(id=i, language=item["language"], title=item["title"] + suffix,
                       answer=item["answer"], questions=tuple(item["questions"].splitlines()),
                       keywords=tuple(item["keywords"].split(",")))

    demo = [article(i, a) for i, a in enumerate(ARTICLES)]
    questions = json.loads((PROJECT_ROOT / "tests" / "fixtures" / "kb" / "questions.json")
                           .read_text(encoding="utf-8"))["questions"]
    started = time.perf_counter()
    base = KnowledgeBase(demo)  # the first Chinese words load jieba's dictionary
    base.match(questions[0]["q"])
    first_ms = (time.perf_counter() - started) * 1000

    keys = {i: a["key"] for i, a in enumerate(ARTICLES)}
    answered = correct = 0
    for item in questions:
        match = base.match(item["q"])
        if match.confident and match.article is not None:
            answered += 1
            correct += keys[match.article.id] == item["expected"]
    in_scope = sum(1 for q in questions if q["expected"])

    many = [article(i, ARTICLES[i % len(ARTICLES)], f" {i}") for i in range(args.articles)]
    started = time.perf_counter()
    big = KnowledgeBase(many)
    build_ms = (time.perf_counter() - started) * 1000
    times: list[float] = []
    for _ in range(args.rounds):
        for item in questions:
            started = time.perf_counter()
            big.match(item["q"])
            times.append((time.perf_counter() - started) * 1000)
    total = sum(times) / 1000
    results = {
        "articles": args.articles,
        "first_answer_ms": round(first_ms, 1),
        "build_ms": round(build_ms, 1),
        "questions_per_s": rate(len(times), total),
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(statistics.quantiles(times, n=100)[98], 2),
        "precision_percent": round(100 * correct / answered, 1) if answered else 0.0,
        "recall_percent": round(100 * correct / in_scope, 1),
        "threshold": base.threshold,
        **environment(),
    }
    print_table(results, title="knowledge-base matching")
    print(f"wrote {write_results('kb_match', results)}")


if __name__ == "__main__":
    main()
