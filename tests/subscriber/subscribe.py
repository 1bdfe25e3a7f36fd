#!/usr/bin/env python3
"""A NATS subscriber to Herald's events that is not Herald's code (docs/events.md).

How to run the subscriber test locally: the test `subscriber` in tests/api
(`cargo test -p herald-tests --test api subscriber`) starts this script with the
Python named by `TEST_PYTHON` (default `python3`), which must have nats-py:

    python3 -m venv /var/tmp/herald-ci-venv
    /var/tmp/herald-ci-venv/bin/pip install -r tests/subscriber/requirements.txt
    TEST_PYTHON=/var/tmp/herald-ci-venv/bin/python \
        cargo test -p herald-tests --test api subscriber

It also needs PostgreSQL and a NATS server with JetStream (`TEST_NATS_URL`, default
nats://127.0.0.1:4222); without nats-py the test is skipped with a notice, except
under CI=true where it fails. `.ci/run` sets all of this up.

By hand, against a running Herald:

    subscribe.py nats://127.0.0.1:4222 --user <user id> [--subject-prefix herald]
                 [--stream HERALD_EVENTS] [--count N] [--timeout SECONDS]

It subscribes to `<subject prefix>.events.<user id>.>` (a core NATS subscription,
or with --stream a JetStream ordered consumer on that stream, which also replays
what the stream already holds), prints `READY` once the subscription is in place,
then one JSON line per message:
`{"subject": …, "msg_id": <Nats-Msg-Id header>, "stream": <stream or null>, "event": <payload>}`
(`event` is null and `raw` holds the text when the payload is not JSON). It exits
after --count messages (status 0) or at --timeout (status 0 without --count, else 2).
"""

import argparse
import asyncio
import json
import sys

try:
    import nats
except ImportError:
    print(
        "subscribe.py: the nats-py package is missing; install it with "
        "`pip install -r tests/subscriber/requirements.txt`",
        file=sys.stderr,
    )
    sys.exit(4)


def parse_args():
    parser = argparse.ArgumentParser(description="Print Herald events received on NATS as JSON lines.")
    parser.add_argument("url", help="NATS server URL, e.g. nats://127.0.0.1:4222")
    parser.add_argument("--user", required=True, help="the user id (or `system` for carrier events)")
    parser.add_argument("--subject-prefix", default="herald", help="Herald's bus.subject_prefix (default herald)")
    parser.add_argument("--stream", help="consume this JetStream stream (e.g. HERALD_EVENTS) with an ordered consumer")
    parser.add_argument("--count", type=int, help="exit after this many messages")
    parser.add_argument("--timeout", type=float, default=60.0, help="exit after this many seconds (default 60)")
    return parser.parse_args()


def line_for(msg, stream):
    headers = msg.headers or {}
    record = {
        "subject": msg.subject,
        "msg_id": headers.get("Nats-Msg-Id"),
        "stream": stream,
    }
    try:
        record["event"] = json.loads(msg.data)
    except ValueError:
        record["event"] = None
        record["raw"] = msg.data.decode("utf-8", "replace")
    return json.dumps(record)


async def run(args):
    subject = f"{args.subject_prefix}.events.{args.user}.>"
    nc = await nats.connect(args.url, name="herald-subscriber-test", connect_timeout=5, max_reconnect_attempts=3)
    try:
        if args.stream:
            js = nc.jetstream()
            sub = await js.subscribe(subject, stream=args.stream, ordered_consumer=True)
        else:
            sub = await nc.subscribe(subject)
        # The server has the subscription once a round trip made after it is answered.
        await nc.flush()
        print("READY", flush=True)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + args.timeout
        received = 0
        while args.count is None or received < args.count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except nats.errors.TimeoutError:
                break
            stream = msg.metadata.stream if args.stream else None
            print(line_for(msg, stream), flush=True)
            received += 1
        if args.count is not None and received < args.count:
            print(f"subscribe.py: timed out after {received} of {args.count} messages", file=sys.stderr)
            return 2
        return 0
    finally:
        await nc.close()


def main():
    args = parse_args()
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
