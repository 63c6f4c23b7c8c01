"""``/api/docs``: the API reference rendered on the server from the OpenAPI document.

No script and no CDN: plain HTML with one local style sheet, so it works offline and
under the strict Content-Security-Policy of the console.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from aiohttp import web

DOCS_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'")
CSS = """body{font-family:system-ui,"WenQuanYi Micro Hei",sans-serif;margin:2rem auto;
max-width:60rem;color:#1f2328;padding:0 1rem}code,pre{font-family:ui-monospace,monospace}
pre{background:#f6f8fa;padding:.75rem;overflow:auto;font-size:.85rem;border-radius:4px}
.op{border:1px solid #d0d7de;border-radius:6px;margin:1rem 0;padding:.5rem 1rem}
.method{font-weight:700;text-transform:uppercase;display:inline-block;min-width:4.5rem}
.get{color:#0969da}.post{color:#1a7f37}.patch{color:#9a6700}.delete{color:#cf222e}
table{border-collapse:collapse}td,th{border-bottom:1px solid #eaeef2;padding:.2rem .6rem;
text-align:left;vertical-align:top}nav a{margin-right:1rem}details{margin:.4rem 0}"""


def _schema(ref: dict[str, Any], spec: dict[str, Any]) -> str:
    if "$ref" in ref:
        name = ref["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}"><code>{escape(name)}</code></a>'
    return f"<code>{escape(json.dumps(ref, ensure_ascii=False))}</code>"


def render(spec: dict[str, Any]) -> str:
    """The whole reference page."""
    info = spec["info"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in spec["paths"].items():
        for method, op in item.items():
            by_tag.setdefault(op["tags"][0], []).append((method, path, op))
    out = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(info['title'])}</title>",
        '<link rel="stylesheet" href="/api/docs.css"></head><body>',
        f"<h1>{escape(info['title'])} <small>{escape(info['version'])}</small></h1>",
        f"<p>{escape(info['description'])}</p>",
        '<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a> '
        "(OpenAPI 3.1)</p><nav>",
        *(f'<a href="#tag-{escape(t)}">{escape(t)}</a>' for t in by_tag),
        '<a href="#schemas">schemas</a></nav>',
    ]
    for tag, ops in by_tag.items():
        out.append(f'<h2 id="tag-{escape(tag)}">{escape(tag)}</h2>')
        for method, path, op in ops:
            out.append(f'<section class="op" id="{escape(op["operationId"])}">'
                       f'<h3><span class="method {method}">{method}</span> '
                       f"<code>{escape(path)}</code></h3>"
                       f"<p><strong>{escape(op['summary'])}</strong> · scope "
                       f"<code>{escape(op.get('x-scope', ''))}</code></p>")
            if op.get("description"):
                out.append(f"<p>{escape(op['description'])}</p>")
            if op["parameters"]:
                out.append("<table><tr><th>parameter</th><th>in</th><th>schema</th></tr>")
                for p in op["parameters"]:
                    out.append(f"<tr><td><code>{escape(p['name'])}</code></td>"
                               f"<td>{escape(p['in'])}</td><td>{_schema(p['schema'], spec)}"
                               "</td></tr>")
                out.append("</table>")
            body = op.get("requestBody")
            if body:
                schema = body["content"]["application/json"]["schema"]
                out.append(f"<p>Body (JSON): {_schema(schema, spec)}</p>")
            out.append("<p>Responses: " + ", ".join(
                f"<code>{escape(code)}</code> {escape(r['description'])}"
                for code, r in op["responses"].items()) + "</p></section>")
    out.append('<h2 id="schemas">Schemas</h2>')
    for name, schema in spec["components"]["schemas"].items():
        out.append(f'<details id="schema-{escape(name)}"><summary><code>{escape(name)}</code>'
                   f"</summary><pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}"
                   "</pre></details>")
    out.append("</body></html>")
    return "".join(out)


async def docs_page(request: web.Request) -> web.Response:
    """The reference page (public, like the document it renders)."""
    from contact_center.api import OPENAPI_KEY

    response = web.Response(text=render(request.app[OPENAPI_KEY]), content_type="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response


async def docs_css(_request: web.Request) -> web.Response:
    """The page's style sheet."""
    return web.Response(text=CSS, content_type="text/css",
                        headers={"Cache-Control": "public, max-age=3600"})
