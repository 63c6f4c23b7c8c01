"""Benchmark: import a 100,000-row customer CSV into SQLite and into PostgreSQL.

The file (mixed Chinese and English names, valid unique +86 mobiles, unique e-mails,
~500 organizations, cities, tags, birthdays in several formats) is written streaming
into a temporary folder. Each import then runs in a subprocess of its own, so the
peak RSS it reports is that of the import alone. PostgreSQL gets a fresh database
``cc_bench_<random>`` that is dropped afterwards.

    python bench/import_customers.py              # 100,000 rows
    python bench/import_customers.py --rows 5000  # a quick run
    python bench/import_customers.py --profile    # cProfile of the SQLite import

Targets: ≥ 5,000 rows/s on each database, peak RSS ≤ 500 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import (
    PROJECT_ROOT,
    environment,
    peak_rss_mb,
    print_table,
    rate,
    timed,
    write_results,
)

if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

POSTGRES_ADMIN_URL = os.environ.get(
    "CC_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TARGET_ROWS_PER_S = 5000.0
TARGET_PEAK_RSS_MB = 500.0
HEADER = [
    "姓名", "手机", "邮箱", "公司", "城市", "省份", "标签", "生日", "等级", "分类", "性别", "备注",
]

FAMILY = [
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("黄", "huang"), ("赵", "zhao"), ("吴", "wu"), ("周", "zhou"), ("徐", "xu"), ("孙", "sun"),
    ("马", "ma"), ("朱", "zhu"), ("胡", "hu"), ("郭", "guo"), ("何", "he"), ("高", "gao"),
    ("林", "lin"), ("罗", "luo"), ("郑", "zheng"), ("梁", "liang"), ("谢", "xie"), ("宋", "song"),
    ("唐", "tang"), ("许", "xu"), ("韩", "han"), ("冯", "feng"), ("邓", "deng"), ("曹", "cao"),
    ("欧阳", "ouyang"), ("司马", "sima"), ("于", "yu"), ("董", "dong"), ("萧", "xiao"),
]
GIVEN = [
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("秀英", "xiuying"), ("敏", "min"),
    ("静", "jing"), ("丽", "li"), ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"),
    ("勇", "yong"), ("艳", "yan"), ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"),
    ("超", "chao"), ("秀兰", "xiulan"), ("霞", "xia"), ("平", "ping"), ("刚", "gang"),
    ("桂英", "guiying"), ("建华", "jianhua"), ("晓东", "xiaodong"), ("丹", "dan"), ("萍", "ping"),
    ("鑫", "xin"), ("浩然", "haoran"), ("子涵", "zihan"), ("欣怡", "xinyi"), ("梓萱", "zixuan"),
    ("宇轩", "yuxuan"), ("思远", "siyuan"), ("雨桐", "yutong"), ("嘉怡", "jiayi"),
]
FIRST = [
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Susan", "Richard", "Jessica", "Thomas", "Sarah", "Daniel", "Emma",
    "Oliver", "Sophie", "Lucas", "Chloe", "Henry", "Grace", "Jack", "Olivia", "Noah", "Amelia",
]
LAST = [
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Wilson",
    "Taylor", "Anderson", "Thomas", "Moore", "Martin", "Lee", "Walker", "Hall", "Young", "King",
    "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Roberts",
]
CITIES = [
    ("北京", "北京"), ("上海", "上海"), ("广州", "广东"), ("深圳", "广东"), ("杭州", "浙江"),
    ("南京", "江苏"), ("苏州", "江苏"), ("成都", "四川"), ("武汉", "湖北"), ("西安", "陕西"),
    ("重庆", "重庆"), ("天津", "天津"), ("长沙", "湖南"), ("郑州", "河南"), ("青岛", "山东"),
    ("厦门", "福建"), ("宁波", "浙江"), ("合肥", "安徽"), ("昆明", "云南"), ("沈阳", "辽宁"),
]
MOBILE_PREFIXES = [
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153",
    "155", "156", "158", "159", "173", "176", "177", "180", "181", "185", "186", "187", "188",
    "189", "191", "199",
]
TAGS = [
    "VIP", "新客户", "老客户", "重要", "wholesale", "retail", "回访", "投诉过", "潜在", "online",
]
DOMAINS = ["example.com", "example.cn", "mail.example.org", "corp.example.net"]
ORG_WORDS = ["华夏", "东方", "长城", "天虹", "恒信", "新元", "金桥", "远航", "瑞丰", "启明"]
ORG_KINDS = ["贸易", "科技", "物流", "餐饮", "建材", "医药", "电子", "文化", "咨询", "食品"]
ORG_EN = ["Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay"]
ORG_EN_KINDS = ["Trading Ltd", "Logistics Inc", "Foods Co", "Consulting", "Electronics Ltd"]
TIERS = [("standard", "Standard", "普通"), ("gold", "Gold", "金卡"), ("vip", "VIP", "贵宾")]
CATEGORIES = [("retail", "Retail", "零售"), ("wholesale", "Wholesale", "批发")]


def organizations(count: int = 500) -> list[str]:
    """A pool of distinct organization names, mostly Chinese."""
    names: list[str] = []
    for city, _ in CITIES:
        for word in ORG_WORDS:
            for kind in ORG_KINDS:
                names.append(f"{city}{word}{kind}有限公司")
    rng = random.Random(7)
    rng.shuffle(names)
    english = [f"{a} {b}" for a in ORG_EN for b in ORG_EN_KINDS]
    return names[: count - len(english)] + english


def _phone(i: int, rng: random.Random) -> str:
    prefix = MOBILE_PREFIXES[i % len(MOBILE_PREFIXES)]
    digits = f"{prefix}{i:08d}"
    style = rng.random()
    if style < 0.55:
        return digits
    if style < 0.75:
        return f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    if style < 0.9:
        return f"+86 {digits[:3]}-{digits[3:7]}-{digits[7:]}"
    return f"+86{digits}"


def _birthday(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return ""
    year, month, day = rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([
        f"{year}-{month:02d}-{day:02d}", f"{year}/{month}/{day}", f"{year}.{month:02d}.{day:02d}",
        f"{year}年{month}月{day}日",
    ])


def rows(count: int, seed: int = 42) -> Iterator[list[str]]:
    """``count`` realistic customer rows, generated lazily (unique phones and e-mails)."""
    rng = random.Random(seed)
    orgs = organizations()
    for i in range(count):
        if rng.random() < 0.7:
            family, family_py = rng.choice(FAMILY)
            given, given_py = rng.choice(GIVEN)
            name, latin = f"{family}{given}", f"{given_py}.{family_py}"
            sex = rng.choice(["男", "女"])
        else:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name, latin = f"{first} {last}", f"{first}.{last}".lower()
            sex = rng.choice(["M", "F", ""])
        phone = _phone(i, rng)
        if rng.random() < 0.1:
            phone += f"；010-{60000000 + i}"
        email = f"{latin}{i}@{rng.choice(DOMAINS)}"
        city, province = rng.choice(CITIES)
        tags = rng.sample(TAGS, rng.randint(0, 3))
        yield [
            name,
            phone,
            email,
            rng.choice(orgs) if rng.random() < 0.8 else "",
            city,
            province,
            rng.choice([";", "；", "、"]).join(tags),
            _birthday(rng),
            rng.choice(["", "", "standard", "gold", "vip", "金卡"]),
            rng.choice(["", "retail", "wholesale"]),
            sex,
            "老客户推荐" if rng.random() < 0.05 else "",
        ]


def write_csv(path: Path, count: int) -> None:
    """Write the benchmark file as UTF-8 with BOM, row by row."""
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows(count))


# --- databases ----------------------------------------------------------------------------------


async def _prepare(url: str) -> None:
    from sqlalchemy import insert

    from crm_core import schema
    from crm_core.db import Database
    from crm_core.models import CustomerCategory, CustomerTier

    database = Database(url)
    try:
        await schema.upgrade(database.engine)
        async with database.transaction() as session:
            await session.execute(
                insert(CustomerTier),
                [{"code": c, "name": n, "name_zh": z, "rank": r} for r, (c, n, z) in
                 enumerate(TIERS)],
            )
            await session.execute(
                insert(CustomerCategory),
                [{"code": c, "name": n, "name_zh": z} for c, n, z in CATEGORIES],
            )
    finally:
        await database.dispose()


async def _count_customers(url: str) -> int:
    from sqlalchemy import func, select

    from crm_core.db import Database
    from crm_core.models import Customer

    database = Database(url)
    try:
        async with database.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(Customer)) or 0)
    finally:
        await database.dispose()


async def _admin(statement: str) -> None:
    from sqlalchemy import text

    from crm_core.db import create_engine

    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        async with engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _postgres_url(name: str) -> str:
    from sqlalchemy.engine import make_url

    from crm_core.db import normalize_database_url

    url = make_url(normalize_database_url(POSTGRES_ADMIN_URL)).set(database=name)
    return url.render_as_string(hide_password=False)


# --- the measured import (child process) --------------------------------------------------------


async def _child_import(url: str, path: Path, batch_size: int, workers: int) -> dict[str, Any]:
    from crm_core.db import Database
    from crm_core.services.csv_import import import_customers

    database = Database(url)
    try:
        with timed() as clock:
            report = await import_customers(
                database, path, actor="bench", region="CN", batch_size=batch_size,
                workers=workers,
            )
    finally:
        await database.dispose()
    return {
        "seconds": clock["seconds"],
        "cpu_seconds": _cpu_seconds(),
        "peak_rss_mb": peak_rss_mb(),
        "worker_peak_rss_mb": peak_rss_mb(children=True) if workers else 0.0,
        "workers": workers,
        **report.counts(),
        "first_errors": [str(e) for e in report.errors[:5]],
    }


def _cpu_seconds() -> float:
    """User + system CPU of this process and its finished children (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child_main(args: argparse.Namespace) -> None:
    """Import one file into one database and print the measurements as JSON."""
    from crm_core.services.csv_import import default_workers

    if args.workers is None:
        args.workers = default_workers(Path(args.file).stat().st_size)
    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(
            asyncio.run,
            _child_import(args.url, Path(args.file), args.batch_size, args.workers),
        )
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(35)
        stats.sort_stats("tottime").print_stats(25)
    else:
        result = asyncio.run(
            _child_import(args.url, Path(args.file), args.batch_size, args.workers)
        )
    print(json.dumps(result))


def run_child(
    url: str, path: Path, batch_size: int, workers: int | None, *, profile: bool = False
) -> dict[str, Any]:
    """Run the import in a fresh interpreter and return what it measured."""
    command = [
        sys.executable, __file__, "--child", "--url", url, "--file", str(path),
        "--batch-size", str(batch_size),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"import failed for {url.split('@')[-1]}")
    if profile:
        sys.stderr.write(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark ------------------------------------------------------------------------------


def main() -> None:
    """Generate the file, import it into SQLite and PostgreSQL, report and save the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--workers", type=int, default=None,
        help="validation processes (default: chosen from the file size and CPUs)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the SQLite import")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    results: dict[str, Any] = {"rows": args.rows, "batch_size_rows": args.batch_size}
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        path = Path(tmp) / "customers.csv"
        with timed() as clock:
            write_csv(path, args.rows)
        results["file_mb"] = round(path.stat().st_size / 1024 / 1024, 1)
        results["generate_seconds"] = round(clock["seconds"], 2)

        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(_prepare(sqlite_url))
        sqlite = run_child(
            sqlite_url, path, args.batch_size, args.workers, profile=args.profile
        )
        _check(sqlite, args.rows, asyncio.run(_count_customers(sqlite_url)), "sqlite")
        results.update(_measurements("sqlite", sqlite, args.rows))

        if not args.skip_postgres:
            name = f"cc_bench_{uuid.uuid4().hex[:10]}"
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            try:
                url = _postgres_url(name)
                asyncio.run(_prepare(url))
                postgres = run_child(url, path, args.batch_size, args.workers)
                _check(postgres, args.rows, asyncio.run(_count_customers(url)), "postgres")
                results.update(_measurements("postgres", postgres, args.rows))
            finally:
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    peaks = [v for k, v in results.items() if k.endswith("_total_rss_mb")]
    results["peak_rss_mb"] = max(peaks)
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    results["cpus"] = os.cpu_count() or 0
    results["target_rows_per_s"] = TARGET_ROWS_PER_S
    results["target_peak_rss_mb"] = TARGET_PEAK_RSS_MB
    rates = [results[f"{label}_rows_per_s"] for label in ("sqlite", "postgres")
             if f"{label}_rows_per_s" in results]
    results["targets_met"] = (
        min(rates) >= TARGET_ROWS_PER_S and results["peak_rss_mb"] <= TARGET_PEAK_RSS_MB
    )
    results.update(environment())
    print_table(results, title=f"customer CSV import, {args.rows:,} rows")
    if results["load_average_1min"] > results["cpus"]:
        print(
            f"note: load average {results['load_average_1min']} on {results['cpus']} CPUs; "
            "other processes took CPU time from this run (see *_rows_per_cpu_s)"
        )
    print(f"written to {write_results('import_customers', results)}")


def _check(result: dict[str, Any], rows: int, stored: int, label: str) -> None:
    if result["imported"] != rows or stored != rows:
        raise SystemExit(
            f"{label}: expected {rows} customers, imported {result['imported']}, "
            f"stored {stored}; first errors: {result['first_errors']}"
        )


def _measurements(label: str, result: dict[str, Any], rows: int) -> dict[str, Any]:
    workers = int(result["workers"])
    return {
        f"{label}_seconds": round(result["seconds"], 2),
        f"{label}_rows_per_s": rate(rows, result["seconds"]),
        f"{label}_cpu_seconds": round(result["cpu_seconds"], 2),
        # throughput per CPU-second of the import and its workers: less sensitive to
        # other load on the machine than the wall-clock rate
        f"{label}_rows_per_cpu_s": rate(rows, result["cpu_seconds"]),
        f"{label}_workers": workers,
        f"{label}_peak_rss_mb": result["peak_rss_mb"],
        f"{label}_worker_peak_rss_mb": result["worker_peak_rss_mb"],
        # the import process and its validation workers live side by side
        f"{label}_total_rss_mb": round(
            result["peak_rss_mb"] + workers * result["worker_peak_rss_mb"], 1
        ),
    }


if __name__ == "__main__":
    main()
