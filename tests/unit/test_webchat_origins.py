"""Which pages may open a chat socket."""

from __future__ import annotations

import pytest

from channels.webchat.origins import OriginPolicy, invalid_origins, normalize_origin


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://shop.example.cn", "https://shop.example.cn"),
        ("HTTPS://Shop.Example.CN", "https://shop.example.cn"),
        ("https://shop.example.cn:443", "https://shop.example.cn"),
        ("http://shop.example.cn:80", "http://shop.example.cn"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("https://shop.example.cn/", "https://shop.example.cn"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", None),
        ("", None),
        ("file://", None),
        ("ftp://shop.example.cn", None),
        ("https://shop.example.cn/path", None),
        ("https://user:pw@shop.example.cn", None),
        ("https://shop.example.cn?x=1", None),
        ("https://shop.example.cn:99999", None),
        ("shop.example.cn", None),
    ],
)
def test_normalize_origin(origin: str, normalized: str | None) -> None:
    assert normalize_origin(origin) == normalized


def test_allowed_list() -> None:
    policy = OriginPolicy(["https://shop.example.cn", "http://localhost:8080"])
    assert policy.allows("https://shop.example.cn")
    assert policy.allows("https://SHOP.example.cn:443")
    assert policy.allows("http://localhost:8080")
    assert not policy.allows("http://localhost:8081")
    assert not policy.allows("http://shop.example.cn")  # another scheme is another origin
    assert not policy.allows("https://shop.example.cn.evil.com")
    assert not policy.allows("https://evil.com")
    assert not policy.allows("null")
    assert not policy.allows(None)


def test_star_allows_any() -> None:
    policy = OriginPolicy(["*"])
    assert policy.allows("https://anything.example")
    assert policy.allows(None)


def test_empty_list_allows_none() -> None:
    assert not OriginPolicy([]).allows("http://127.0.0.1:8080")


def test_invalid_origins_for_settings() -> None:
    assert invalid_origins(["*", "https://a.example", "a.example", "https://a.example/x"]) == [
        "a.example", "https://a.example/x"]


def test_settings_refuse_a_bad_origin() -> None:
    import pydantic

    from contact_center.settings import WebchatSettings

    assert WebchatSettings(allowed_origins=["https://shop.example.cn", "*"]).allowed_origins
    with pytest.raises(pydantic.ValidationError, match=r"shop\.example\.cn/chat"):
        WebchatSettings(allowed_origins=["https://shop.example.cn/chat"])
