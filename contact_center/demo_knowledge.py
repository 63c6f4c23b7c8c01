"""The demo knowledge base: ten topics, each in Simplified Chinese and English.

``make run`` loads these (contact_center/demo.py); the knowledge-base tests measure
matching precision and recall against them (tests/fixtures/kb/questions.json).
"""

from __future__ import annotations

from typing import Any

ARTICLES: list[dict[str, Any]] = [
    {"key": "refund", "language": "zh-CN", "title": "退款需要多久到账？",
     "questions": "怎么申请退款\n退款什么时候到账\n钱多久能退回来",
     "keywords": "退款",
     "answer": "退货验收后 1-3 个工作日内原路退款；银行卡到账一般需要 3-7 个工作日。"},
    {"key": "refund", "language": "en", "title": "How long does a refund take?",
     "questions": "How do I get a refund\nWhen will my refund arrive\nI want my money back",
     "keywords": "refund",
     "answer": "We refund to the original payment method within 1-3 business days of "
               "receiving the return; banks usually take 3-7 business days more."},
    {"key": "shipping", "language": "zh-CN", "title": "下单后多久发货？",
     "questions": "什么时候发货\n多久能送到\n配送需要几天",
     "keywords": "发货",
     "answer": "现货商品下单后 24 小时内发货，江浙沪一般次日送达，其他地区 2-4 天。"},
    {"key": "shipping", "language": "en", "title": "When will my order ship?",
     "questions": "How long is delivery\nWhen do you ship orders\nHow many days until it arrives",
     "keywords": "ship",
     "answer": "In-stock items ship within 24 hours; delivery takes 1-4 days in mainland "
               "China and 5-10 days abroad."},
    {"key": "tracking", "language": "zh-CN", "title": "如何查询物流？",
     "questions": "我的快递到哪了\n怎么查物流\n包裹在哪里",
     "keywords": "物流",
     "answer": "发货后您会收到含运单号的短信，也可以在“我的订单”里点“查看物流”实时跟踪。"},
    {"key": "tracking", "language": "en", "title": "How do I track my parcel?",
     "questions": "Where is my package\nTrack my order\nI need the tracking number",
     "keywords": "track",
     "answer": "Once shipped you get a text with the tracking number; \"My orders\" → "
               "\"Track\" shows where the parcel is."},
    {"key": "returns", "language": "zh-CN", "title": "怎么退货？",
     "questions": "七天无理由退货怎么操作\n商品不想要了可以退吗\n退货流程",
     "keywords": "退货",
     "answer": "签收后 7 天内可无理由退货：在“我的订单”申请退货，按提示寄回即可，"
               "质量问题运费由我们承担。"},
    {"key": "returns", "language": "en", "title": "How do I return an item?",
     "questions": "What is your return policy\nCan I send it back\nI don't want this product "
                  "any more",
     "keywords": "return",
     "answer": "You can return items within 7 days of delivery: request a return in "
               "\"My orders\" and send it back; we pay the postage for faulty goods."},
    {"key": "invoice", "language": "zh-CN", "title": "如何开发票？",
     "questions": "可以开增值税专用发票吗\n发票怎么开\n电子发票在哪下载",
     "keywords": "发票",
     "answer": "订单完成后在“我的订单 → 申请发票”填写抬头和税号，电子发票 1 个工作日内"
               "发送到您的邮箱；专票请联系客服。"},
    {"key": "invoice", "language": "en", "title": "How do I get an invoice?",
     "questions": "Can I have a VAT invoice\nI need a receipt for my order\nWhere do I "
                  "download the invoice",
     "keywords": "invoice",
     "answer": "After the order completes, use \"My orders\" → \"Request invoice\"; the "
               "e-invoice (fapiao) reaches your e-mail within one business day."},
    {"key": "address", "language": "zh-CN", "title": "如何修改收货地址？",
     "questions": "地址填错了怎么办\n能改收货地址吗\n下单后修改地址",
     "keywords": "地址",
     "answer": "订单发货前可在“我的订单 → 修改地址”自行修改；已发货的订单请联系快递改派。"},
    {"key": "address", "language": "en", "title": "How do I change my delivery address?",
     "questions": "I entered the wrong address\nCan I change the shipping address\nUpdate "
                  "address after ordering",
     "keywords": "address",
     "answer": "Before the order ships you can change the address in \"My orders\" → "
               "\"Change address\"; after that, ask the courier to redirect it."},
    {"key": "hours", "language": "zh-CN", "title": "客服工作时间是什么时候？",
     "questions": "你们几点上班\n周末有人工客服吗\n客服什么时候在线",
     "keywords": "工作时间",
     "answer": "人工客服周一至周五 9:00-18:00（法定节假日除外），其他时间机器人随时为您服务。"},
    {"key": "hours", "language": "en", "title": "What are your opening hours?",
     "questions": "When are you open\nAre agents available at the weekend\nWhat time do you "
                  "close",
     "keywords": "opening hours",
     "answer": "Our agents work Monday to Friday, 9 a.m. to 6 p.m. China time, except public "
               "holidays; this bot answers at any time."},
    {"key": "payment", "language": "zh-CN", "title": "支持哪些支付方式？",
     "questions": "可以用支付宝吗\n能用信用卡付款吗\n有哪些付款方式",
     "keywords": "支付方式",
     "answer": "支持支付宝、微信支付、银联卡和 Visa/Mastercard 信用卡。"},
    {"key": "payment", "language": "en", "title": "Which payment methods do you accept?",
     "questions": "Can I pay with a credit card\nDo you take Alipay\nWhat payment options "
                  "are there",
     "keywords": "payment methods",
     "answer": "We accept Alipay, WeChat Pay, UnionPay and Visa/Mastercard credit cards."},
    {"key": "password", "language": "zh-CN", "title": "忘记密码怎么办？",
     "questions": "登录不了\n怎么重置密码\n密码忘了",
     "keywords": "密码",
     "answer": "在登录页点“忘记密码”，用注册手机号收验证码即可重置密码。"},
    {"key": "password", "language": "en", "title": "I forgot my password",
     "questions": "How do I reset my password\nI can't log in\nLost my password",
     "keywords": "password",
     "answer": "On the sign-in page choose \"Forgot password\" and confirm with the code "
               "sent to your phone to set a new one."},
    {"key": "warranty", "language": "zh-CN", "title": "商品保修多久？",
     "questions": "产品坏了怎么保修\n保修期多长\n质量问题可以维修吗",
     "keywords": "保修",
     "answer": "电器类商品全国联保一年，凭订单号即可申请保修，质量问题 15 天内可换新。"},
    {"key": "warranty", "language": "en", "title": "What does the warranty cover?",
     "questions": "My product is broken\nHow long is the warranty\nCan you repair a faulty "
                  "item",
     "keywords": "warranty",
     "answer": "Electronics carry a one-year warranty; quote your order number to claim it. "
               "Faulty items are replaced within 15 days."},
]
"""Twenty articles (``key`` is the topic, shared by the two languages)."""
