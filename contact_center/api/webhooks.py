"""``/webhooks``: subscribe a URL to events, list, switch on/off, delete, see deliveries,
send a test event."""

from __future__ import annotations

from contact_center.api.common import database, settings
from contact_center.api.errors import from_domain
from contact_center.api.framework import ApiCall, ApiRouter
from contact_center.api.models import DeliveryList, DeliveryOut, WebhookIn, WebhookList, WebhookOut
from contact_center.webhooks import PUBLIC_EVENTS, check_target
from crm_core.errors import CrmError
from crm_core.models import WebhookSubscription
from crm_core.services import webhooks as svc

router = ApiRouter()
TAG = "webhooks"
SCOPE = "webhooks:manage"


def webhook_out(row: WebhookSubscription, *, with_secret: bool = False) -> WebhookOut:
    """The API view of a subscription; the secret only right after creation."""
    return WebhookOut(id=row.id, name=row.name, url=row.url, events=list(row.events),
                      active=row.active, consecutive_failures=row.consecutive_failures,
                      disabled_reason=row.disabled_reason, created_at=row.created_at,
                      secret=row.secret if with_secret else None)


@router.route("GET", "/webhooks", scope=SCOPE, summary="List webhook subscriptions", tag=TAG,
              response=WebhookList)
async def list_webhooks(call: ApiCall) -> WebhookList:
    """Every subscription, with its failure count."""
    async with database(call).sessions() as session:
        return WebhookList(items=[webhook_out(r) for r in await svc.list_subscriptions(session)])


@router.route("POST", "/webhooks", scope=SCOPE, summary="Subscribe a URL to events", tag=TAG,
              body=WebhookIn, response=WebhookOut, status=201)
async def create_webhook(call: ApiCall) -> WebhookOut:
    """Events: customer.created/updated/deleted/merged/erased, message.created, note.created,
    ticket.created/updated, conversation.assigned, care_task.created, webhook.test, or
    ``*``. The answer holds the signing secret, shown this once."""
    body: WebhookIn = call.body
    try:
        check_target(body.url, allow_private=settings(call).api.webhook_allow_private)
        async with database(call).transaction() as session:
            row = await svc.create_subscription(
                session, name=body.name, url=body.url, events=body.events,
                known_events=PUBLIC_EVENTS, actor=call.actor, secret=body.secret)
            return webhook_out(row, with_secret=True)
    except CrmError as exc:
        raise from_domain(exc) from None


@router.route("DELETE", "/webhooks/{webhook_id}", scope=SCOPE, summary="Unsubscribe", tag=TAG,
              status=204)
async def delete_webhook(call: ApiCall) -> None:
    """Removes the subscription and its delivery log."""
    try:
        async with database(call).transaction() as session:
            await svc.delete_subscription(session, call.params["webhook_id"], actor=call.actor)
    except CrmError as exc:
        raise from_domain(exc) from None


@router.route("POST", "/webhooks/{webhook_id}/enable", scope=SCOPE, tag=TAG,
              summary="Switch a subscription back on", response=WebhookOut)
async def enable_webhook(call: ApiCall) -> WebhookOut:
    """Forgets the failures that switched it off."""
    try:
        async with database(call).transaction() as session:
            return webhook_out(await svc.set_active(session, call.params["webhook_id"], True,
                                                    actor=call.actor))
    except CrmError as exc:
        raise from_domain(exc) from None


@router.route("POST", "/webhooks/{webhook_id}/test", scope=SCOPE, tag=TAG,
              summary="Queue a test event", response=DeliveryList, status=202)
async def test_webhook(call: ApiCall) -> DeliveryList:
    """A ``webhook.test`` event for this subscription only, delivered like any other."""
    try:
        async with database(call).transaction() as session:
            rows = await svc.enqueue_event(session, "webhook.test", {"hello": "world"},
                                           only=call.params["webhook_id"])
            return DeliveryList(items=[DeliveryOut.model_validate(r, from_attributes=True)
                                       for r in rows])
    except CrmError as exc:
        raise from_domain(exc) from None


@router.route("GET", "/webhooks/{webhook_id}/deliveries", scope=SCOPE, tag=TAG,
              summary="The delivery log of a subscription", response=DeliveryList)
async def list_deliveries(call: ApiCall) -> DeliveryList:
    """The latest 50 deliveries, newest first."""
    try:
        async with database(call).sessions() as session:
            await svc.get_subscription(session, call.params["webhook_id"])
            rows = await svc.delivery_log(session, call.params["webhook_id"])
            return DeliveryList(items=[DeliveryOut.model_validate(r, from_attributes=True)
                                       for r in rows])
    except CrmError as exc:
        raise from_domain(exc) from None
