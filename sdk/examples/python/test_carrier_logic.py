"""Native tests of the Python example carrier: `python3 -m unittest` in this folder.

They mirror the tests of `plugins/carrier-http`, whose behaviour this carrier
reproduces, with a fake host in place of Herald.
"""

import json
import unittest
from dataclasses import dataclass, field

import carrier_logic as logic
from carrier_logic import (
    Accepted,
    Delivery,
    FetchError,
    Header,
    Inbound,
    Malformed,
    Permanent,
    RateLimited,
    Retryable,
    Unauthorized,
)

URL = "https://gateway.internal.example/v1/sms"
TOKEN = "tok-123"


@dataclass
class Message:
    """The fields of WIT `carrier.message` the carrier reads, as the bindings name them."""

    id: str = "msg-1"
    to: str = "+15550100"
    from_: str = "ACME"
    body: str = 'Hello "there"'
    segments: int = 1
    metadata: list[tuple[str, str]] = field(default_factory=lambda: [("campaign", "c-9")])


@dataclass
class Response:
    status: int
    headers: list[Header] = field(default_factory=list)
    body: bytes = b""


def json_response(status: int, value) -> Response:
    return Response(
        status, [Header("Content-Type", "application/json")], json.dumps(value).encode()
    )


@dataclass
class WebhookRequest:
    headers: list[Header]
    body: bytes
    method: str = "POST"
    url: str = "https://herald.example/webhooks/gw/status"
    query: str = ""


class FakeHost:
    """Herald as the carrier sees it: settings, queued answers, recorded requests and logs."""

    def __init__(self, **settings):
        self.settings = dict(settings)
        self.answers = []
        self.requests = []
        self.logs = []

    def config_get(self, key):
        return self.settings.get(key)

    def log(self, level, message):
        self.logs.append((level, message))

    def fetch(self, request):
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def webhook(body: str, token=None) -> WebhookRequest:
    headers = [] if token is None else [Header("x-webhook-token", token)]
    return WebhookRequest(headers, body.encode())


class Send(unittest.TestCase):
    def test_posts_json_with_default_fields(self):
        host = FakeHost(url=URL)
        host.answers.append(json_response(202, {"id": "gw-77"}))
        self.assertEqual(logic.send(Message(), host), Accepted("gw-77"))
        [request] = host.requests
        self.assertEqual((request.method, request.url), ("POST", URL))
        self.assertEqual(logic.find_header(request.headers, "content-type"), "application/json")
        self.assertEqual(logic.find_header(request.headers, "accept"), "application/json")
        self.assertIsNone(logic.find_header(request.headers, "authorization"))
        # Byte for byte what carrier-http sends: serde_json, keys sorted.
        self.assertEqual(
            request.body,
            b'{"body":"Hello \\"there\\"","from":"ACME","id":"msg-1","to":"+15550100"}',
        )
        self.assertIn(("debug", "msg-1 accepted as gw-77"), host.logs)

    def test_custom_fields_method_and_auth_header(self):
        host = FakeHost(
            url=f" {URL} ",
            method="put",
            auth_header="Authorization",
            auth_value="Bearer s3cret",
            to_field="msisdn",
            from_field="sender",
            body_field="text",
            id_field="reference",
            metadata_field="tags",
            response_id_field="data.message_id",
        )
        host.answers.append(json_response(200, {"data": {"message_id": 4711}}))
        self.assertEqual(logic.send(Message(), host), Accepted("4711"))
        [request] = host.requests
        self.assertEqual((request.method, request.url), ("PUT", URL))
        self.assertEqual(logic.find_header(request.headers, "authorization"), "Bearer s3cret")
        self.assertEqual(
            json.loads(request.body),
            {
                "reference": "msg-1",
                "msisdn": "+15550100",
                "sender": "ACME",
                "text": 'Hello "there"',
                "tags": {"campaign": "c-9"},
            },
        )

    def test_non_ascii_is_sent_as_utf8(self):
        host = FakeHost(url=URL)
        host.answers.append(json_response(200, {"id": "x"}))
        logic.send(Message(body="Grüße\n€"), host)
        self.assertIn('"body":"Grüße\\n€"'.encode(), host.requests[0].body)

    def test_answer_without_an_id_falls_back_to_the_message_id(self):
        for body in [b"", b"not json", b'{"id": ""}', b'{"id": true}', b"[1]"]:
            host = FakeHost(url=URL)
            host.answers.append(Response(204, body=body))
            self.assertEqual(logic.send(Message(), host), Accepted("msg-1"), body)
            self.assertTrue(
                any(level == "warn" and "`id`" in line for level, line in host.logs), host.logs
            )

    def test_refusals_are_logged_as_the_rust_carrier_words_them(self):
        host = FakeHost(url=URL)
        host.answers += [Response(503, body=b"busy"), Response(429), Response(400, body=b"no")]
        for _ in range(3):
            logic.send(Message(), host)
        self.assertEqual(
            [line for level, line in host.logs if level == "debug"],
            [
                "msg-1 not accepted: retryable: gateway HTTP 503: busy",
                "msg-1 not accepted: rate limited: retry after 1000 ms",
                "msg-1 not accepted: permanent: gateway refused (HTTP 400): no",
            ],
        )

    def test_settings_errors_are_misconfigured_and_named(self):
        def reason(host):
            outcome = logic.send(Message(), host)
            self.assertIsInstance(outcome, Permanent)
            self.assertTrue(outcome.reason.startswith("misconfigured: "), outcome)
            return outcome.reason

        self.assertIn("`url`", reason(FakeHost()))
        self.assertIn("`url`", reason(FakeHost(url="")))
        self.assertIn("`auth_value`", reason(FakeHost(url=URL, auth_header="X-Key")))
        self.assertIn("`auth_header`", reason(FakeHost(url=URL, auth_value="k")))

    def test_blank_settings_take_their_defaults(self):
        host = FakeHost(url=URL, method=" ", to_field="", metadata_field=" ")
        host.answers.append(json_response(200, {"id": "x"}))
        logic.send(Message(), host)
        request = host.requests[0]
        self.assertEqual(request.method, "POST")
        self.assertEqual(sorted(json.loads(request.body)), ["body", "from", "id", "to"])

    def test_transport_failures(self):
        cases = [
            (FetchError("timeout"), Retryable("HTTP request timed out")),
            (FetchError("transport", "refused"), Retryable("HTTP transport error: refused")),
            (
                FetchError("too-large", 1048576),
                Retryable("HTTP response larger than 1048576 bytes"),
            ),
            (
                FetchError("denied", "not allowed"),
                Permanent("misconfigured: HTTP request denied: not allowed"),
            ),
            (
                FetchError("invalid-request", 'method "SNED"'),
                Permanent('misconfigured: invalid HTTP request: method "SNED"'),
            ),
        ]
        for error, expected in cases:
            host = FakeHost(url=URL)
            host.answers.append(error)
            self.assertEqual(logic.send(Message(), host), expected)


class MapResponse(unittest.TestCase):
    def outcome(self, response):
        return logic.map_response(response, "id", "m", FakeHost())

    def test_success_and_rate_limits(self):
        self.assertEqual(self.outcome(json_response(201, {"id": "x"})), Accepted("x"))
        retry_after = {"3": 3000, "0.25": 250, " 2 ": 2000, "0": 0, "1e400": 1000}
        for header, ms in retry_after.items():
            answer = Response(429, [Header("Retry-After", header)])
            self.assertEqual(self.outcome(answer), RateLimited(ms), header)
        for header in ["soon", "-1", "nan", "inf", "1_0", ""]:
            answer = Response(429, [Header("retry-after", header)])
            self.assertEqual(
                self.outcome(answer), RateLimited(logic.DEFAULT_RETRY_AFTER_MS), header
            )
        self.assertEqual(self.outcome(Response(429)), RateLimited(1000))

    def test_refused_credentials_pause_the_carrier(self):
        for status in [401, 403]:
            self.assertEqual(
                self.outcome(Response(status, body=b" bad token\n")),
                Permanent(
                    f"misconfigured: gateway refused the credentials (HTTP {status}): bad token"
                ),
            )

    def test_client_errors_are_permanent_and_server_errors_retryable(self):
        for status in [400, 404, 422]:
            self.assertEqual(
                self.outcome(Response(status, body=b"bad number")),
                Permanent(f"gateway refused (HTTP {status}): bad number"),
            )
        for status in [408, 500, 502, 503]:
            self.assertEqual(self.outcome(Response(status)), Retryable(f"gateway HTTP {status}: "))
        self.assertEqual(
            self.outcome(Response(302, body=b"\xffmoved")),
            Retryable("unexpected gateway answer HTTP 302: \ufffdmoved"),
        )

    def test_long_answers_are_cut(self):
        outcome = self.outcome(Response(400, body=b"x" * 1000))
        self.assertEqual(outcome.reason, "gateway refused (HTTP 400): " + "x" * 200 + "…")


class Webhooks(unittest.TestCase):
    def handle(self, kind, body, token=TOKEN, setting=TOKEN):
        host = FakeHost() if setting is None else FakeHost(webhook_token=setting)
        return logic.handle_webhook(kind, webhook(body, token), host)

    def test_status_webhooks(self):
        events = self.handle(
            "status",
            """[{"id":"gw-1","status":"delivered"},{"id":"gw-2","status":"failed","error":"absent"},
                {"id":"gw-3","status":"SENT"},{"id":4,"status":"undelivered"},
                {"id":"gw-5","status":"queued","error":7}]""",
        )
        self.assertEqual(
            events,
            [
                Delivery("gw-1", "delivered"),
                Delivery("gw-2", "failed", "absent"),
                Delivery("gw-3", "sent"),
                Delivery("4", "failed", "undelivered"),
                Delivery("gw-5", "sent"),
            ],
        )

    def test_inbound_webhooks(self):
        events = self.handle("inbound", '{"from":"+15550101","to":"ACME","body":"STOP"}')
        self.assertEqual(events, [Inbound("+15550101", "ACME", "STOP")])
        self.assertEqual(self.handle("inbound", '{"from":"+1","to":"A"}'), [Inbound("+1", "A", "")])

    def test_webhook_token(self):
        body = '{"id":"gw-1","status":"delivered"}'
        self.assertEqual(len(self.handle("status", body)), 1)
        for presented in [None, "tok-12", "tok-1234", "TOK-123", ""]:
            with self.assertRaises(Unauthorized, msg=presented):
                self.handle("status", body, token=presented)
        # The token is checked before the body is looked at.
        with self.assertRaisesRegex(Unauthorized, "wrong X-Webhook-Token"):
            self.handle("status", "garbage", token="wrong")

    def test_webhooks_are_disabled_without_a_token(self):
        body = '{"from":"+15550101","to":"ACME","body":"STOP"}'
        for setting in [None, "", " "]:
            for presented in [None, setting]:
                with self.assertRaisesRegex(Unauthorized, "disabled until `webhook_token` is set"):
                    self.handle("inbound", body, token=presented, setting=setting)

    def test_malformed_webhooks(self):
        cases = [
            ("status", "garbage", "not JSON"),
            ("status", '{"id":"a","status":"delivered","x":NaN}', "not JSON"),
            ("status", '{"status":"delivered"}', "`id`"),
            ("status", '{"id":true,"status":"delivered"}', "`id` must be a string, not true"),
            ("status", '{"id":"a"}', "`status`"),
            ("status", '{"id":"a","status":"teleported"}', "unknown status `teleported`"),
            ("status", '{"id":"a","status":"failed","error":3}', "`error` must be a string, not 3"),
            ("status", "[1]", "JSON object"),
            ("inbound", '{"to":"+1","body":"x"}', "`from`"),
            ("inbound", '{"from":"+1","body":"x"}', "`to`"),
        ]
        for kind, body, expected in cases:
            with self.assertRaisesRegex(Malformed, expected, msg=body):
                self.handle(kind, body)


if __name__ == "__main__":
    unittest.main()
