// Native tests of carrier.js (`node --test`): the same cases as the Rust
// reference's tests in plugins/carrier-http/src/lib.rs, on a fake host.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_RETRY_AFTER_MS, createCarrier, logUncaught, mapResponse } from '../src/carrier.js';

const URL = 'https://gateway.internal.example/v1/sms';
const TOKEN = 'tok-123';
const utf8 = new TextEncoder();

const message = () => ({
  id: 'msg-1',
  to: '+15550100',
  from: 'ACME',
  body: 'Hello "there"',
  segments: 1,
  encoding: 'gsm7',
  metadata: [['campaign', 'c-9']],
});

const response = (status, { headers = [], body = '' } = {}) => ({ status, headers, body: utf8.encode(body) });
const json = (status, value) =>
  response(status, { headers: [{ name: 'Content-Type', value: 'application/json' }], body: JSON.stringify(value) });

/** A fake host: `settings`, `answers` (responses, or WIT `http.error`s to throw) in order; records requests and logs. */
function fakeHost(settings = {}, answers = []) {
  const host = { settings: { ...settings }, requests: [], logs: [] };
  host.carrier = createCarrier({
    configGet: (key) => host.settings[key],
    log: (level, line) => host.logs.push([level, line]),
    fetch: (request) => {
      host.requests.push(request);
      const answer = answers.shift();
      if (answer === undefined) throw new Error('no answer queued');
      if (answer.tag !== undefined) throw { payload: answer };
      return answer;
    },
  });
  return host;
}

/** What `fn` threw as a WIT error: the `payload`. */
function thrownPayload(fn) {
  try {
    fn();
  } catch (thrown) {
    assert.ok(Object.hasOwn(thrown, 'payload'), `not a WIT error: ${thrown}`);
    return thrown.payload;
  }
  assert.fail('nothing was thrown');
}

const requestBody = (request) => JSON.parse(new TextDecoder().decode(request.body));
const headerOf = (request, name) => request.headers.find((h) => h.name.toLowerCase() === name)?.value;

test('posts JSON with the default fields', () => {
  const host = fakeHost({ url: URL }, [json(202, { id: 'gw-77' })]);
  assert.deepEqual(host.carrier.send(message()), { carrierMessageId: 'gw-77', status: 'sent' });
  const [request] = host.requests;
  assert.equal(request.method, 'POST');
  assert.equal(request.url, URL);
  assert.equal(headerOf(request, 'content-type'), 'application/json');
  assert.equal(headerOf(request, 'authorization'), undefined);
  assert.ok(request.body instanceof Uint8Array);
  assert.deepEqual(requestBody(request), { id: 'msg-1', to: '+15550100', from: 'ACME', body: 'Hello "there"' });
});

test('custom fields, method and auth header', () => {
  const host = fakeHost(
    {
      url: URL,
      method: 'put',
      auth_header: 'Authorization',
      auth_value: 'Bearer s3cret',
      to_field: 'msisdn',
      from_field: 'sender',
      body_field: 'text',
      id_field: 'reference',
      metadata_field: 'tags',
      response_id_field: 'data.message_id',
    },
    [json(200, { data: { message_id: 4711 } })],
  );
  assert.equal(host.carrier.send(message()).carrierMessageId, '4711');
  const [request] = host.requests;
  assert.equal(request.method, 'PUT');
  assert.equal(headerOf(request, 'authorization'), 'Bearer s3cret');
  assert.deepEqual(requestBody(request), {
    reference: 'msg-1',
    msisdn: '+15550100',
    sender: 'ACME',
    text: 'Hello "there"',
    tags: { campaign: 'c-9' },
  });
});

test('an answer without an id falls back to the message id, with a warning', () => {
  const host = fakeHost({ url: URL }, [response(204)]);
  assert.equal(host.carrier.send(message()).carrierMessageId, 'msg-1');
  assert.ok(host.logs.some(([level, line]) => level === 'warn' && line.includes('`id`')), host.logs);
});

test('settings errors are misconfigured and name the setting', () => {
  const host = fakeHost();
  const misconfigured = (key) => {
    const { tag, val } = thrownPayload(() => host.carrier.send(message()));
    assert.equal(tag, 'permanent');
    assert.ok(val.startsWith('misconfigured:') && val.includes(key), val);
  };
  misconfigured('`url`');
  host.settings = { url: URL, auth_header: 'X-Key' };
  misconfigured('`auth_value`');
  host.settings = { url: URL, auth_value: 'k' };
  misconfigured('`auth_header`');
  assert.deepEqual(host.requests, []);
});

test('status mapping', () => {
  const map = (r) => () => mapResponse(r, 'id', 'm', () => {});
  assert.equal(map(json(201, { id: 'x' }))().carrierMessageId, 'x');
  const retryAfter = (value) => ({ headers: [{ name: 'Retry-After', value }] });
  assert.deepEqual(thrownPayload(map(response(429, retryAfter('3')))), { tag: 'rate-limited', val: 3000n });
  assert.deepEqual(thrownPayload(map(response(429, retryAfter('0.25')))), { tag: 'rate-limited', val: 250n });
  for (const r of [response(429), response(429, retryAfter('soon')), response(429, retryAfter('0x10'))]) {
    assert.deepEqual(thrownPayload(map(r)), { tag: 'rate-limited', val: DEFAULT_RETRY_AFTER_MS });
  }
  for (const status of [401, 403]) {
    const { tag, val } = thrownPayload(map(response(status, { body: 'bad token' })));
    assert.equal(tag, 'permanent');
    assert.ok(val.startsWith('misconfigured:') && val.includes(`HTTP ${status}): bad token`), val);
  }
  for (const status of [400, 404, 422]) {
    const { tag, val } = thrownPayload(map(response(status, { body: 'bad number' })));
    assert.equal(tag, 'permanent');
    assert.ok(val.includes(String(status)) && val.includes('bad number') && !val.startsWith('misconfigured:'), val);
  }
  for (const status of [408, 500, 502, 503, 302]) {
    assert.equal(thrownPayload(map(response(status))).tag, 'retryable', status);
  }
  const long = thrownPayload(map(response(400, { body: 'x'.repeat(1000) })));
  assert.ok(long.val.length < 300, long.val);
});

test('transport failures', () => {
  const host = fakeHost({ url: URL }, [
    { tag: 'timeout' },
    { tag: 'transport', val: 'refused' },
    { tag: 'denied', val: 'not allowed' },
    { tag: 'invalid-request', val: 'method "SNED"' },
  ]);
  const send = () => thrownPayload(() => host.carrier.send(message()));
  assert.equal(send().tag, 'retryable');
  assert.equal(send().tag, 'retryable');
  assert.ok(send().val.startsWith('misconfigured:'));
  const invalid = send();
  assert.ok(invalid.tag === 'permanent' && invalid.val.startsWith('misconfigured:') && invalid.val.includes('SNED'));
});

const webhook = (body, token) => ({
  method: 'POST',
  url: 'https://herald.example/webhooks/gw/status',
  query: '',
  headers: token === undefined ? [] : [{ name: 'x-webhook-token', value: token }],
  body: utf8.encode(body),
});

test('status webhooks', () => {
  const { carrier } = fakeHost({ webhook_token: TOKEN });
  const body = `[{"id":"gw-1","status":"delivered"},{"id":"gw-2","status":"failed","error":"absent"},
                 {"id":"gw-3","status":"sent"},{"id":4,"status":"undelivered"}]`;
  const update = (carrierMessageId, status, error) => ({ tag: 'delivery', val: { carrierMessageId, status, error } });
  assert.deepEqual(carrier.handleWebhook('status', webhook(body, TOKEN)), [
    update('gw-1', 'delivered', undefined),
    update('gw-2', 'failed', 'absent'),
    update('gw-3', 'sent', undefined),
    update('4', 'failed', 'undelivered'),
  ]);
});

test('inbound webhooks', () => {
  const { carrier } = fakeHost({ webhook_token: TOKEN });
  const events = carrier.handleWebhook('inbound', webhook('{"from":"+15550101","to":"ACME","body":"STOP"}', TOKEN));
  assert.deepEqual(events, [{ tag: 'inbound', val: { from: '+15550101', to: 'ACME', body: 'STOP' } }]);
});

test('webhooks need the token, checked before the body', () => {
  const { carrier } = fakeHost({ webhook_token: TOKEN });
  const body = '{"id":"gw-1","status":"delivered"}';
  assert.equal(carrier.handleWebhook('status', webhook(body, TOKEN)).length, 1);
  for (const presented of [undefined, 'tok-12', 'tok-1234', 'TOK-123', '']) {
    assert.equal(thrownPayload(() => carrier.handleWebhook('status', webhook(body, presented))).tag, 'unauthorized');
  }
  assert.equal(thrownPayload(() => carrier.handleWebhook('status', webhook('garbage', 'wrong'))).tag, 'unauthorized');
});

test('webhooks are disabled without a token', () => {
  const body = '{"from":"+15550101","to":"ACME","body":"STOP"}';
  for (const setting of [undefined, '', ' ']) {
    const { carrier } = fakeHost({ webhook_token: setting });
    for (const presented of [undefined, setting]) {
      const { tag, val } = thrownPayload(() => carrier.handleWebhook('inbound', webhook(body, presented)));
      assert.equal(tag, 'unauthorized');
      assert.ok(val.includes('disabled until `webhook_token` is set'), val);
    }
  }
});

test('malformed webhooks', () => {
  const { carrier } = fakeHost({ webhook_token: TOKEN });
  const cases = [
    ['status', 'garbage', 'not JSON'],
    ['status', '{"status":"delivered"}', '`id`'],
    ['status', '{"id":"a"}', '`status`'],
    ['status', '{"id":"a","status":"teleported"}', 'unknown status'],
    ['status', '{"id":"a","status":"failed","error":3}', '`error`'],
    ['status', '[1]', 'JSON object'],
    ['inbound', '{"to":"+1","body":"x"}', '`from`'],
    ['inbound', '{"from":"+1","body":"x"}', '`to`'],
  ];
  for (const [kind, body, expected] of cases) {
    const { tag, val } = thrownPayload(() => carrier.handleWebhook(kind, webhook(body, TOKEN)));
    assert.equal(tag, 'malformed', body);
    assert.ok(val.includes(expected), `${body}: ${val}`);
  }
});

test('an uncaught exception is logged at error level with its message, then rethrown', () => {
  const logs = [];
  const exports = logUncaught(
    {
      send: (message) => message.missing.field,
      handleWebhook: () => {
        throw { payload: { tag: 'malformed', val: 'x' } };
      },
    },
    (level, line) => logs.push([level, line]),
  );
  assert.throws(() => exports.send({}), TypeError);
  assert.equal(logs.length, 1);
  const [level, line] = logs[0];
  assert.equal(level, 'error');
  assert.match(line, /^uncaught exception in send: TypeError: .*undefined/);
  // A WIT error is the function's result, not a bug: passed on without a log.
  assert.equal(thrownPayload(() => exports.handleWebhook()).tag, 'malformed');
  assert.equal(logs.length, 1);
});
