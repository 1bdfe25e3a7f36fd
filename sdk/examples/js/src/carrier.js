// Herald carrier for in-house SMS gateways speaking JSON, in JavaScript.
//
// It behaves like the Rust reference `plugins/carrier-http` (read its module
// documentation for the settings, the request and the answer mapping): same
// settings and defaults, same request, same outcomes, same webhooks.
//
// This module is plain JavaScript with no WIT imports: `createCarrier` takes
// the host's functions (`configGet`, `log`, `fetch`) as arguments, so `node
// --test` runs it natively with fakes. `component.js` binds it to the real
// imports of `herald:plugin@0.1.0` and exports it.
//
// Values follow componentize-js's mapping of the WIT types: records are
// objects with camelCase fields, variants `{ tag, val }`, enums strings,
// `option<T>` undefined when none, `u64` a BigInt, `list<u8>` a Uint8Array,
// and a `result` error is thrown as `{ payload: <the error variant> }`.

/** How long to wait after a 429 without `Retry-After`, in milliseconds. */
export const DEFAULT_RETRY_AFTER_MS = 1000n;

/** The header webhook requests carry the shared token in. */
export const TOKEN_HEADER = 'X-Webhook-Token';

/** Herald pauses the carrier on a permanent error with this prefix (sdk/README.md, "Reporting what happened"). */
export const MISCONFIGURED_PREFIX = 'misconfigured:';

const MAX_U64 = (1n << 64n) - 1n;
const EXCERPT_CHARS = 200;

const utf8 = new TextEncoder();

/** What a WIT function returning `result<_, E>` throws to return `err(variant)`. */
export function witError(tag, val) {
  return { payload: val === undefined ? { tag } : { tag, val } };
}

/** Whether `thrown` is a WIT error (see `witError`) rather than a bug. */
export function isWitError(thrown) {
  return typeof thrown === 'object' && thrown !== null && Object.hasOwn(thrown, 'payload');
}

const retryable = (reason) => witError('retryable', reason);
const permanent = (reason) => witError('permanent', reason);
const misconfigured = (detail) => permanent(`${MISCONFIGURED_PREFIX} ${detail}`);
const unauthorized = (reason) => witError('unauthorized', reason);
const malformed = (reason) => witError('malformed', reason);

/** A setting the plugin cannot work without; the message names the key, never the value. */
class SettingError extends Error {}

function missingSetting(key) {
  return new SettingError(
    `missing setting \`${key}\`: add it to this plugin's \`settings\` in Herald's configuration`,
  );
}

/** Reads what `send` needs from the settings; throws `SettingError`. */
export function loadSettings(configGet) {
  const get = (key) => configGet(key) ?? undefined; // none may arrive as undefined or null
  const trimmed = (key) => {
    const value = get(key)?.trim();
    return value ? value : undefined;
  };
  const setting = (key, fallback) => trimmed(key) ?? fallback;

  // Checked before `url`, in carrier-http's order, so the same setting is named first.
  const header = get('auth_header');
  const value = get('auth_value');
  let auth;
  if (header !== undefined && value !== undefined && header.trim() !== '') {
    auth = [header.trim(), value];
  } else if (header !== undefined) {
    throw missingSetting('auth_value');
  } else if (value !== undefined) {
    throw missingSetting('auth_header');
  }
  const url = get('url');
  if (!url) throw missingSetting('url');
  return {
    url: url.trim(),
    method: setting('method', 'POST').toUpperCase(),
    auth,
    toField: setting('to_field', 'to'),
    fromField: setting('from_field', 'from'),
    bodyField: setting('body_field', 'body'),
    idField: setting('id_field', 'id'),
    metadataField: trimmed('metadata_field'),
    responseIdField: setting('response_id_field', 'id'),
  };
}

/** The gateway request (WIT `http.request`) for `message`. */
export function buildRequest(message, settings) {
  const body = {
    [settings.idField]: message.id,
    [settings.toField]: message.to,
    [settings.fromField]: message.from,
    [settings.bodyField]: message.body,
  };
  if (settings.metadataField !== undefined) {
    body[settings.metadataField] = Object.fromEntries(message.metadata);
  }
  const headers = [{ name: 'Accept', value: 'application/json' }];
  if (settings.auth) {
    headers.push({ name: settings.auth[0], value: settings.auth[1] });
  }
  headers.push({ name: 'Content-Type', value: 'application/json' });
  return { method: settings.method, url: settings.url, headers, body: utf8.encode(JSON.stringify(body)) };
}

/** The first header called `name`, case-insensitively. */
export function header(headers, name) {
  const wanted = name.toLowerCase();
  return headers.find((h) => h.name.toLowerCase() === wanted)?.value;
}

// Rust's `f64` syntax for delta-seconds, without the hexadecimal and `Infinity` that `Number()` also takes.
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** `Retry-After` (delta-seconds) in milliseconds as a BigInt; the default when absent or not a number. */
export function retryAfterMs(response) {
  const raw = header(response.headers, 'retry-after')?.trim();
  if (raw === undefined || !DECIMAL.test(raw)) return DEFAULT_RETRY_AFTER_MS;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) return DEFAULT_RETRY_AFTER_MS;
  const ms = BigInt(Math.ceil(seconds * 1000));
  return ms > MAX_U64 ? MAX_U64 : ms; // Rust's `as u64` saturates too
}

/** The value at dotted `path` in `value` as text (strings as they are, numbers printed). */
export function lookup(value, path) {
  let found = value;
  for (const key of path.split('.')) {
    if (typeof found !== 'object' || found === null || Array.isArray(found) || !Object.hasOwn(found, key)) {
      return undefined;
    }
    found = found[key];
  }
  if (typeof found === 'string' && found !== '') return found;
  if (typeof found === 'number') return String(found);
  return undefined;
}

function text(body) {
  return new TextDecoder().decode(body); // invalid UTF-8 becomes U+FFFD, as in Rust's `text()`
}

/** The answer's text for an error reason: trimmed, at most 200 characters. */
function excerpt(response) {
  const chars = Array.from(text(response.body).trim());
  return chars.length > EXCERPT_CHARS ? `${chars.slice(0, EXCERPT_CHARS).join('')}…` : chars.join('');
}

function parseJson(body) {
  return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
}

/**
 * Maps the gateway's answer to `send`'s result: returns the `accepted` record
 * or throws a `send-error`. `messageId` is the carrier message id when a 2xx
 * answer carries none.
 */
export function mapResponse(response, responseIdField, messageId, log) {
  const { status } = response;
  if (status >= 200 && status <= 299) {
    let id;
    try {
      id = lookup(parseJson(response.body), responseIdField);
    } catch {
      id = undefined; // no JSON answer: same as an answer without the id
    }
    if (id === undefined) {
      log('warn', `the gateway's answer has no \`${responseIdField}\`: using Herald's message id ${messageId}`);
      id = messageId;
    }
    return { carrierMessageId: id, status: 'sent' };
  }
  if (status === 429) throw witError('rate-limited', retryAfterMs(response));
  // Wrong credentials fail every message alike: the carrier must be paused.
  if (status === 401 || status === 403) {
    throw misconfigured(`gateway refused the credentials (HTTP ${status}): ${excerpt(response)}`);
  }
  if (status === 408 || (status >= 500 && status <= 599)) {
    throw retryable(`gateway HTTP ${status}: ${excerpt(response)}`);
  }
  if (status >= 400 && status <= 499) {
    throw permanent(`gateway refused (HTTP ${status}): ${excerpt(response)}`);
  }
  throw retryable(`unexpected gateway answer HTTP ${status}: ${excerpt(response)}`);
}

/** The `send-error` for a failed `fetch` (a thrown WIT `http.error`). */
function fetchFailure(error) {
  switch (error.tag) {
    // The URL and method are settings, and a host off `allowed_hosts` is the
    // operator's configuration: only an operator can fix them.
    case 'denied':
      return misconfigured(`HTTP request denied: ${error.val}`);
    case 'invalid-request':
      return misconfigured(`invalid HTTP request: ${error.val}`);
    // Never `accepted` nor `permanent`: the request may have reached the gateway,
    // and Herald, which made it, holds the message for reconciliation.
    case 'timeout':
      return retryable('HTTP request timed out');
    case 'too-large':
      return retryable(`HTTP response larger than ${error.val} bytes`);
    case 'transport':
      return retryable(`HTTP transport error: ${error.val}`);
    default:
      return retryable(`HTTP error ${JSON.stringify(error)}`);
  }
}

/** How a `send-error` reads in a log line, as Rust's `Display` writes it. */
function describeSendError({ tag, val }) {
  return tag === 'rate-limited' ? `rate limited: retry after ${val} ms` : `${tag}: ${val}`;
}

/** Constant-time comparison of two strings' UTF-8 bytes (the length is not secret). */
function sameSecret(presented, secret) {
  const a = utf8.encode(presented);
  const b = utf8.encode(secret);
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i += 1) difference |= a[i] ^ b[i];
  return difference === 0;
}

/** Throws `unauthorized` unless `request` carries `headerName` with exactly `secret`. */
export function checkSecret(request, headerName, secret) {
  if (secret === '') throw unauthorized(`no secret is configured to check ${headerName} against`);
  const presented = header(request.headers, headerName);
  if (presented === undefined) throw unauthorized(`missing ${headerName}`);
  if (!sameSecret(presented, secret)) throw unauthorized(`wrong ${headerName}`);
}

/** The string field `name` of a webhook event; ids may be numbers. */
function stringField(item, name) {
  const value = item[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && name === 'id') return String(value);
  throw malformed(`\`${name}\` must be a string, not ${JSON.stringify(value)}`);
}

function requiredField(item, name) {
  const value = stringField(item, name);
  if (!value) throw malformed(`missing \`${name}\``);
  return value;
}

const STATUSES = new Map([
  ...['sent', 'queued', 'accepted'].map((s) => [s, 'sent']),
  ['delivered', 'delivered'],
  ...['failed', 'undelivered', 'rejected', 'expired'].map((s) => [s, 'failed']),
]);

function statusUpdate(item) {
  const carrierMessageId = requiredField(item, 'id');
  const raw = requiredField(item, 'status');
  const status = STATUSES.get(raw.toLowerCase());
  if (status === undefined) throw malformed(`unknown status \`${raw}\` (sent, delivered or failed)`);
  const error = status === 'failed' ? (stringField(item, 'error') ?? raw) : undefined;
  return { tag: 'delivery', val: { carrierMessageId, status, error } };
}

/** Checks the token and parses the webhook body into `webhook-event`s. */
export function parseWebhook(kind, request, token) {
  checkSecret(request, TOKEN_HEADER, token); // before the body is looked at
  let value;
  try {
    value = parseJson(request.body);
  } catch (error) {
    throw malformed(`body is not JSON: ${error.message}`);
  }
  const items = Array.isArray(value) ? value : [value];
  return items.map((item) => {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) {
      throw malformed('each event must be a JSON object');
    }
    if (kind === 'status') return statusUpdate(item);
    const inbound = { from: requiredField(item, 'from'), to: requiredField(item, 'to') };
    return { tag: 'inbound', val: { ...inbound, body: stringField(item, 'body') ?? '' } };
  });
}

/**
 * The carrier's exports, `{ send, handleWebhook }`, on the host functions
 * given: `configGet(key)` (string or undefined), `log(level, line)` and
 * `fetch(request)` (returns the response or throws `{ payload: http.error }`).
 */
export function createCarrier({ configGet, log, fetch }) {
  return {
    send(message) {
      let settings;
      try {
        settings = loadSettings(configGet);
      } catch (error) {
        if (error instanceof SettingError) throw misconfigured(error.message);
        throw error;
      }
      let response;
      try {
        response = fetch(buildRequest(message, settings));
      } catch (error) {
        if (isWitError(error)) throw fetchFailure(error.payload);
        throw error;
      }
      try {
        const accepted = mapResponse(response, settings.responseIdField, message.id, log);
        log('debug', `${message.id} accepted as ${accepted.carrierMessageId}`);
        return accepted;
      } catch (error) {
        if (isWitError(error)) log('debug', `${message.id} not accepted: ${describeSendError(error.payload)}`);
        throw error;
      }
    },

    handleWebhook(kind, request) {
      const token = configGet('webhook_token');
      if (!token?.trim()) {
        throw unauthorized('webhooks are disabled until `webhook_token` is set in the settings');
      }
      return parseWebhook(kind, request, token);
    },
  };
}

/** What an uncaught exception says: its name, message and stack. */
function describeException(thrown) {
  if (thrown instanceof Error) {
    const head = `${thrown.name}: ${thrown.message}`;
    const stack = thrown.stack ?? '';
    // V8 starts the stack with the message, SpiderMonkey (in the component) does not.
    return stack.startsWith(head) ? stack : `${head}\n${stack}`.trimEnd();
  }
  try {
    return JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}

/**
 * `exports` with every function logging an exception that is not a WIT error
 * (a bug) at error level before rethrowing it. The rethrow traps the call,
 * which Herald fails as retryable, like a panic in Rust; without this log the
 * trap would carry no message at all.
 */
export function logUncaught(exports, log) {
  return Object.fromEntries(
    Object.entries(exports).map(([name, fn]) => [
      name,
      (...args) => {
        try {
          return fn(...args);
        } catch (thrown) {
          if (!isWitError(thrown)) log('error', `uncaught exception in ${name}: ${describeException(thrown)}`);
          throw thrown;
        }
      },
    ]),
  );
}
