#!/usr/bin/env python3
"""A pretend GPU job service for the Tidings jobs example (Python 3 standard library only).

It "submits" a job, then reports on it the way a real job service would: signed webhooks
(Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature) to the hub's
POST /webhooks/jobs, one per state change: QUEUED, PROCESSING, IN_PROGRESS 10..100, then
COMPLETED (or FAILED with --fail). Each delivery is retried, with the same webhook-id, until
the hub answers 2xx, as senders do; at the end one delivery is sent again on purpose to show
that a retry publishes nothing new.

    python3 examples/jobs/job.py                  # a new job, against http://127.0.0.1:8080
    python3 examples/jobs/job.py --fail --job photo-7 --delay 0.2
"""

import argparse
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
import uuid

# The demo secret of examples/jobs/tidings.toml.
DEMO_SECRET = "whsec_Me9IPOZu1qEAGtADXUtRtR4+G3rxiAIi"


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks signature: HMAC-SHA256 of "{id}.{timestamp}.{body}", base64."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def deliver(url: str, secret: str, msg_id: str, payload: dict, attempts: int = 5) -> dict:
    """POSTs one delivery until the hub answers 2xx; a retry keeps the webhook-id."""
    body = json.dumps(payload).encode()
    for attempt in range(1, attempts + 1):
        timestamp = int(time.time())  # each attempt is signed afresh
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, msg_id, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            reason = e.read().decode(errors="replace").strip()
            if e.code < 500 and e.code != 429:
                sys.exit(f"the hub refused {msg_id}: {e.code} {reason}")
            print(f"  hub answered {e.code} ({reason}); retrying", file=sys.stderr)
        except (urllib.error.URLError, OSError) as e:
            print(f"  could not reach the hub ({e}); retrying", file=sys.stderr)
        time.sleep(min(2**attempt, 10) / 4)
    sys.exit(f"gave up on {msg_id} after {attempts} attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hub", default="http://127.0.0.1:8080", help="the hub's base URL")
    parser.add_argument("--webhook", default="jobs", help="the webhook's name in tidings.toml")
    parser.add_argument("--secret", default=DEMO_SECRET, help="the webhook's whsec_ secret")
    parser.add_argument("--job", default=None, help="the job id [default: a new one]")
    parser.add_argument("--page", default="http://127.0.0.1:8000/", help="where index.html is served")
    parser.add_argument("--wait", type=float, default=5.0, help="seconds before the job starts")
    parser.add_argument("--delay", type=float, default=0.7, help="seconds between reports")
    parser.add_argument("--fail", action="store_true", help="end with FAILED instead of COMPLETED")
    args = parser.parse_args()

    job = args.job or f"job-{uuid.uuid4().hex[:8]}"
    url = f"{args.hub.rstrip('/')}/webhooks/{args.webhook}"
    print(f"submitted job {job}")
    print(f"  watch it in a browser: {args.page}?job={job}&hub={args.hub}")
    print(f"  or in a terminal:      curl -N '{args.hub}/events/jobs/{job}?latest=1&until=completed&until=failed'")
    time.sleep(args.wait)

    worker = {"gpu": "pretend-A100", "host": "gpu-7"}  # extra fields: the hub keeps them
    steps = [{"status": "QUEUED", "position": 1}, {"status": "PROCESSING", "worker": worker}]
    steps += [{"status": "IN_PROGRESS", "percent": p} for p in range(10, 101, 10)]
    if args.fail:
        steps.append({"status": "FAILED", "error": "the pretend GPU ran out of memory"})
    else:
        steps.append({"status": "COMPLETED", "output": {"url": f"/photos/{job}.jpg"}})

    msg_id = ""
    payload: dict = {}
    for n, step in enumerate(steps):
        if n:
            time.sleep(args.delay)
        msg_id = f"msg_{job}_{n}"
        payload = {"id": job, **step}
        answer = deliver(url, args.secret, msg_id, payload)
        print(f"-> {step['status']:<11} {step.get('percent', ''):>3}  stored as {answer['id']}")

    answer = deliver(url, args.secret, msg_id, payload)
    print(f"-> the last delivery again: {answer} (a retry publishes nothing new)")


if __name__ == "__main__":
    main()
