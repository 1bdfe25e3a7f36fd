"""The WIT binding of the Python example carrier (world `carrier-plugin`).

componentize-py imports this module and calls the class named `Carrier`: a
subclass of the generated `exports.Carrier` protocol. All behaviour lives in
`carrier_logic`; this module only translates between its plain Python values
and the generated WIT types: results become return values or `raise Err(...)`,
variants become `SendError_*`/`WebhookError_*` classes.

The `wit_world` package exists only at build time (`componentize-py bindings`
writes it out for reading), so this module is not imported by the unit tests.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import carrier as wit
from wit_world.imports import host, http, types

import carrier_logic as logic

# The generated case classes of WIT `http.error`, by case name.
FETCH_ERRORS = {
    http.Error_Denied: "denied",
    http.Error_InvalidRequest: "invalid-request",
    http.Error_Timeout: "timeout",
    http.Error_TooLarge: "too-large",
    http.Error_Transport: "transport",
}


class WitHost:
    """`carrier_logic.Host` on Herald's imports."""

    def config_get(self, key):
        return host.config_get(key)

    def log(self, level, message):
        host.log(types.Level[level.upper()], message)

    def fetch(self, request):
        headers = [types.Header(h.name, h.value) for h in request.headers]
        try:
            return http.fetch(http.Request(request.method, request.url, headers, request.body))
        except Err as err:
            error = err.value
            # `timeout` has no payload; the other cases carry a reason or a size.
            raise logic.FetchError(
                FETCH_ERRORS[type(error)], getattr(error, "value", None)
            ) from None


HOST = WitHost()


class Carrier(exports.Carrier):
    def send(self, message: wit.Message) -> wit.Accepted:
        outcome = logic.send(message, HOST)
        match outcome:
            case logic.Accepted(carrier_message_id):
                return wit.Accepted(carrier_message_id, wit.DeliveryStatus.SENT)
            case logic.RateLimited(ms):
                raise Err(wit.SendError_RateLimited(ms))
            case logic.Retryable(reason):
                raise Err(wit.SendError_Retryable(reason))
            case logic.Permanent(reason):
                raise Err(wit.SendError_Permanent(reason))
        raise AssertionError(f"unknown send outcome {outcome!r}")

    def handle_webhook(self, kind: wit.WebhookKind, request: wit.WebhookRequest):
        try:
            events = logic.handle_webhook(kind.name.lower(), request, HOST)
        except logic.Unauthorized as rejected:
            raise Err(wit.WebhookError_Unauthorized(rejected.reason)) from None
        except logic.Malformed as rejected:
            raise Err(wit.WebhookError_Malformed(rejected.reason)) from None
        return [webhook_event(event) for event in events]


def webhook_event(event: logic.WebhookEvent) -> wit.WebhookEvent:
    if isinstance(event, logic.Delivery):
        status = wit.DeliveryStatus[event.status.upper()]
        return wit.WebhookEvent_Delivery(
            wit.DeliveryUpdate(event.carrier_message_id, status, event.error)
        )
    return wit.WebhookEvent_Inbound(wit.InboundMessage(event.from_, event.to, event.body))
