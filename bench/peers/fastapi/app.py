"""The FastAPI + sse-starlette + uvicorn peer of issue 7: the seeds' design, as the seeds built it.

An in-memory `JobEventManager` keeps, per job (topic), a list of subscribers, each with its own
unbounded `asyncio.Queue`; `notify` puts a `ServerSentEvent` (type and JSON data, no id) into every
queue; the SSE endpoint streams its queue through sse-starlette's `EventSourceResponse`. Like the
seeds, there is no history and no event id: a client that reconnects (with or without
Last-Event-ID) gets only what is published after it is back, and a restart loses everything.

    GET  /api/v1/events/{job_id}                       the SSE stream of one job
    POST /api/v1/events/{job_id}  {"type": ..., "data": ...}   publish (the seeds' webhook -> notify)
    GET  /healthz

Run: uvicorn app:app --app-dir bench/peers/fastapi --no-access-log --log-level warning
(bench/lib.sh starts it; uvicorn[standard], so uvloop and httptools, as usually deployed).
"""

import asyncio
import json
import logging
from collections import defaultdict

from fastapi import FastAPI, Request
from sse_starlette.sse import EventSourceResponse, ServerSentEvent

log = logging.getLogger("jobevents")


class JobEventManager:
    """In-memory pub/sub: job id -> subscribers, each with its own queue."""

    def __init__(self) -> None:
        self.subscribers: dict[str, list[dict]] = defaultdict(list)

    def subscribe(self, job_id: str) -> dict:
        subscriber = {"queue": asyncio.Queue()}
        self.subscribers[job_id].append(subscriber)
        log.debug("New subscriber for job: %s (%d)", job_id, len(self.subscribers[job_id]))
        return subscriber

    def unsubscribe(self, job_id: str, subscriber: dict) -> None:
        subs = self.subscribers.get(job_id)
        if subs is None:
            return
        try:
            subs.remove(subscriber)
        except ValueError:
            pass
        if not subs:
            del self.subscribers[job_id]

    async def notify(self, job_id: str, event_type: str, data) -> int:
        subs = list(self.subscribers.get(job_id, ()))
        log.debug("Notifying %d subscribers for job: %s", len(subs), job_id)
        event_data = data if isinstance(data, str) else json.dumps(data)
        for subscriber in subs:
            await subscriber["queue"].put(ServerSentEvent(data=event_data, event=event_type))
        return len(subs)


job_events = JobEventManager()
app = FastAPI()


@app.get("/api/v1/events/{job_id:path}")
async def stream_job_events(job_id: str, request: Request):
    subscriber = job_events.subscribe(job_id)

    async def event_generator():
        try:
            while True:
                yield await subscriber["queue"].get()
        finally:
            job_events.unsubscribe(job_id, subscriber)

    return EventSourceResponse(event_generator())


@app.post("/api/v1/events/{job_id:path}")
async def publish_job_event(job_id: str, request: Request):
    body = await request.json()
    delivered = await job_events.notify(job_id, body.get("type", "message"), body.get("data"))
    return {"subscribers": delivered}


@app.get("/healthz")
async def healthz():
    return {"status": "ok"}
