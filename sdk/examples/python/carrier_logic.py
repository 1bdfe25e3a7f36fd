"""The JSON gateway carrier in Python: everything but the WIT binding.

This module reproduces `plugins/carrier-http` (read its documentation for the
settings, the request and the table of answers) without importing the bindings
componentize-py generates, so `python3 -m unittest` tests it natively. It
reaches the outside world only through a `Host` (Herald's `host` and `http`
imports in the component, a fake in the tests), and reads messages and webhook
requests by attribute, so the generated records can be passed in as they are.
`app.py` binds it to the WIT world `carrier-plugin`.

Herald reads the outcome of a send from the reason's prefix as well as its
case; see "Reporting what happened" in sdk/README.md.
"""

import hmac
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

#: How long to wait after a 429 without `Retry-After`, in milliseconds.
DEFAULT_RETRY_AFTER_MS = 1_000

#: The header webhook requests carry the shared token in.
TOKEN_HEADER = "X-Webhook-Token"

#: The start of a permanent reason that makes Herald pause the carrier.
MISCONFIGURED_PREFIX = "misconfigured:"

#: The largest value of a WIT `u64`.
U64_MAX = 2**64 - 1


class Header(NamedTuple):
    """An HTTP header (WIT `types.header`)."""

    name: str
    value: str


@dataclass(frozen=True)
class HttpRequest:
    """What `send` asks Herald to fetch (WIT `http.request`)."""

    method: str
    url: str
    headers: list[Header]
    body: bytes


class FetchError(Exception):
    """A request Herald could not make (WIT `http.error`); `kind` is the case name."""

    def __init__(self, kind: str, detail: str | int | None = None):
        super().__init__(kind, detail)
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        # The same wording as the Rust SDK's `HttpError`, so reasons read alike.
        return {
            "denied": f"HTTP request denied: {self.detail}",
            "invalid-request": f"invalid HTTP request: {self.detail}",
            "timeout": "HTTP request timed out",
            "too-large": f"HTTP response larger than {self.detail} bytes",
            "transport": f"HTTP transport error: {self.detail}",
        }.get(self.kind, f"HTTP error {self.kind}: {self.detail}")


class Host(Protocol):
    """What the carrier needs from Herald: the `host` and `http` imports."""

    def config_get(self, key: str) -> str | None: ...

    def log(self, level: str, message: str) -> None:
        """`level` is a WIT `types.level` case name: trace, debug, info, warn or error."""

    def fetch(self, request: HttpRequest):
        """Returns a response (`status`, `headers`, `body`) or raises `FetchError`."""


# The outcomes of `send`, one class per case of WIT `result<accepted, send-error>`.


@dataclass(frozen=True)
class Accepted:
    """The gateway took the message; its status is always `sent`."""

    carrier_message_id: str


@dataclass(frozen=True)
class Retryable:
    reason: str


@dataclass(frozen=True)
class Permanent:
    reason: str


@dataclass(frozen=True)
class RateLimited:
    ms: int


SendOutcome = Accepted | Retryable | Permanent | RateLimited


def misconfigured(detail: str) -> Permanent:
    """A permanent error Herald answers by pausing the carrier."""
    return Permanent(f"{MISCONFIGURED_PREFIX} {detail}")


def describe(error: Retryable | Permanent | RateLimited) -> str:
    """`error` as the Rust SDK prints a `SendError`, for the log."""
    if isinstance(error, RateLimited):
        return f"rate limited: retry after {error.ms} ms"
    kind = "retryable" if isinstance(error, Retryable) else "permanent"
    return f"{kind}: {error.reason}"


# The events and errors of `handle_webhook`.


@dataclass(frozen=True)
class Delivery:
    """A delivery receipt; `status` is a WIT `delivery-status` case name."""

    carrier_message_id: str
    status: str
    error: str | None = None


@dataclass(frozen=True)
class Inbound:
    """A message from a handset."""

    from_: str
    to: str
    body: str


WebhookEvent = Delivery | Inbound


class WebhookRejected(Exception):
    """Base of the two WIT `webhook-error` cases; the argument is the reason."""

    @property
    def reason(self) -> str:
        return self.args[0]


class Unauthorized(WebhookRejected):
    """HTTP 401: the request did not prove it comes from the gateway."""


class Malformed(WebhookRejected):
    """HTTP 400: a verified request this carrier cannot understand."""


# Settings.


class ConfigError(Exception):
    """A setting is missing or unusable; the reason names it, never its value."""


def missing(key: str) -> ConfigError:
    return ConfigError(
        f"missing setting `{key}`: add it to this plugin's `settings` in Herald's configuration"
    )


@dataclass(frozen=True)
class Settings:
    """What `send` reads from the carrier's settings (defaults as in carrier-http)."""

    url: str
    method: str = "POST"
    auth: Header | None = None
    to_field: str = "to"
    from_field: str = "from"
    body_field: str = "body"
    id_field: str = "id"
    metadata_field: str | None = None
    response_id_field: str = "id"

    @classmethod
    def load(cls, host: Host) -> "Settings":
        """Reads the settings; raises `ConfigError` naming the first bad one."""

        def optional(key: str) -> str | None:
            value = (host.config_get(key) or "").strip()
            return value or None

        def with_default(key: str) -> str:
            return optional(key) or getattr(cls, key)  # the field's default above

        # `auth_header` and `auth_value` go together; checked before `url`, as carrier-http does.
        header, value = host.config_get("auth_header"), host.config_get("auth_value")
        if header is not None and header.strip() and value is not None:
            auth = Header(header.strip(), value)
        elif header is not None:
            raise missing("auth_value")
        elif value is not None:
            raise missing("auth_header")
        else:
            auth = None
        url = host.config_get("url")
        if not url:
            raise missing("url")
        return cls(
            url=url.strip(),
            method=with_default("method").upper(),
            auth=auth,
            to_field=with_default("to_field"),
            from_field=with_default("from_field"),
            body_field=with_default("body_field"),
            id_field=with_default("id_field"),
            metadata_field=optional("metadata_field"),
            response_id_field=with_default("response_id_field"),
        )


# Sending.


def send(message, host: Host) -> SendOutcome:
    """Delivers `message` (a WIT `carrier.message`, read by attribute) through the gateway."""
    try:
        settings = Settings.load(host)
    except ConfigError as error:
        return misconfigured(str(error))
    try:
        response = host.fetch(build_request(message, settings))
    except FetchError as error:
        # `url` and `method` are settings, and a host off `allowed_hosts` is the
        # operator's configuration: only an operator can fix those.
        if error.kind in ("denied", "invalid-request"):
            return misconfigured(str(error))
        # Timeouts and transport errors stay plain retryable: Herald saw whether
        # the request may have left and holds the message for reconciliation.
        return Retryable(str(error))
    outcome = map_response(response, settings.response_id_field, message.id, host)
    if isinstance(outcome, Accepted):
        host.log("debug", f"{message.id} accepted as {outcome.carrier_message_id}")
    else:
        host.log("debug", f"{message.id} not accepted: {describe(outcome)}")
    return outcome


def to_json(value) -> bytes:
    """Compact JSON with sorted keys: byte for byte what carrier-http's serde_json sends."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def build_request(message, settings: Settings) -> HttpRequest:
    """The gateway request for `message`."""
    body = {
        settings.id_field: message.id,
        settings.to_field: message.to,
        settings.from_field: message.from_,
        settings.body_field: message.body,
    }
    if settings.metadata_field is not None:
        body[settings.metadata_field] = dict(message.metadata)
    headers = [Header("Accept", "application/json")]
    if settings.auth is not None:
        headers.append(settings.auth)
    # Content-Type replaces a header of the same name, as the Rust SDK's `json()` does.
    headers = [h for h in headers if h.name.lower() != "content-type"]
    headers.append(Header("Content-Type", "application/json"))
    return HttpRequest(settings.method, settings.url, headers, to_json(body))


def find_header(headers: Sequence, name: str) -> str | None:
    """The first header called `name` (case-insensitive); headers have `name` and `value`."""
    wanted = name.lower()
    return next((h.value for h in headers if h.name.lower() == wanted), None)


# What Rust's `f64::from_str` accepts, minus inf/NaN (Python's float() also takes `1_0`).
DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def retry_after_ms(response) -> int:
    """`Retry-After` (delta-seconds) in milliseconds; `DEFAULT_RETRY_AFTER_MS` when absent or
    not a number."""
    raw = (find_header(response.headers, "retry-after") or "").strip()
    if not DECIMAL.fullmatch(raw):
        return DEFAULT_RETRY_AFTER_MS
    seconds = float(raw)
    if not math.isfinite(seconds) or seconds < 0:
        return DEFAULT_RETRY_AFTER_MS
    return min(math.ceil(seconds * 1000), U64_MAX)


def is_number(value) -> bool:
    # bool is an int in Python but `true` is no id.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def lookup(value, path: str) -> str | None:
    """The value at dotted `path` in `value` as text: strings as they are, numbers printed."""
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, str) and value:
        return value
    if is_number(value):
        return str(value)
    return None


def parse_json(body: bytes):
    """`body` as strict JSON: UTF-8 only, no NaN or Infinity (as serde_json). Raises ValueError."""

    def reject(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(body.decode("utf-8"), parse_constant=reject)


def excerpt(response) -> str:
    """The answer's text for a reason: trimmed, at most 200 characters."""
    text = bytes(response.body).decode("utf-8", errors="replace").strip()
    return text[:200] + "…" if len(text) > 200 else text


def map_response(response, response_id_field: str, message_id: str, host: Host) -> SendOutcome:
    """Maps the gateway's answer to `send`'s outcome; `message_id` is the carrier
    message id when a 2xx answer carries none."""
    status = response.status
    if 200 <= status <= 299:
        try:
            carrier_id = lookup(parse_json(bytes(response.body)), response_id_field)
        except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            carrier_id = None
        if carrier_id is None:
            host.log(
                "warn",
                f"the gateway's answer has no `{response_id_field}`: "
                f"using Herald's message id {message_id}",
            )
            carrier_id = message_id
        return Accepted(carrier_id)
    if status == 429:
        return RateLimited(retry_after_ms(response))
    if status in (401, 403):
        # Wrong credentials fail every message alike: the carrier must be paused.
        return misconfigured(
            f"gateway refused the credentials (HTTP {status}): {excerpt(response)}"
        )
    if status == 408 or 500 <= status <= 599:
        return Retryable(f"gateway HTTP {status}: {excerpt(response)}")
    if 400 <= status <= 499:
        return Permanent(f"gateway refused (HTTP {status}): {excerpt(response)}")
    return Retryable(f"unexpected gateway answer HTTP {status}: {excerpt(response)}")


# Webhooks.


def handle_webhook(kind: str, request, host: Host) -> list[WebhookEvent]:
    """Verifies and parses a webhook request; `kind` is `status` or `inbound`,
    `request` a WIT `carrier.webhook-request` read by attribute. Raises `WebhookRejected`."""
    token = host.config_get("webhook_token")
    if token is None or not token.strip():
        raise Unauthorized("webhooks are disabled until `webhook_token` is set in the settings")
    return handle(kind, request, token)


def check_token(request, token: str) -> None:
    """Checks the shared token in constant time, before anything reads the body."""
    presented = find_header(request.headers, TOKEN_HEADER)
    if presented is None:
        raise Unauthorized(f"missing {TOKEN_HEADER}")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Unauthorized(f"wrong {TOKEN_HEADER}")


def handle(kind: str, request, token: str) -> list[WebhookEvent]:
    """Checks `token` and parses the body: one JSON object or an array of them."""
    check_token(request, token)
    try:
        value = parse_json(bytes(request.body))
    except ValueError as error:
        raise Malformed(f"body is not JSON: {error}") from None
    items = value if isinstance(value, list) else [value]
    events: list[WebhookEvent] = []
    for item in items:
        if not isinstance(item, dict):
            raise Malformed("each event must be a JSON object")
        if kind == "status":
            events.append(status_update(item))
        else:
            sender, recipient = required(item, "from"), required(item, "to")
            events.append(Inbound(from_=sender, to=recipient, body=string(item, "body") or ""))
    return events


def string(item: dict, name: str) -> str | None:
    """The string field `name`, None when absent or null; a numeric `id` is printed."""
    value = item.get(name)
    if value is None or isinstance(value, str):
        return value
    if name == "id" and is_number(value):
        return str(value)
    raise Malformed(f"`{name}` must be a string, not {json.dumps(value, ensure_ascii=False)}")


def required(item: dict, name: str) -> str:
    value = string(item, name)
    if not value:
        raise Malformed(f"missing `{name}`")
    return value


# The gateway's words for each WIT `delivery-status` case.
STATUS_WORDS = {
    "sent": "sent",
    "queued": "sent",
    "accepted": "sent",
    "delivered": "delivered",
    "failed": "failed",
    "undelivered": "failed",
    "rejected": "failed",
    "expired": "failed",
}


def status_update(item: dict) -> Delivery:
    carrier_message_id = required(item, "id")
    raw = required(item, "status")
    status = STATUS_WORDS.get(raw.lower())
    if status is None:
        raise Malformed(f"unknown status `{raw}` (sent, delivered or failed)")
    # Only a failure carries a reason; the gateway's status word stands in for a missing one.
    error = None
    if status == "failed":
        error = string(item, "error")
        if error is None:
            error = raw
    return Delivery(carrier_message_id, status, error)
