"""The bilingual (简体中文 + English) demo data set behind ``contact-center demo``.

``build_dataset`` is pure: from a seed and a moment it describes teams, agents,
customer categories and tiers, organizations, about 200 customers and a few
dozen conversations with their interactions and tickets. The same seed and the
same ``now`` give the same data set, byte for byte.

``load_demo`` writes that description into a database in one transaction, through
the domain services where there is one (agents, teams, organizations, customers:
validated, de-duplicated, audited) and with the models directly where the services
do not exist yet (categories, tiers, conversations, interactions, tickets). It
refuses to touch a database that already holds customers unless ``force`` is given;
forced, it reuses what exists (teams, agents, organizations by name or login) and
skips demo customers whose e-mail or phone already belongs to someone.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from contact_center.demo_sales import write_sales_demo
from crm_core.db import Database
from crm_core.errors import ConflictError
from crm_core.models import (
    Agent,
    AgentRole,
    Availability,
    BotSession,
    Channel,
    Conversation,
    ConversationStatus,
    Customer,
    CustomerCategory,
    CustomerTier,
    Direction,
    Interaction,
    InteractionKind,
    KnowledgeArticle,
    LifecycleStage,
    LifecycleTransition,
    Organization,
    Team,
    Ticket,
    TicketCategory,
    TicketPriority,
    TicketStatus,
    UnansweredQuestion,
    ticket_number,
    utcnow,
)
from crm_core.normalize import pinyin_of, try_normalize_phone
from crm_core.services import audit
from crm_core.services.agents import create_agent, create_team
from crm_core.services.customers import create_customer
from crm_core.services.organizations import find_organization, get_or_create_organization

DEMO_SEED = 20260301
"""The seed of the demo data set; change it for a different (still repeatable) crowd."""
DEMO_ACTOR = "demo"
"""The actor named in the audit log for everything the demo loader writes."""
DEMO_ADMIN_LOGIN = "admin"
DEMO_ADMIN_PASSWORD = "admin-demo-2026"
DEMO_API_TOKEN = "cct_demo-read-only-2026"
"""A read-only API token of the demo (known, so the README's curl examples run as is)."""
DEMO_API_SCOPES = ["campaigns:read", "conversations:read", "customers:read", "reports:read",
                   "tickets:read"]
DEMO_AGENT_PASSWORD = "agent-demo-2026"
DEMO_CUSTOMER_COUNT = 200
DEMO_CONVERSATION_COUNT = 25

# ---------------------------------------------------------------------------
# Specifications: what the data set contains, independent of any database.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TeamSpec:
    """A team to create."""

    name: str
    description: str


@dataclass(frozen=True)
class AgentSpec:
    """A console account to create."""

    login: str
    display_name: str
    role: AgentRole
    email: str
    skills: tuple[str, ...]
    languages: tuple[str, ...]
    capacity: int
    availability: Availability
    teams: tuple[str, ...]

    @property
    def password(self) -> str:
        """The demo password of this account."""
        return DEMO_ADMIN_PASSWORD if self.login == DEMO_ADMIN_LOGIN else DEMO_AGENT_PASSWORD


@dataclass(frozen=True)
class CategorySpec:
    """A customer category row."""

    code: str
    name: str
    name_zh: str
    description: str


@dataclass(frozen=True)
class TierSpec:
    """A customer tier row."""

    code: str
    name: str
    name_zh: str
    rank: int


@dataclass(frozen=True)
class OrganizationSpec:
    """A company or institution, with the customer category its contacts belong to."""

    name: str
    industry: str
    category: str
    city: str
    website: str
    phone: str
    address: str


@dataclass
class CustomerSpec:
    """A customer: ``fields`` is the input of ``create_customer`` minus the foreign keys."""

    key: str
    fields: dict[str, Any]
    organization: str | None
    owner: str | None
    """Login of the owning agent."""
    created_at: datetime

    @property
    def emails(self) -> list[str]:
        """The e-mail addresses given."""
        return list(self.fields.get("emails") or [])

    @property
    def phones(self) -> list[str]:
        """The phone numbers given, as typed."""
        return list(self.fields.get("phones") or [])


@dataclass
class InteractionSpec:
    """One message or call of a conversation."""

    direction: Direction
    kind: InteractionKind
    text: str
    subject: str | None
    occurred_at: datetime
    external_id: str | None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class TicketSpec:
    """The ticket a conversation opened."""

    subject: str
    category: TicketCategory
    priority: TicketPriority
    status: TicketStatus
    team: str
    assignee: str | None
    tags: list[str]
    description: str
    created_at: datetime
    updated_at: datetime
    first_response_due_at: datetime
    resolution_due_at: datetime
    first_responded_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None


@dataclass
class ConversationSpec:
    """A conversation with one customer on one channel, its interactions and its ticket."""

    customer: str
    """The ``key`` of the customer."""
    channel: Channel
    subject: str
    thread_key: str
    status: ConversationStatus
    started_at: datetime
    last_message_at: datetime
    closed_at: datetime | None
    interactions: list[InteractionSpec]
    ticket: TicketSpec


@dataclass
class DemoDataset:
    """Everything the demo loader writes, in the order it writes it."""

    teams: list[TeamSpec]
    agents: list[AgentSpec]
    categories: list[CategorySpec]
    tiers: list[TierSpec]
    organizations: list[OrganizationSpec]
    customers: list[CustomerSpec]
    conversations: list[ConversationSpec]
    seed: int


# ---------------------------------------------------------------------------
# Fixed vocabulary.
# ---------------------------------------------------------------------------

TEAM_PRESALES = "售前咨询 Pre-sales"
TEAM_AFTERSALES = "售后服务 After-sales"
TEAM_VIP = "VIP 专席 VIP desk"
TEAM_ENGLISH = "English support"

DEMO_TEAMS: tuple[TeamSpec, ...] = (
    TeamSpec(TEAM_PRESALES, "产品咨询、报价与批量采购 · Product questions, quotes, bulk orders"),
    TeamSpec(TEAM_AFTERSALES, "订单、发票、退换货与故障 · Orders, invoices, returns, faults"),
    TeamSpec(TEAM_VIP, "金卡与贵宾客户专属服务 · Dedicated desk for gold and VIP customers"),
    TeamSpec(TEAM_ENGLISH, "英文客户服务 · Customers who write in English"),
)

DEMO_AGENTS: tuple[AgentSpec, ...] = (
    AgentSpec(
        DEMO_ADMIN_LOGIN, "李明 Li Ming", AgentRole.ADMIN, "li.ming@demo.example.cn",
        ("administration", "reports"), ("zh-CN", "en"), 5, Availability.ONLINE, (),
    ),
    AgentSpec(
        "zhou.min", "周敏 Zhou Min", AgentRole.SUPERVISOR, "zhou.min@demo.example.cn",
        ("supervision", "complaints", "vip"), ("zh-CN", "en"), 6, Availability.ONLINE,
        (TEAM_PRESALES, TEAM_AFTERSALES, TEAM_VIP),
    ),
    AgentSpec(
        "chen.jing", "陈静 Chen Jing", AgentRole.AGENT, "chen.jing@demo.example.cn",
        ("sales", "quotes", "products"), ("zh-CN",), 10, Availability.ONLINE, (TEAM_PRESALES,),
    ),
    AgentSpec(
        "wang.fang", "王芳 Wang Fang", AgentRole.AGENT, "wang.fang@demo.example.cn",
        ("billing", "invoices", "returns"), ("zh-CN",), 10, Availability.ONLINE,
        (TEAM_AFTERSALES,),
    ),
    AgentSpec(
        "liu.yang", "刘洋 Liu Yang", AgentRole.AGENT, "liu.yang@demo.example.cn",
        ("technical", "faults", "orders"), ("zh-CN",), 8, Availability.AWAY, (TEAM_AFTERSALES,),
    ),
    AgentSpec(
        "zhao.lei", "赵磊 Zhao Lei", AgentRole.AGENT, "zhao.lei@demo.example.cn",
        ("vip", "booking", "complaints"), ("zh-CN", "en"), 6, Availability.ONLINE,
        (TEAM_VIP, TEAM_AFTERSALES),
    ),
    AgentSpec(
        "sarah.jones", "Sarah Jones 琼斯", AgentRole.AGENT, "sarah.jones@demo.example.com",
        ("billing", "orders", "returns"), ("en",), 10, Availability.ONLINE, (TEAM_ENGLISH,),
    ),
    AgentSpec(
        "david.miller", "David Miller 米大卫", AgentRole.AGENT, "david.miller@demo.example.com",
        ("sales", "technical"), ("en", "zh-CN"), 8, Availability.OFFLINE,
        (TEAM_ENGLISH, TEAM_PRESALES),
    ),
)

DEMO_CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("retail", "Retail", "零售", "Individual consumers · 个人消费者"),
    CategorySpec("wholesale", "Wholesale", "批发", "Distributors and resellers · 经销商与批发商"),
    CategorySpec("enterprise", "Enterprise", "企业客户", "Companies buying for their own use"),
    CategorySpec("government", "Government", "政府机构", "Public bodies · 政府与事业单位"),
    CategorySpec("hospitality", "Hospitality", "酒店餐饮", "Hotels, restaurants, catering"),
)

DEMO_TIERS: tuple[TierSpec, ...] = (
    TierSpec("standard", "Standard", "普通", 0),
    TierSpec("silver", "Silver", "银卡", 1),
    TierSpec("gold", "Gold", "金卡", 2),
    TierSpec("vip", "VIP", "贵宾", 3),
)

# city: (province or state, country, postcode, time zone, landline area code, streets)
_CITIES: dict[str, tuple[str | None, str, str, str, str, tuple[str, ...]]] = {
    "上海": (
        "上海市", "CN", "200120", "Asia/Shanghai", "21",
        ("浦东新区世纪大道", "静安区南京西路", "徐汇区淮海中路"),
    ),
    "杭州": (
        "浙江省", "CN", "310012", "Asia/Shanghai", "571",
        ("西湖区文三路", "滨江区江南大道", "上城区延安路"),
    ),
    "北京": (
        "北京市", "CN", "100020", "Asia/Shanghai", "10",
        ("朝阳区建国路", "海淀区中关村大街", "东城区东长安街"),
    ),
    "广州": (
        "广东省", "CN", "510623", "Asia/Shanghai", "20",
        ("天河区天河路", "越秀区环市东路"),
    ),
    "深圳": (
        "广东省", "CN", "518048", "Asia/Shanghai", "755",
        ("南山区科技园南路", "福田区深南大道"),
    ),
    "成都": (
        "四川省", "CN", "610041", "Asia/Shanghai", "28",
        ("武侯区人民南路", "锦江区春熙路"),
    ),
    "南京": (
        "江苏省", "CN", "210008", "Asia/Shanghai", "25",
        ("鼓楼区中山路", "秦淮区太平南路"),
    ),
    "苏州": (
        "江苏省", "CN", "215021", "Asia/Shanghai", "512",
        ("工业园区星湖街", "姑苏区人民路"),
    ),
    "武汉": (
        "湖北省", "CN", "430022", "Asia/Shanghai", "27",
        ("江汉区解放大道", "武昌区中南路"),
    ),
    "西安": (
        "陕西省", "CN", "710061", "Asia/Shanghai", "29",
        ("雁塔区长安南路", "碑林区东大街"),
    ),
    "宁波": (
        "浙江省", "CN", "315000", "Asia/Shanghai", "574",
        ("海曙区中山西路", "鄞州区天童南路"),
    ),
    "青岛": (
        "山东省", "CN", "266071", "Asia/Shanghai", "532",
        ("市南区香港中路",),
    ),
    "重庆": (
        "重庆市", "CN", "400010", "Asia/Shanghai", "23",
        ("渝中区解放碑步行街", "江北区观音桥步行街"),
    ),
    "厦门": (
        "福建省", "CN", "361001", "Asia/Shanghai", "592",
        ("思明区鹭江道",),
    ),
    "天津": (
        "天津市", "CN", "300051", "Asia/Shanghai", "22",
        ("和平区南京路",),
    ),
    "London": (
        "England", "GB", "EC2V 7HH", "Europe/London", "",
        ("Cheapside", "King's Road", "Baker Street"),
    ),
    "Manchester": (
        "England", "GB", "M1 1AE", "Europe/London", "",
        ("Deansgate", "Oxford Road"),
    ),
    "Edinburgh": (
        "Scotland", "GB", "EH1 1YZ", "Europe/London", "",
        ("Princes Street",),
    ),
    "New York": (
        "NY", "US", "10001", "America/New_York", "",
        ("Broadway", "Madison Avenue"),
    ),
    "San Francisco": (
        "CA", "US", "94105", "America/Los_Angeles", "",
        ("Market Street",),
    ),
    "Seattle": (
        "WA", "US", "98101", "America/Los_Angeles", "",
        ("Pine Street",),
    ),
    "Singapore": (
        None, "SG", "049315", "Asia/Singapore", "",
        ("Robinson Road", "Orchard Road"),
    ),
    "Sydney": (
        "NSW", "AU", "2000", "Australia/Sydney", "",
        ("George Street", "Pitt Street"),
    ),
}


_LANDLINE_DIGITS = {"厦门": 7}
"""Local landline number lengths that differ from the usual eight digits."""
_CN_CITY_WEIGHTS = {
    "上海": 20, "杭州": 15, "北京": 15, "广州": 10, "深圳": 10, "成都": 8, "南京": 5,
    "武汉": 5, "西安": 4, "苏州": 4, "重庆": 4,
}
_EN_CITY_WEIGHTS = {
    "London": 25, "Manchester": 8, "Edinburgh": 5, "New York": 20, "San Francisco": 10,
    "Seattle": 7, "Singapore": 8, "Sydney": 7, "上海": 10,
}
_US_AREA_CODES = {"New York": ("212", "646", "917"), "San Francisco": ("415",), "Seattle": ("206",)}

# name, industry, category, city, web slug
_ORGANIZATIONS: tuple[tuple[str, str, str, str, str], ...] = (
    ("杭州云帆科技有限公司", "软件和信息技术服务", "enterprise", "杭州", "yunfan-tech"),
    ("北京华信贸易有限公司", "批发贸易", "wholesale", "北京", "huaxin-trading"),
    ("上海申江国际酒店有限公司", "酒店住宿", "hospitality", "上海", "shenjiang-hotel"),
    ("深圳前海智联电子有限公司", "电子制造", "enterprise", "深圳", "zhilian-electronics"),
    ("广州南粤物流有限公司", "物流运输", "enterprise", "广州", "nanyue-logistics"),
    ("成都锦城餐饮管理有限公司", "餐饮", "hospitality", "成都", "jincheng-catering"),
    ("南京金陵医药连锁有限公司", "医药零售", "wholesale", "南京", "jinling-pharmacy"),
    ("苏州吴越纺织品进出口有限公司", "纺织进出口", "wholesale", "苏州", "wuyue-textiles"),
    ("武汉长江汽车配件有限公司", "汽车零部件", "wholesale", "武汉", "changjiang-autoparts"),
    ("西安古城文化旅游发展有限公司", "文化旅游", "hospitality", "西安", "gucheng-travel"),
    ("杭州市西湖区政务服务中心", "政府机构", "government", "杭州", "xihu-gov"),
    ("上海浦江教育科技有限公司", "教育培训", "enterprise", "上海", "pujiang-edu"),
    ("北京京华建筑设计研究院有限公司", "建筑设计", "enterprise", "北京", "jinghua-design"),
    ("深圳鹏程新能源科技有限公司", "新能源", "enterprise", "深圳", "pengcheng-energy"),
    ("广州珠江食品有限公司", "食品加工", "wholesale", "广州", "zhujiang-food"),
    ("成都蓉创数据服务有限公司", "数据服务", "enterprise", "成都", "rongchuang-data"),
    ("宁波海港国际贸易有限公司", "进出口贸易", "wholesale", "宁波", "haigang-trade"),
    ("青岛海韵酒店管理有限公司", "酒店管理", "hospitality", "青岛", "haiyun-hotels"),
    ("上海市徐汇区行政服务中心", "政府机构", "government", "上海", "xuhui-gov"),
    ("重庆山城火锅餐饮连锁有限公司", "餐饮连锁", "hospitality", "重庆", "shancheng-hotpot"),
    ("厦门鹭岛电子商务有限公司", "电子商务", "enterprise", "厦门", "ludao-ecommerce"),
    ("天津渤海医疗器械有限公司", "医疗器械", "wholesale", "天津", "bohai-medical"),
    ("Northwind Traders Ltd", "Wholesale trading", "wholesale", "London", "northwind"),
    ("Contoso Pharmaceuticals", "Pharmaceuticals", "enterprise", "New York", "contoso"),
    ("Fabrikam Inc.", "Manufacturing", "enterprise", "Seattle", "fabrikam"),
    ("Tailspin Toys", "Toys and games", "wholesale", "Manchester", "tailspin"),
    ("Harbourview Hotels Ltd", "Hospitality", "hospitality", "London", "harbourview"),
    ("Blue Lantern Restaurants Pte Ltd", "Restaurants", "hospitality", "Singapore", "bluelantern"),
    ("Adventure Works Cycles", "Sporting goods", "wholesale", "San Francisco", "adventure-works"),
    ("Pacific Rim Consulting (Shanghai) Co., Ltd.", "Consulting", "enterprise", "上海", "pacrim"),
)
YUNFAN = _ORGANIZATIONS[0][0]

_SURNAMES: dict[str, int] = {
    "张": 10, "王": 10, "李": 10, "刘": 8, "陈": 8, "杨": 6, "赵": 5, "黄": 5, "周": 5,
    "吴": 5, "徐": 4, "孙": 4, "胡": 3, "朱": 3, "高": 3, "林": 3, "何": 3, "郭": 3,
    "马": 3, "罗": 2, "梁": 2, "宋": 2, "郑": 2, "谢": 2, "韩": 2, "唐": 2, "冯": 2,
    "于": 2, "董": 2, "程": 1, "曹": 1, "袁": 1, "邓": 1, "许": 1, "沈": 1, "彭": 1,
    "苏": 1, "蒋": 1, "蔡": 1, "丁": 1, "魏": 1, "叶": 1, "潘": 1, "杜": 1, "钟": 1,
}
_GIVEN_NAMES: tuple[str, ...] = (
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰",
    "娟", "涛", "明", "超", "秀兰", "霞", "平", "刚", "桂英", "建华", "建国", "志强",
    "海燕", "晓东", "文博", "子涵", "浩然", "欣怡", "雨桐", "一鸣", "思远", "佳怡", "梓轩",
    "宇航", "诗涵", "俊杰", "婷婷", "慧敏", "玉兰", "春梅", "红梅", "丹", "鹏", "飞",
    "琳", "博", "凯", "晨", "颖", "倩", "斌", "亮", "辉", "鑫", "雪", "晓峰", "立新",
)
_EN_GIVEN: tuple[str, ...] = (
    "James", "Oliver", "Sophie", "Michael", "Sarah", "Daniel", "Emma", "Olivia", "Thomas",
    "Charlotte", "William", "Grace", "Benjamin", "Hannah", "Jack", "Lucy", "Robert",
    "Amelia", "Henry", "Chloe", "George", "Isla", "Matthew", "Ella", "Andrew", "Megan",
)
_EN_FAMILY: tuple[str, ...] = (
    "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Roberts",
    "Walker", "Wright", "Thompson", "White", "Harris", "Clarke", "Lewis", "Jackson",
    "Wood", "Turner", "Hughes", "Green", "Hall", "Baker", "King", "Scott", "Morgan",
)
_CN_MOBILE_PREFIXES = (
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152",
    "155", "156", "157", "158", "159", "166", "176", "177", "178", "180", "181", "182",
    "183", "185", "186", "187", "188", "189", "191", "198", "199",
)
_ZH_JOB_TITLES = (
    "采购经理", "财务主管", "总经理", "行政主管", "IT 主管", "运营总监", "销售经理",
    "办公室主任", "前厅经理", "项目经理",
)
_EN_JOB_TITLES = (
    "Purchasing Manager", "Finance Director", "Office Manager", "Head of IT",
    "Operations Director", "Owner", "Project Manager", "Procurement Lead",
)
_ZH_NOTES = (
    "偏好下午 2 点以后联系。",
    "只接受邮件沟通，请勿频繁来电。",
    "对价格较敏感，关注促销活动。",
    "每年春节前批量采购员工礼品。",
    "需要开具增值税专用发票，抬头与税号见附件。",
    "老家在外地，节假日不方便收货。",
)
_EN_NOTES = (
    "Prefers e-mail; please don't call before 10am.",
    "Orders gift hampers for the whole team every December.",
    "Invoices must quote the purchase order number.",
    "Travels a lot; WhatsApp-style short messages work best.",
)
_SOURCES = ("website", "webchat", "referral", "trade_show", "phone_inbound", "import", "wechat")
_STAGE_WEIGHTS = {
    LifecycleStage.ACTIVE: 45, LifecycleStage.PROSPECT: 15, LifecycleStage.LEAD: 15,
    LifecycleStage.DORMANT: 15, LifecycleStage.CHURNED: 10,
}
_TIER_WEIGHTS = {"standard": 50, "silver": 25, "gold": 15, "vip": 10}
_VALUE_RANGES = {
    "standard": (0, 5_000), "silver": (5_000, 20_000), "gold": (20_000, 80_000),
    "vip": (80_000, 500_000),
}
_FIRST_RESPONSE_SLA = {
    TicketPriority.URGENT: timedelta(minutes=30), TicketPriority.HIGH: timedelta(hours=1),
    TicketPriority.NORMAL: timedelta(hours=4), TicketPriority.LOW: timedelta(hours=8),
}
_RESOLUTION_SLA = {
    TicketPriority.URGENT: timedelta(hours=4), TicketPriority.HIGH: timedelta(days=1),
    TicketPriority.NORMAL: timedelta(days=3), TicketPriority.LOW: timedelta(days=5),
}
_STATUS_WEIGHTS = {
    TicketStatus.NEW: 15, TicketStatus.OPEN: 25, TicketStatus.PENDING: 15,
    TicketStatus.RESOLVED: 25, TicketStatus.CLOSED: 20,
}
# how long ago conversations of each status started, in hours
_STATUS_AGE_HOURS = {
    TicketStatus.NEW: (0.2, 6), TicketStatus.OPEN: (2, 72), TicketStatus.PENDING: (24, 168),
    TicketStatus.RESOLVED: (72, 960), TicketStatus.CLOSED: (240, 1440),
}

IN, OUT = Direction.INBOUND, Direction.OUTBOUND
EMAIL, TELEGRAM, WEBCHAT, PHONE = Channel.EMAIL, Channel.TELEGRAM, Channel.WEBCHAT, Channel.PHONE


@dataclass(frozen=True)
class _Scenario:
    key: str
    language: str
    subject: str
    category: TicketCategory
    priority: TicketPriority
    team: str
    channels: tuple[Channel, ...]
    messages: tuple[tuple[Direction, str], ...]
    tags: tuple[str, ...] = ()


_ZH_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        "order_status", "zh-CN", "订单查询：{order} 什么时候发货？", TicketCategory.INQUIRY,
        TicketPriority.NORMAL, TEAM_AFTERSALES, (EMAIL, TELEGRAM, WEBCHAT, PHONE),
        (
            (IN, "你好，我上周下的订单 {order} 到现在还显示“待发货”，能帮忙查一下吗？"),
            (OUT, "您好，已为您查询：订单 {order} 今天上午已从仓库发出，顺丰单号 {tracking}，"
                  "预计 1–2 天送达。"),
            (IN, "收到，谢谢！"),
            (OUT, "不客气，如有其他问题随时联系我们。"),
        ),
        ("订单查询",),
    ),
    _Scenario(
        "invoice", "zh-CN", "发票问题：增值税专用发票开具", TicketCategory.INQUIRY,
        TicketPriority.NORMAL, TEAM_AFTERSALES, (EMAIL, WEBCHAT),
        (
            (IN, "您好，我们公司（{org}）上个月的采购需要开增值税专用发票，开票信息已经发到"
                 "你们财务邮箱，请问什么时候能开好？"),
            (OUT, "您好，开票信息已收到。专票将在 3 个工作日内开具，纸质发票通过顺丰寄出，"
                  "电子版会同步发到您的邮箱。"),
            (IN, "能不能加急？月底前要入账。"),
            (OUT, "已为您申请加急，预计明天下午开出，届时短信通知您。"),
            (IN, "好的，麻烦了。"),
        ),
        ("发票",),
    ),
    _Scenario(
        "return", "zh-CN", "退货：商品破损", TicketCategory.COMPLAINT, TicketPriority.NORMAL,
        TEAM_AFTERSALES, (TELEGRAM, WEBCHAT, EMAIL),
        (
            (IN, "收到的货外包装破了，里面的玻璃杯碎了两只，我要退货。订单号 {order}。"),
            (OUT, "非常抱歉给您带来不便！麻烦您拍几张破损的照片发给我们，我们马上为您安排"
                  "免费上门取件。"),
            (IN, "照片已经发过去了，一共三张。"),
            (OUT, "照片已收到。取件员明天上午会联系您，商品寄回后 3 个工作日内原路退款。"),
        ),
        ("退货",),
    ),
    _Scenario(
        "fault", "zh-CN", "产品故障：打印机频繁卡纸（错误代码 E-203）", TicketCategory.FAULT,
        TicketPriority.HIGH, TEAM_AFTERSALES, (PHONE, EMAIL, WEBCHAT),
        (
            (IN, "我们办公室去年买的激光打印机最近老是卡纸，屏幕显示错误代码 E-203，"
                 "已经影响正常办公了。"),
            (OUT, "您好，E-203 一般是进纸辊磨损导致的。请先关机，打开后盖检查是否有残留纸屑，"
                  "然后重新开机试一下。"),
            (IN, "试过了，还是不行。"),
            (OUT, "好的，设备仍在保修期内，我们已为您预约工程师明天上午上门检修，"
                  "工程师会提前电话联系您。"),
            (IN, "好的，谢谢。"),
        ),
        ("故障", "保修"),
    ),
    _Scenario(
        "quote", "zh-CN", "批量采购报价咨询", TicketCategory.INQUIRY, TicketPriority.NORMAL,
        TEAM_PRESALES, (EMAIL, PHONE, WEBCHAT),
        (
            (IN, "你好，我们是{org}，计划采购 200 台办公笔记本，想了解一下企业采购价格和"
                 "交货周期。"),
            (OUT, "您好，感谢关注！200 台以上可享受企业协议价，客户经理今天内会把报价单发到"
                  "您的邮箱，交货周期约 10 个工作日。"),
            (IN, "报价单里请把三年上门保修也算进去。"),
            (OUT, "好的，已备注三年上门保修，报价单稍后发送。"),
        ),
        ("报价",),
    ),
    _Scenario(
        "points", "zh-CN", "会员积分少了 2000 分", TicketCategory.COMPLAINT,
        TicketPriority.NORMAL, TEAM_AFTERSALES, (TELEGRAM, WEBCHAT, PHONE),
        (
            (IN, "我的会员积分怎么突然少了 2000 分？我最近没有兑换过东西。"),
            (OUT, "您好，经查询，这 2000 积分是两年前获得的，按规则已于本月到期清零。"),
            (IN, "到期之前也没有任何提醒啊。"),
            (OUT, "非常抱歉，到期提醒短信没有发送成功。作为补偿，我们已为您补发 2000 积分，"
                  "有效期一年。"),
        ),
        ("会员积分",),
    ),
    _Scenario(
        "delivery_complaint", "zh-CN", "投诉：快递延误且服务态度差", TicketCategory.COMPLAINT,
        TicketPriority.HIGH, TEAM_AFTERSALES, (PHONE, EMAIL, TELEGRAM),
        (
            (IN, "订单 {order} 说好昨天送到，结果今天才到，快递员态度还很差，把东西扔在门口"
                 "就走了。"),
            (OUT, "非常抱歉给您带来这么差的体验！我们已将情况反馈给物流公司，并为您申请了 50 元"
                  "无门槛优惠券作为补偿。"),
            (IN, "希望以后不要再出现这种情况。"),
        ),
        ("投诉", "物流"),
    ),
    _Scenario(
        "suggestion", "zh-CN", "建议：支持电子发票自助下载", TicketCategory.SUGGESTION,
        TicketPriority.LOW, TEAM_AFTERSALES, (WEBCHAT, EMAIL, TELEGRAM),
        (
            (IN, "建议你们的 App 增加电子发票下载功能，现在每次都要找客服要，太麻烦了。"),
            (OUT, "感谢您的宝贵建议！我们已将需求转给产品团队，预计下个版本上线电子发票"
                  "自助下载。"),
        ),
        ("建议",),
    ),
    _Scenario(
        "booking", "zh-CN", "预订变更：包间改期", TicketCategory.INQUIRY, TicketPriority.NORMAL,
        TEAM_PRESALES, (PHONE, WEBCHAT, TELEGRAM),
        (
            (IN, "你好，下周五晚上订的包间想改到周六晚上六点，人数不变，可以吗？"),
            (OUT, "您好，已为您改到周六 18:00，人数不变，到店报手机号即可。"),
            (IN, "好的，谢谢。"),
        ),
        ("预订",),
    ),
)

_YU_HAI_BOOKING = _Scenario(
    "yu_booking", "zh-CN", "预订变更：于先生包间改到周六", TicketCategory.INQUIRY,
    TicketPriority.NORMAL, TEAM_VIP, (PHONE,),
    (
        (IN, "你好，我是于海。下周五晚上订的包间想改到周六晚上六点，还是 8 位。"),
        (OUT, "于先生您好！已为您改到周六 18:00，8 位，靠窗的老位置给您留着。"),
        (IN, "太好了，再帮我准备一个生日蛋糕。"),
        (OUT, "好的，已备注生日蛋糕，祝您用餐愉快！"),
    ),
    ("预订", "老客户"),
)

_EN_SCENARIOS: tuple[_Scenario, ...] = (
    _Scenario(
        "order_status_en", "en", "Where is my order {order}?", TicketCategory.INQUIRY,
        TicketPriority.NORMAL, TEAM_ENGLISH, (EMAIL, WEBCHAT, TELEGRAM),
        (
            (IN, "Hi, my order {order} was due on Monday but the tracking hasn't moved for "
                 "three days."),
            (OUT, "Hi {given}, sorry about the wait. I've checked with the courier: your parcel "
                  "is at the local depot and will be delivered tomorrow before 6pm."),
            (IN, "Great, thanks for checking."),
        ),
        ("order",),
    ),
    _Scenario(
        "fault_en", "en", "Coffee machine shows error E4", TicketCategory.FAULT,
        TicketPriority.HIGH, TEAM_ENGLISH, (EMAIL, PHONE),
        (
            (IN, "Hello, the coffee machine I bought last month shows error E4 and won't heat "
                 "up."),
            (OUT, "Sorry to hear that, {given}. Could you send me the serial number from the "
                  "label on the back?"),
            (IN, "It's SN-4821-7730."),
            (OUT, "Thanks. The machine is under warranty, so we'll send a replacement and our "
                  "courier will collect the faulty one when it arrives."),
            (IN, "Perfect, thank you!"),
        ),
        ("fault", "warranty"),
    ),
    _Scenario(
        "booking_en", "en", "Booking change: table for six", TicketCategory.INQUIRY,
        TicketPriority.NORMAL, TEAM_ENGLISH, (PHONE, WEBCHAT, EMAIL),
        (
            (IN, "Could we move our table for six from Friday 7pm to Saturday at the same "
                 "time?"),
            (OUT, "Of course, {given}: you're now booked for Saturday at 7pm, table for six. "
                  "See you then!"),
        ),
        ("booking",),
    ),
    _Scenario(
        "invoice_en", "en", "Wrong VAT number on invoice {invoice}", TicketCategory.INQUIRY,
        TicketPriority.NORMAL, TEAM_ENGLISH, (EMAIL,),
        (
            (IN, "Our invoice {invoice} shows the wrong VAT number. Could you reissue it?"),
            (OUT, "Apologies for the mistake. Please confirm the correct VAT number and we'll "
                  "reissue the invoice today."),
            (IN, "It's GB 987 6543 21."),
            (OUT, "Thank you. The corrected invoice has been e-mailed to you."),
        ),
        ("invoice",),
    ),
    _Scenario(
        "double_charge", "en", "Charged twice for order {order}", TicketCategory.COMPLAINT,
        TicketPriority.URGENT, TEAM_ENGLISH, (EMAIL, PHONE, WEBCHAT),
        (
            (IN, "I've been charged twice for order {order}. Please refund the duplicate "
                 "payment as soon as possible."),
            (OUT, "I'm very sorry, {given}. I can see the duplicate charge and have started the "
                  "refund; it will show on your card in 3–5 working days."),
            (IN, "OK. Please make sure it doesn't happen again."),
            (OUT, "Understood. Our payments team is looking into the cause, and you'll get an "
                  "e-mail when the refund goes through."),
        ),
        ("billing", "complaint"),
    ),
    _Scenario(
        "return_en", "en", "Return: wrong size", TicketCategory.OTHER, TicketPriority.LOW,
        TEAM_ENGLISH, (WEBCHAT, EMAIL, TELEGRAM),
        (
            (IN, "I'd like to return the jacket from order {order}, it's the wrong size."),
            (OUT, "No problem! I've e-mailed you a prepaid return label. Once the jacket is "
                  "back with us we'll refund you within 3 working days."),
            (IN, "Got the label, thanks."),
        ),
        ("return",),
    ),
)

_FOLLOW_UP = {"zh-CN": "请尽快回复，谢谢。", "en": "Any update on this?"}
_SERVICE_ADDRESS = {"zh-CN": "service@demo.example.cn", "en": "support@demo.example.com"}


def _weighted(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()), k=1)[0]


def _spread(weights: dict[Any, int], count: int) -> list[Any]:
    """``count`` items in the proportions of ``weights`` (largest remainders), in order."""
    total = sum(weights.values())
    shares = {k: count * w / total for k, w in weights.items()}
    result = {k: int(v) for k, v in shares.items()}
    by_remainder = sorted(weights, key=lambda k: shares[k] - result[k], reverse=True)
    for key in by_remainder[: count - sum(result.values())]:
        result[key] += 1
    return [key for key in weights for _ in range(result[key])]


def _compact_pinyin(text: str) -> str:
    return pinyin_of(text).replace(" ", "")


def format_phone(e164: str) -> str:
    """A phone number as people type it: ``+8613800138000`` → ``+86 138 0013 8000``."""
    import phonenumbers

    number = phonenumbers.parse(e164, None)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


class _Generator:
    """Draws the random parts of the data set from one seeded ``random.Random``."""

    def __init__(self, seed: int, now: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = now
        self.today = now.date()
        self.emails: set[str] = set()
        self.phones: set[str] = set()
        self.counter = 0

    # -- handles ---------------------------------------------------------

    def _unique_phone(self, draw: Any) -> str:
        for _ in range(1000):
            e164 = try_normalize_phone(draw(), "CN")
            if e164 is not None and e164 not in self.phones:
                self.phones.add(e164)
                return format_phone(e164)
        raise ValueError("cannot draw a valid, unused phone number; check the number plan")

    def cn_mobile(self) -> str:
        """A valid, unused Chinese mobile number, typed with spaces."""
        rng = self.rng
        return self._unique_phone(
            lambda: "+86" + rng.choice(_CN_MOBILE_PREFIXES) + f"{rng.randrange(10**8):08d}"
        )

    def phone_for(self, city: str, *, landline: bool = False) -> str:
        """A valid, unused phone number for someone (or, landline, an office) in ``city``."""
        rng = self.rng
        country = _CITIES[city][1]
        if country == "CN":
            if landline:
                area = _CITIES[city][4]
                rest = _LANDLINE_DIGITS.get(city, 8) - 1
                return self._unique_phone(
                    lambda: f"+86{area}{rng.randint(5, 8)}{rng.randrange(10**rest):0{rest}d}"
                )
            return self.cn_mobile()
        if country == "GB":
            if landline:
                return self._unique_phone(lambda: f"+44207946{rng.randrange(1000):04d}")
            return self._unique_phone(lambda: f"+447{rng.randrange(10**9):09d}")
        if country == "US":
            areas = _US_AREA_CODES.get(city, ("212",))
            return self._unique_phone(
                lambda: f"+1{rng.choice(areas)}55501{rng.randrange(100):02d}"
            )
        if country == "SG":
            lead = "6" if landline else rng.choice("89")
            return self._unique_phone(lambda: f"+65{lead}{rng.randrange(10**7):07d}")
        if country == "AU":
            return self._unique_phone(lambda: f"+614{rng.randrange(10**8):08d}")
        raise ValueError(f"no phone plan for {city}")

    def email(self, local: str, domain: str) -> str:
        """``local@domain``, with a number appended to ``local`` when that address is taken."""
        candidate = f"{local}@{domain}"
        n = 1
        while candidate in self.emails:
            n += 1
            candidate = f"{local}{n}@{domain}"
        self.emails.add(candidate)
        return candidate

    def street(self, city: str) -> str:
        """A street address in ``city``."""
        name = self.rng.choice(_CITIES[city][5])
        number = self.rng.randint(1, 999)
        return f"{name} {number} 号" if _CITIES[city][1] == "CN" else f"{number} {name}"

    def address(self, city: str) -> str:
        """A one-line postal address in ``city``, written the local way."""
        province, country, postcode = _CITIES[city][:3]
        if country != "CN":
            return f"{self.street(city)}, {city} {postcode}"
        region = province if province == f"{city}市" else f"{province}{city}市"
        return f"{region}{self.street(city).replace(' ', '')}"

    def ago(self, low_hours: float, high_hours: float) -> datetime:
        """A moment between ``high_hours`` and ``low_hours`` before now, whole seconds."""
        seconds = int(self.rng.uniform(low_hours, high_hours) * 3600)
        return (self.now - timedelta(seconds=seconds)).replace(microsecond=0)

    def birthday(self, *, soon: bool = False) -> date:
        """A birth date between 1955 and 2003; ``soon`` puts it within the next two weeks."""
        year = self.rng.randint(1955, 2003)
        if soon:
            upcoming = self.today + timedelta(days=self.rng.randint(1, 14))
            day = upcoming.day
            if upcoming.month == 2 and day == 29:
                day = 28
            return date(year, upcoming.month, day)
        start = date(year, 1, 1)
        return start + timedelta(days=self.rng.randrange(365))

    # -- organizations ---------------------------------------------------

    def organizations(self) -> list[OrganizationSpec]:
        """The fixed list of organizations, with drawn phones and addresses."""
        result = []
        for name, industry, category, city, slug in _ORGANIZATIONS:
            country = _CITIES[city][1]
            tld = "example.cn" if country == "CN" else "example.com"
            result.append(
                OrganizationSpec(
                    name=name,
                    industry=industry,
                    category=category,
                    city=city,
                    website=f"https://www.{slug}.{tld}",
                    phone=self.phone_for(city, landline=True),
                    address=self.address(city),
                )
            )
        return result

    # -- customers -------------------------------------------------------

    def _key(self) -> str:
        self.counter += 1
        return f"c{self.counter:03d}"

    def _class_fields(
        self, org: OrganizationSpec | None, *, language: str, created_at: datetime
    ) -> dict[str, Any]:
        rng = self.rng
        stage: LifecycleStage = _weighted(rng, _STAGE_WEIGHTS)
        tier: str = _weighted(rng, _TIER_WEIGHTS)
        if stage in {LifecycleStage.LEAD, LifecycleStage.PROSPECT} and tier != "standard":
            tier = "standard" if rng.random() < 0.8 else "silver"
        if org is not None and org.category in {"enterprise", "government"} and tier == "standard":
            tier = rng.choice(["standard", "silver", "gold"])
        low, high = _VALUE_RANGES[tier]
        if stage == LifecycleStage.LEAD:
            value = Decimal("0.00")
        elif stage == LifecycleStage.PROSPECT:
            value = Decimal(rng.randrange(0, 100_000)) / 100
        else:
            value = Decimal(rng.randrange(low * 100, high * 100)) / 100
        fields: dict[str, Any] = {
            "lifecycle_stage": stage.value,
            "tier_code": tier,
            "category_code": org.category if org is not None else "retail",
            "lifetime_value": str(value.quantize(Decimal("0.01"))),
            "language": language,
            "source": rng.choice(_SOURCES),
        }
        if tier != "standard":
            fields["custom_attributes"] = {"member_no": f"M{rng.randrange(10**8):08d}"}
        tags: list[str] = []
        old = (self.now - created_at).days > 365 and stage == LifecycleStage.ACTIVE
        if old and rng.random() < 0.5:
            tags.append("老客户")
        if tier in {"gold", "vip"} and rng.random() < 0.5:
            tags.append("vip-event")
        if org is not None and rng.random() < 0.4:
            tags.append("企业采购")
        if rng.random() < 0.06:
            tags.append("投诉过")
        if rng.random() < 0.08:
            tags.append("价格敏感")
        fields["tags"] = tags
        return fields

    def _contact_fields(self, fields: dict[str, Any], language: str) -> None:
        """Opt-ins, preferred channel, owner-free extras, from the handles already drawn."""
        rng = self.rng
        has_email, has_phone = bool(fields.get("emails")), bool(fields.get("phones"))
        opt_in: dict[str, bool] = {}
        if has_email and rng.random() < 0.7:
            opt_in["email"] = rng.random() < 0.6
            if opt_in["email"] and rng.random() < 0.6:
                fields["tags"].append("newsletter")
        if has_phone and rng.random() < 0.4:
            opt_in["phone"] = rng.random() < 0.4
        if opt_in:
            fields["marketing_opt_in"] = opt_in
        channels = ([EMAIL] if has_email else []) + ([PHONE] if has_phone else []) + [WEBCHAT]
        if rng.random() < 0.8:
            fields["preferred_channel"] = rng.choice(channels).value
        if rng.random() < 0.12:
            fields["notes"] = rng.choice(_ZH_NOTES if language == "zh-CN" else _EN_NOTES)
        if rng.random() < 0.02:
            fields["do_not_contact"] = True
            fields["marketing_opt_in"] = dict.fromkeys(opt_in or {"email": False}, False)

    def _place(self, fields: dict[str, Any], city: str, *, street: bool) -> None:
        province, country, postcode, tz, _area, _streets = _CITIES[city]
        fields.update(city=city, country=country, timezone=tz)
        if province:
            fields["province"] = province
        if street:
            fields["street"] = self.street(city)
            fields["postcode"] = postcode

    def _owner(self, language: str) -> str | None:
        if self.rng.random() >= 0.35:
            return None
        candidates = [
            a.login for a in DEMO_AGENTS
            if a.role != AgentRole.ADMIN and language in a.languages
        ]
        return self.rng.choice(candidates)

    def _created_at(self) -> datetime:
        return self.ago(24 * 8, 24 * 1100)

    def chinese_customer(
        self, orgs: list[OrganizationSpec], *, family: str | None = None
    ) -> CustomerSpec:
        """A customer with a Chinese name, mostly in mainland China."""
        rng = self.rng
        family = family or _weighted(rng, _SURNAMES)
        given = rng.choice(_GIVEN_NAMES)
        org = rng.choice([o for o in orgs if _CITIES[o.city][1] == "CN"]) if (
            rng.random() < 0.5
        ) else None
        city = org.city if org is not None else _weighted(rng, _CN_CITY_WEIGHTS)
        created_at = self._created_at()
        fields = self._class_fields(org, language="zh-CN", created_at=created_at)
        fields.update(family_name=family, given_name=given)
        if rng.random() < 0.92:
            fields["phones"] = [self.cn_mobile()]
        if rng.random() < 0.85 or not fields.get("phones"):
            domain = rng.choice(("example.cn", "example.cn", "example.com.cn", "example.net"))
            fields["emails"] = [
                self.email(f"{_compact_pinyin(family)}.{_compact_pinyin(given)}", domain)
            ]
        self._place(fields, city, street=rng.random() < 0.4)
        if org is not None:
            fields["job_title"] = rng.choice(_ZH_JOB_TITLES)
            fields["industry"] = org.industry
        if rng.random() < 0.8:
            fields["birthday"] = self.birthday(soon=rng.random() < 0.04).isoformat()
        self._contact_fields(fields, "zh-CN")
        return CustomerSpec(
            self._key(), fields, org.name if org else None, self._owner("zh-CN"), created_at
        )

    def english_customer(self, orgs: list[OrganizationSpec]) -> CustomerSpec:
        """A customer with an English name, in the UK, US, Singapore, Sydney or Shanghai."""
        rng = self.rng
        given, family = rng.choice(_EN_GIVEN), rng.choice(_EN_FAMILY)
        english_orgs = [o for o in orgs if _CITIES[o.city][1] != "CN" or o.name.isascii()]
        org = rng.choice(english_orgs) if rng.random() < 0.5 else None
        city = org.city if org is not None else _weighted(rng, _EN_CITY_WEIGHTS)
        created_at = self._created_at()
        fields = self._class_fields(org, language="en", created_at=created_at)
        fields.update(family_name=family, given_name=given)
        country = _CITIES[city][1]
        domain = {"GB": "example.co.uk", "CN": "example.cn"}.get(country, "example.com")
        fields["emails"] = [self.email(f"{given}.{family}".lower(), domain)]
        if rng.random() < 0.6:
            fields["phones"] = [self.phone_for(city)]
        self._place(fields, city, street=rng.random() < 0.4)
        if org is not None:
            fields["job_title"] = rng.choice(_EN_JOB_TITLES)
            fields["industry"] = org.industry
        if rng.random() < 0.7:
            fields["birthday"] = self.birthday(soon=rng.random() < 0.04).isoformat()
        self._contact_fields(fields, "en")
        return CustomerSpec(
            self._key(), fields, org.name if org else None, self._owner("en"), created_at
        )

    def fixed_customers(self) -> list[CustomerSpec]:
        """张伟, 于海 and Emily Carter: the records the README and the tests talk about."""
        zhang = CustomerSpec(
            self._key(),
            {
                "family_name": "张", "given_name": "伟",
                "phones": ["138 0013 8000"], "emails": ["zhang.wei@example.cn"],
                "city": "杭州", "province": "浙江省", "country": "CN", "postcode": "310012",
                "street": "西湖区文三路 478 号", "timezone": "Asia/Shanghai",
                "language": "zh-CN", "birthday": "1982-06-18",
                "job_title": "采购经理", "industry": "软件和信息技术服务",
                "lifecycle_stage": "active", "tier_code": "vip", "category_code": "enterprise",
                "lifetime_value": "268500.00",
                "custom_attributes": {"member_no": "M00000001"},
                "marketing_opt_in": {"email": True, "phone": False},
                "preferred_channel": "email", "source": "trade_show",
                "tags": ["老客户", "vip-event", "企业采购"],
                "notes": "云帆科技采购负责人，每季度批量采购办公设备；发票需开增值税专用发票。",
            },
            YUNFAN, "zhao.lei", self.now - timedelta(days=1000),
        )
        yu = CustomerSpec(
            self._key(),
            {
                "family_name": "于", "given_name": "海",
                "phones": ["+86 139 0571 8866"], "emails": ["yu.hai@example.cn"],
                "city": "杭州", "province": "浙江省", "country": "CN",
                "timezone": "Asia/Shanghai", "language": "zh-CN",
                "birthday": self.birthday(soon=True).replace(year=1968).isoformat(),
                "lifecycle_stage": "active", "tier_code": "gold", "category_code": "retail",
                "lifetime_value": "56800.00", "preferred_channel": "phone",
                "custom_attributes": {"member_no": "M00000002"},
                "marketing_opt_in": {"phone": True},
                "source": "phone_inbound", "tags": ["老客户"],
                "notes": "usual table by the window, 靠窗的老位置",
            },
            None, "zhao.lei", self.now - timedelta(days=900),
        )
        emily = CustomerSpec(
            self._key(),
            {
                "given_name": "Emily", "family_name": "Carter",
                "phones": ["+44 7911 123456"], "emails": ["emily.carter@example.com"],
                "city": "London", "province": "England", "country": "GB", "postcode": "EC2V 7HH",
                "timezone": "Europe/London", "language": "en", "birthday": "1990-03-14",
                "lifecycle_stage": "active", "tier_code": "silver", "category_code": "retail",
                "lifetime_value": "7420.50", "preferred_channel": "email",
                "custom_attributes": {"member_no": "M00000003"},
                "marketing_opt_in": {"email": True}, "source": "website",
                "tags": ["newsletter"],
            },
            None, "sarah.jones", self.now - timedelta(days=400),
        )
        self.emails.update({"zhang.wei@example.cn", "yu.hai@example.cn",
                            "emily.carter@example.com"})
        self.phones.update({"+8613800138000", "+8613905718866", "+447911123456"})
        return [zhang, yu, emily]

    def customers(self, orgs: list[OrganizationSpec], count: int) -> list[CustomerSpec]:
        """The fixed records, then random ones: about 70 % Chinese names, 30 % English."""
        result = self.fixed_customers()
        english = round(count * 0.3) - 1
        chinese = count - len(result) - english
        # A handful of 张 guarantees a meaningful search for "张" whatever the seed.
        for i in range(chinese):
            result.append(self.chinese_customer(orgs, family="张" if i < 4 else None))
        for _ in range(english):
            result.append(self.english_customer(orgs))
        # Interleave, so the newest records are not all of one kind.
        head, tail = result[:3], result[3:]
        self.rng.shuffle(tail)
        return head + tail

    # -- conversations ---------------------------------------------------

    def conversation(
        self,
        customer: CustomerSpec,
        scenario: _Scenario,
        channel: Channel,
        status: TicketStatus,
        *,
        started_at: datetime | None = None,
        assignee: str | None = None,
        team: str | None = None,
        priority: TicketPriority | None = None,
    ) -> ConversationSpec:
        """One conversation of ``scenario`` with ``customer``, as far as ``status`` goes."""
        rng = self.rng
        fields = customer.fields
        language = scenario.language
        if started_at is None:
            low, high = _STATUS_AGE_HOURS[status]
            age_hours = (self.now - customer.created_at).total_seconds() / 3600 - 24
            started_at = self.ago(min(low, age_hours), min(high, age_hours))
        context = {
            "order": f"DD{started_at:%Y%m%d}{rng.randrange(10**4):04d}",
            "invoice": f"INV-{started_at:%Y}-{rng.randrange(10**4):04d}",
            "tracking": f"SF{rng.randrange(10**12):012d}",
            "org": customer.organization or ("我们公司" if language == "zh-CN" else "our company"),
            "given": fields.get("given_name") or "",
        }
        subject = scenario.subject.format(**context)
        lines = [(d, t.format(**context)) for d, t in scenario.messages]
        if status == TicketStatus.NEW:
            lines = [lines[0], (IN, _FOLLOW_UP[language])]
        elif status == TicketStatus.OPEN:
            lines = lines[:3] if len(lines) >= 3 else lines
        elif status == TicketStatus.PENDING:
            outbound_ends = [i + 1 for i, (d, _) in enumerate(lines) if d == OUT]
            lines = lines[: max(n for n in outbound_ends if n <= 4)]
        # Gaps: replies come within hours, customers answer within a day; scaled to fit.
        gaps = [0.0] + [
            rng.uniform(5, 240) if d == OUT else rng.uniform(10, 1200) for d, _ in lines[1:]
        ]
        room = (self.now - started_at).total_seconds() / 60 - 1
        if sum(gaps) > room:
            gaps = [g * room / sum(gaps) for g in gaps]
        moments: list[datetime] = []
        elapsed = 0.0
        for gap in gaps:
            elapsed += gap
            moments.append((started_at + timedelta(minutes=elapsed)).replace(microsecond=0))

        handles = self._thread_handles(customer, channel)
        interactions = []
        for n, ((direction, text), moment) in enumerate(zip(lines, moments, strict=True)):
            interactions.append(
                self._interaction(
                    customer, channel, direction, text, moment, subject, n, handles, language
                )
            )
        last = moments[-1]

        priority = priority or scenario.priority
        if customer.fields.get("tier_code") == "vip" and priority == TicketPriority.NORMAL:
            priority = TicketPriority.HIGH
        if team is None:
            if language == "en":
                team = TEAM_ENGLISH
            elif customer.fields.get("tier_code") == "vip":
                team = TEAM_VIP
            else:
                team = scenario.team
        if assignee is None and status != TicketStatus.NEW:
            members = [
                a.login for a in DEMO_AGENTS if team in a.teams and a.role == AgentRole.AGENT
            ]
            assignee = rng.choice(members)
        first_out = next((i.occurred_at for i in interactions if i.direction == OUT), None)
        resolved_at = closed_at = None
        if status in {TicketStatus.RESOLVED, TicketStatus.CLOSED}:
            resolved_at = min(last + timedelta(minutes=rng.randint(10, 120)), self.now)
        if status == TicketStatus.CLOSED and resolved_at is not None:
            closed_at = min(resolved_at + timedelta(days=rng.randint(1, 3)), self.now)
        tags = list(scenario.tags)
        complained = scenario.category == TicketCategory.COMPLAINT
        if complained and "投诉过" not in fields.setdefault("tags", []):
            fields["tags"].append("投诉过")
        ticket = TicketSpec(
            subject=subject,
            category=scenario.category,
            priority=priority,
            status=status,
            team=team,
            assignee=assignee,
            tags=tags,
            description=lines[0][1],
            created_at=started_at,
            updated_at=closed_at or resolved_at or last,
            first_response_due_at=started_at + _FIRST_RESPONSE_SLA[priority],
            resolution_due_at=started_at + _RESOLUTION_SLA[priority],
            first_responded_at=first_out,
            resolved_at=resolved_at,
            closed_at=closed_at,
        )
        done = status in {TicketStatus.RESOLVED, TicketStatus.CLOSED}
        return ConversationSpec(
            customer=customer.key,
            channel=channel,
            subject=subject,
            thread_key=handles["thread"],
            status=ConversationStatus.CLOSED if done else ConversationStatus.OPEN,
            started_at=started_at,
            last_message_at=last,
            closed_at=resolved_at if done else None,
            interactions=interactions,
            ticket=ticket,
        )

    def _thread_handles(self, customer: CustomerSpec, channel: Channel) -> dict[str, Any]:
        """The channel's own ids for a thread; Telegram and web chat become identities."""
        rng = self.rng
        fields = customer.fields
        if channel == TELEGRAM:
            chat_id = str(rng.randrange(10**8, 10**10))
            fields.setdefault("identities", []).append({"kind": "telegram", "value": chat_id})
            return {"thread": chat_id, "update": rng.randrange(10**8, 9 * 10**8)}
        if channel == WEBCHAT:
            visitor = f"v-{rng.getrandbits(48):012x}"
            fields.setdefault("identities", []).append({"kind": "webchat", "value": visitor})
            return {"thread": visitor}
        if channel == PHONE:
            return {"thread": f"CA{rng.getrandbits(128):032x}"}
        return {"thread": None}

    def _interaction(
        self,
        customer: CustomerSpec,
        channel: Channel,
        direction: Direction,
        text: str,
        moment: datetime,
        subject: str,
        n: int,
        handles: dict[str, Any],
        language: str,
    ) -> InteractionSpec:
        rng = self.rng
        kind = InteractionKind.MESSAGE
        meta: dict[str, Any] = {}
        external_id: str | None = None
        line_subject: str | None = None
        if channel == EMAIL:
            address = customer.emails[0]
            domain = address.split("@", 1)[1] if direction == IN else "demo.example.cn"
            message_id = f"<{moment:%Y%m%d%H%M%S}.{rng.getrandbits(32):08x}@{domain}>"
            if handles["thread"] is None:
                handles["thread"] = message_id
            service = _SERVICE_ADDRESS[language]
            meta = {"from": address, "to": service} if direction == IN else {
                "from": service, "to": address
            }
            meta["message_id"] = message_id
            prefix = "" if n == 0 else ("回复：" if language == "zh-CN" else "Re: ")
            line_subject = prefix + subject
            external_id = f"email:{message_id}" if direction == IN else None
        elif channel == TELEGRAM:
            if direction == IN:
                handles["update"] += rng.randint(1, 50)
                external_id = f"telegram:{handles['update']}"
            meta = {"chat_id": handles["thread"]}
        elif channel == WEBCHAT:
            if direction == IN:
                external_id = f"webchat:{handles['thread']}:{rng.getrandbits(64):016x}"
            meta = {"visitor_id": handles["thread"]}
        elif channel == PHONE:
            kind = InteractionKind.CALL
            call_sid = handles["thread"] if n == 0 else f"CA{rng.getrandbits(128):032x}"
            meta = {"call_sid": call_sid, "duration_seconds": rng.randint(45, 600)}
            if direction == IN:
                external_id = f"voice:{call_sid}:completed"
        return InteractionSpec(direction, kind, text, line_subject, moment, external_id, meta)

    def conversations(self, customers: list[CustomerSpec], count: int) -> list[ConversationSpec]:
        """The fixed conversations of 张伟, 于海 and Emily Carter, then random ones."""
        rng = self.rng
        zhang, yu, emily = customers[0], customers[1], customers[2]
        invoice = next(s for s in _ZH_SCENARIOS if s.key == "invoice")
        fault_en = next(s for s in _EN_SCENARIOS if s.key == "fault_en")
        result = [
            self.conversation(
                zhang, invoice, EMAIL, TicketStatus.PENDING,
                started_at=self.ago(30, 54), assignee="zhao.lei", team=TEAM_VIP,
            ),
            self.conversation(
                yu, _YU_HAI_BOOKING, PHONE, TicketStatus.RESOLVED,
                started_at=self.ago(96, 120), assignee="zhao.lei", team=TEAM_VIP,
            ),
            self.conversation(
                emily, fault_en, EMAIL, TicketStatus.OPEN,
                started_at=self.ago(18, 26), assignee="sarah.jones", team=TEAM_ENGLISH,
            ),
        ]
        used = {zhang.key, yu.key, emily.key}
        statuses = _spread(_STATUS_WEIGHTS, count - len(result))
        rng.shuffle(statuses)
        for i, status in enumerate(statuses):
            language = "en" if i % 3 == 0 else "zh-CN"
            scenario = rng.choice(_EN_SCENARIOS if language == "en" else _ZH_SCENARIOS)
            candidates = [
                c for c in customers
                if c.key not in used
                and c.fields.get("language") == language
                and c.fields.get("lifecycle_stage") in {"active", "prospect", "dormant"}
                and (self.now - c.created_at).days >= 7
                and any(self._reachable(c, ch) for ch in scenario.channels)
            ]
            customer = rng.choice(candidates)
            used.add(customer.key)
            channel = rng.choice([ch for ch in scenario.channels if self._reachable(customer, ch)])
            result.append(self.conversation(customer, scenario, channel, status))
        result.sort(key=lambda c: c.started_at)
        return result

    @staticmethod
    def _reachable(customer: CustomerSpec, channel: Channel) -> bool:
        if channel == EMAIL:
            return bool(customer.emails)
        if channel == PHONE:
            return bool(customer.phones)
        return True


def build_dataset(
    *,
    seed: int = DEMO_SEED,
    now: datetime | None = None,
    customers: int = DEMO_CUSTOMER_COUNT,
    conversations: int = DEMO_CONVERSATION_COUNT,
) -> DemoDataset:
    """Describe the whole demo data set; the same seed and ``now`` give the same result."""
    if customers < 3 or conversations < 3:
        raise ValueError("the demo needs at least 3 customers and 3 conversations")
    now = now or utcnow()
    generator = _Generator(seed, now)
    organizations = generator.organizations()
    people = generator.customers(organizations, customers)
    threads = generator.conversations(people, conversations)
    return DemoDataset(
        teams=list(DEMO_TEAMS),
        agents=list(DEMO_AGENTS),
        categories=list(DEMO_CATEGORIES),
        tiers=list(DEMO_TIERS),
        organizations=organizations,
        customers=people,
        conversations=threads,
        seed=seed,
    )


# ---------------------------------------------------------------------------
# Loading.
# ---------------------------------------------------------------------------


@dataclass
class DemoSummary:
    """What ``load_demo`` did: counts of the rows it created, or why it did nothing."""

    loaded: bool
    existing_customers: int = 0
    """Customers that were in the database before the load."""
    teams: int = 0
    agents: int = 0
    categories: int = 0
    tiers: int = 0
    organizations: int = 0
    customers: int = 0
    skipped_customers: int = 0
    """Demo customers not created because one of their handles already belonged to someone."""
    conversations: int = 0
    interactions: int = 0
    tickets: int = 0
    orders: int = 0
    opportunities: int = 0
    kb_articles: int = 0
    """Knowledge-base articles of the self-service bot (zh-CN and en)."""
    bot_sessions: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        """A human report of the load, one line each."""
        if not self.loaded:
            return [
                f"the database already has {self.existing_customers} customers; "
                "nothing loaded (use --force to add the demo data anyway)"
            ]
        lines = [
            f"demo data loaded in {self.seconds:.1f} s:",
            f"  {self.teams} teams, {self.agents} agents, {self.categories} customer categories, "
            f"{self.tiers} tiers, {self.organizations} organizations",
            f"  {self.customers} customers, {self.conversations} conversations with "
            f"{self.interactions} interactions, {self.tickets} tickets",
            f"  {self.orders} orders, {self.opportunities} sales opportunities",
        ]
        if self.kb_articles:
            lines.append(f"  {self.kb_articles} knowledge-base articles, {self.bot_sessions} "
                         "bot sessions for the metrics page")
        if self.skipped_customers:
            lines.append(
                f"  {self.skipped_customers} demo customers skipped: their e-mail or phone "
                "already belongs to a customer"
            )
        return lines


def login_lines() -> list[str]:
    """How to sign in to the demo console."""
    agents = ", ".join(a.login for a in DEMO_AGENTS if a.login != DEMO_ADMIN_LOGIN)
    return [
        f"sign in as {DEMO_ADMIN_LOGIN} / {DEMO_ADMIN_PASSWORD} (administrator)",
        f"agents ({agents}) / {DEMO_AGENT_PASSWORD}",
        f"read-only API token: {DEMO_API_TOKEN}  (curl -H 'Authorization: Bearer "
        f"{DEMO_API_TOKEN}' http://127.0.0.1:8080/api/v1/tickets?open=true)",
    ]


async def count_customers(session: AsyncSession) -> int:
    """How many customer rows exist, deleted ones included."""
    return await session.scalar(select(func.count()).select_from(Customer)) or 0


async def load_demo(
    database: Database,
    *,
    region: str = "CN",
    force: bool = False,
    seed: int = DEMO_SEED,
    now: datetime | None = None,
) -> DemoSummary:
    """Load the demo data set in one transaction; a database with customers is left alone.

    ``region`` is the default phone region handed to ``create_customer`` (every demo
    number carries its country code, so any region reads them the same). With
    ``force`` the data set is added to a database that already has customers: teams,
    agents and organizations that exist are reused, and demo customers whose handles
    are taken are skipped together with their conversations.
    """
    started = time.perf_counter()
    now = now or utcnow()
    async with database.transaction() as session:
        existing = await count_customers(session)
        if existing and not force:
            return DemoSummary(
                loaded=False, existing_customers=existing,
                seconds=time.perf_counter() - started,
            )
        summary = DemoSummary(loaded=True, existing_customers=existing)
        await write_dataset(session, build_dataset(seed=seed, now=now), summary, region=region,
                            now=now)
        await _write_api_token(session)
    summary.seconds = time.perf_counter() - started
    return summary


async def _write_api_token(session: AsyncSession) -> None:
    """The demo's read-only API token (kept when it exists)."""
    from crm_core.models import ApiToken
    from crm_core.services.api_tokens import hash_token

    digest = hash_token(DEMO_API_TOKEN)
    if await session.scalar(select(ApiToken.id).where(ApiToken.token_hash == digest)) is None:
        session.add(ApiToken(name="Demo (read-only)", token_hash=digest,
                             prefix=DEMO_API_TOKEN[:12], scopes=DEMO_API_SCOPES,
                             created_by="demo"))


async def write_dataset(
    session: AsyncSession, dataset: DemoDataset, summary: DemoSummary, *, region: str,
    now: datetime | None = None,
) -> None:
    """Write a data set into the caller's transaction, counting what is created."""
    # Held for the whole load: the session maps rows weakly, and create_customer looks up
    # the tier and category of every customer by primary key.
    classes = await _write_classes(session, dataset, summary)
    teams = await _write_teams(session, dataset, summary)
    agents = await _write_agents(session, dataset, summary, teams)
    organizations = await _write_organizations(session, dataset, summary)
    customers = await _write_customers(
        session, dataset, summary, organizations, agents, region=region
    )
    await _write_conversations(session, dataset, summary, customers, agents, teams)
    if customers:
        # Sales, membership, CSAT and churn for the reports (contact_center/demo_sales.py).
        tickets = list(await session.scalars(select(Ticket).order_by(Ticket.id)))
        sold = await write_sales_demo(session, list(customers.values()), list(agents.values()),
                                      tickets, now=now or utcnow(), seed=dataset.seed)
        summary.orders, summary.opportunities = sold.orders, sold.opportunities
    await _write_bot(session, summary, now=utcnow())
    del classes
    audit.record(
        session,
        actor=DEMO_ACTOR,
        action="load_demo",
        entity_type="demo",
        entity_id=dataset.seed,
        after={k: v for k, v in asdict(summary).items() if k not in {"loaded", "seconds"}},
    )


async def _write_bot(session: AsyncSession, summary: DemoSummary, *, now: datetime) -> None:
    """The bot's knowledge base (once) and a few finished bot sessions for the metrics."""
    from contact_center.demo_knowledge import ARTICLES

    if await session.scalar(select(func.count(KnowledgeArticle.id))):
        return
    for item in ARTICLES:
        session.add(KnowledgeArticle(
            language=item["language"], title=item["title"], questions=item["questions"],
            keywords=item["keywords"], answer=item["answer"], enabled=True,
            created_at=now, updated_at=now))
        summary.kb_articles += 1
    samples: list[tuple[str, str, str, str | None, list[str], dict[str, str]]] = [
        ("webchat", "ended", "goodbye", "answered",
         ["menu", "question", "more", "survey_rating", "survey", "goodbye"], {"rating": "5"}),
        ("telegram", "ended", "goodbye", "ticket",
         ["menu", "order_number", "order_email", "order_ticket", "more", "goodbye"],
         {"order_number": "20260315", "email": "chen.jing@example.cn"}),
        ("webchat", "ended", "goodbye", "answered", ["menu", "question", "more", "goodbye"],
         {}),
        ("phone", "handoff", "handoff", "handoff", ["language", "menu", "question", "unsure",
                                                   "handoff"], {}),
        ("telegram", "bot", "order_email", None, ["menu", "order_number", "order_email"],
         {"order_number": "20260301"}),
        ("webchat", "bot", "question", None, ["menu", "question"], {}),
    ]
    for i, (channel, status, node, outcome, path, fields) in enumerate(samples):
        at = now - timedelta(hours=6 + i * 5)
        session.add(BotSession(
            channel=channel, session_key=f"demo:{i}", flow="bot", node=node,
            language="zh-CN" if i % 2 == 0 else "en", status=status, outcome=outcome,
            fields=fields, path=path, transcript=[], created_at=at, updated_at=at,
            handoff_at=at if status == "handoff" else None,
            handoff_team="一线客服 Front line" if status == "handoff" else None))
        summary.bot_sessions += 1
    for question, language, times in (("你们卖二手吗", "zh-CN", 3),
                                      ("is there a student discount", "en", 2),
                                      ("可以开发票到公司邮箱吗？抬头是外企", "zh-CN", 1)):
        for _ in range(times):
            session.add(UnansweredQuestion(channel="webchat", language=language,
                                           question=question, normalized=question,
                                           score=20.0, created_at=now - timedelta(hours=3)))


async def _write_classes(
    session: AsyncSession, dataset: DemoDataset, summary: DemoSummary
) -> list[CustomerCategory | CustomerTier]:
    rows: list[CustomerCategory | CustomerTier] = []
    for category in dataset.categories:
        row = await session.get(CustomerCategory, category.code)
        if row is None:
            row = CustomerCategory(
                code=category.code, name=category.name, name_zh=category.name_zh,
                description=category.description,
            )
            session.add(row)
            summary.categories += 1
        rows.append(row)
    for tier in dataset.tiers:
        tier_row = await session.get(CustomerTier, tier.code)
        if tier_row is None:
            tier_row = CustomerTier(
                code=tier.code, name=tier.name, name_zh=tier.name_zh, rank=tier.rank
            )
            session.add(tier_row)
            summary.tiers += 1
        rows.append(tier_row)
    await session.flush()
    return rows


async def _write_teams(
    session: AsyncSession, dataset: DemoDataset, summary: DemoSummary
) -> dict[str, Team]:
    teams: dict[str, Team] = {}
    for spec in dataset.teams:
        team = await session.scalar(select(Team).where(Team.name == spec.name))
        if team is None:
            team = await create_team(
                session, spec.name, actor=DEMO_ACTOR, description=spec.description
            )
            summary.teams += 1
        teams[spec.name] = team
    return teams


async def _write_agents(
    session: AsyncSession, dataset: DemoDataset, summary: DemoSummary, teams: dict[str, Team]
) -> dict[str, Agent]:
    agents: dict[str, Agent] = {}
    for spec in dataset.agents:
        agent = await session.scalar(select(Agent).where(Agent.login == spec.login))
        if agent is None:
            agent = await create_agent(
                session,
                login=spec.login,
                display_name=spec.display_name,
                password=spec.password,
                actor=DEMO_ACTOR,
                role=spec.role,
                email=spec.email,
                skills=spec.skills,
                languages=spec.languages,
                capacity=spec.capacity,
                availability=spec.availability,
                teams=[teams[name] for name in spec.teams],
            )
            summary.agents += 1
        agents[spec.login] = agent
    return agents


async def _write_organizations(
    session: AsyncSession, dataset: DemoDataset, summary: DemoSummary
) -> dict[str, Organization]:
    organizations: dict[str, Organization] = {}
    for spec in dataset.organizations:
        org = await find_organization(session, spec.name)
        if org is None:
            org = await get_or_create_organization(
                session, spec.name, actor=DEMO_ACTOR, industry=spec.industry
            )
            org.website, org.phone, org.address = spec.website, spec.phone, spec.address
            summary.organizations += 1
        organizations[spec.name] = org
    await session.flush()
    return organizations


async def _write_customers(
    session: AsyncSession,
    dataset: DemoDataset,
    summary: DemoSummary,
    organizations: dict[str, Organization],
    agents: dict[str, Agent],
    *,
    region: str,
) -> dict[str, Customer]:
    created: dict[str, Customer] = {}
    for spec in dataset.customers:
        data = dict(spec.fields)
        if spec.organization is not None:
            data["organization_id"] = organizations[spec.organization].id
        if spec.owner is not None:
            data["owner_agent_id"] = agents[spec.owner].id
        try:
            customer = await create_customer(session, data, actor=DEMO_ACTOR, region=region)
        except ConflictError:
            summary.skipped_customers += 1
            continue
        created[spec.key] = customer
        summary.customers += 1
    await session.flush()
    if created:
        # Back-date the records (and their first lifecycle step) to when they "joined";
        # a Core executemany, so ``updated_at`` does not jump to now.
        by_id = [
            {"cid": created[spec.key].id, "new_at": spec.created_at}
            for spec in dataset.customers
            if spec.key in created
        ]
        customers = Customer.__table__
        transitions = LifecycleTransition.__table__
        await session.execute(
            customers.update()
            .where(customers.c.id == bindparam("cid"))
            .values(
                created_at=bindparam("new_at", type_=customers.c.created_at.type),
                updated_at=bindparam("new_at", type_=customers.c.updated_at.type),
            ),
            by_id,
        )
        await session.execute(
            transitions.update()
            .where(transitions.c.customer_id == bindparam("cid"))
            .values(at=bindparam("new_at", type_=transitions.c.at.type)),
            by_id,
        )
        for spec in dataset.customers:
            if spec.key in created:
                set_committed_value(created[spec.key], "created_at", spec.created_at)
                set_committed_value(created[spec.key], "updated_at", spec.created_at)
    return created


async def _write_conversations(
    session: AsyncSession,
    dataset: DemoDataset,
    summary: DemoSummary,
    customers: dict[str, Customer],
    agents: dict[str, Agent],
    teams: dict[str, Team],
) -> None:
    tickets: list[Ticket] = []
    for spec in dataset.conversations:
        customer = customers.get(spec.customer)
        if customer is None:
            continue
        t = spec.ticket
        assignee_id = agents[t.assignee].id if t.assignee else None
        team_id = teams[t.team].id
        conversation = Conversation(
            customer_id=customer.id,
            channel=spec.channel,
            status=spec.status,
            subject=spec.subject,
            thread_key=spec.thread_key,
            assignee_id=assignee_id,
            team_id=team_id,
            last_message_at=spec.last_message_at,
            created_at=spec.started_at,
            updated_at=t.updated_at,
            closed_at=spec.closed_at,
        )
        session.add(conversation)
        await session.flush()
        for line in spec.interactions:
            session.add(
                Interaction(
                    conversation_id=conversation.id,
                    customer_id=customer.id,
                    channel=spec.channel,
                    direction=line.direction,
                    kind=line.kind,
                    subject=line.subject,
                    text=line.text,
                    external_id=line.external_id,
                    agent_id=assignee_id if line.direction == OUT else None,
                    meta=line.meta,
                    occurred_at=line.occurred_at,
                    created_at=line.occurred_at,
                )
            )
            summary.interactions += 1
        ticket = Ticket(
            subject=t.subject,
            category=t.category,
            priority=t.priority,
            status=t.status,
            customer_id=customer.id,
            conversation_id=conversation.id,
            assignee_id=assignee_id,
            team_id=team_id,
            tags=list(t.tags),
            description=t.description,
            first_response_due_at=t.first_response_due_at,
            resolution_due_at=t.resolution_due_at,
            first_responded_at=t.first_responded_at,
            resolved_at=t.resolved_at,
            closed_at=t.closed_at,
            created_at=t.created_at,
            updated_at=t.updated_at,
        )
        session.add(ticket)
        tickets.append(ticket)
        summary.conversations += 1
    await session.flush()
    if tickets:
        # Numbers come from ids, known only now; Core executemany keeps ``updated_at``.
        table = Ticket.__table__
        await session.execute(
            table.update()
            .where(table.c.id == bindparam("tid"))
            .values(
                number=bindparam("num"),
                updated_at=bindparam("upd", type_=table.c.updated_at.type),
            ),
            [
                {"tid": ticket.id, "num": ticket_number(ticket.id), "upd": ticket.updated_at}
                for ticket in tickets
            ],
        )
        for ticket in tickets:
            set_committed_value(ticket, "number", ticket_number(ticket.id))
        summary.tickets = len(tickets)
