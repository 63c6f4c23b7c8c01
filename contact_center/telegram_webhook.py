"""The Telegram webhook: ``POST /webhooks/telegram``, answered only once the update is safe.

Telegram sends the secret token we registered with ``setWebhook`` in the
``X-Telegram-Bot-Api-Secret-Token`` header; anything else is refused with 401. A body
that is not an update is refused with 400 (and kept in the quarantine when it parsed as
JSON). 200 means the update is on the bus or deliberately skipped; 503 asks Telegram to
deliver again later.
"""

from __future__ import annotations

import hmac

import structlog
from aiohttp import web

from channels.telegram.intake import QUARANTINED, TelegramIntake

log = structlog.get_logger(__name__)
WEBHOOK_PATH = "/webhooks/telegram"
INTAKE_KEY = web.AppKey("telegram_intake", TelegramIntake)
SECRET_KEY = web.AppKey("telegram_webhook_secret", str)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _error(status: int, message: str, **extra: object) -> web.Response:
    return web.json_response({"ok": False, "error": message, **extra}, status=status)


async def telegram_webhook(request: web.Request) -> web.Response:
    """Receive one update from Telegram."""
    secret = request.app[SECRET_KEY]
    given = request.headers.get(SECRET_HEADER, "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        log.warning("telegram.webhook_refused", channel="telegram", reason="bad secret token",
                    remote=request.remote)
        return _error(401, "missing or wrong secret token")
    try:
        raw = await request.json()
    except ValueError:
        log.warning("telegram.webhook_refused", channel="telegram", reason="not JSON")
        return _error(400, "the body is not JSON")
    if not isinstance(raw, dict):
        return _error(400, "an update must be a JSON object")
    try:
        result = await request.app[INTAKE_KEY].handle(raw)
    except Exception as exc:
        log.error("telegram.webhook_failed", channel="telegram", update_id=raw.get("update_id"),
                  error=f"{type(exc).__name__}: {exc}")
        return _error(503, "temporarily unavailable, deliver again later")
    if result.status == QUARANTINED:
        return _error(400, "the update could not be read; it was kept for an administrator",
                      detail=result.detail)
    return web.json_response({"ok": True, "status": result.status})


def setup_telegram_webhook(app: web.Application, intake: TelegramIntake, secret: str) -> None:
    """Serve the webhook route on ``app`` for this bot."""
    app[INTAKE_KEY] = intake
    app[SECRET_KEY] = secret
    app.router.add_post(WEBHOOK_PATH, telegram_webhook)
