"""Locust users for operators who already load-test with locust (``pip install -e
'.[load]'``). It runs as its own process, never inside the engine (locust monkey-patches
the standard library with gevent).

    AFTERHOURS_TOKEN=<admin token or a project's API key> AFTERHOURS_PROJECT=smith-plumbing \\
    TWILIO_AUTH_TOKEN=<the engine's> AFTERHOURS_NUMBER=+15557654321 \\
        .venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:8080

- ``ApiUser``: the HTTP API as dashboards and probes use it: ``/health``, the analytics
  summary, recent calls and daily statistics.
- ``CallUser``: one caller at Twilio's pace through the real path (signed webhook,
  TwiML, signed media stream, ``start``, a 20 ms mu-law frame every 20 ms, marks
  returned, ``stop``), reporting each frame's echo round trip as a ``media`` request
  (with the engine pointed at the echoing simulated model: ``python -m
  bench.model_process``). ``bench/calls.py`` measures the same more cheaply and more
  precisely; this user is for mixed scenarios in an existing locust setup. Its frames are
  Twilio's as every simulated peer sends them (engine/simulator/twilio_frames.py: pure,
  so it imports nothing of the engine's runtime into the gevent process).
"""

from __future__ import annotations

import base64
import json
import os
import time

import gevent
import websocket
from locust import HttpUser, User, between, events, task
from twilio.request_validator import RequestValidator

from engine.simulator.twilio_frames import (
    ACCOUNT_SID,
    TwilioFrames,
    new_call_sid,
    new_stream_sid,
    stream_of,
)

TOKEN = os.environ.get("AFTERHOURS_TOKEN", "")
PROJECT = os.environ.get("AFTERHOURS_PROJECT", "smith-plumbing")
NUMBER = os.environ.get("AFTERHOURS_NUMBER", "+15557654321")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "")
CALL_SECONDS = float(os.environ.get("AFTERHOURS_CALL_SECONDS", "30"))
FRAME_S = 0.020


class ApiUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.client.headers["Authorization"] = f"Bearer {TOKEN}"

    @task(3)
    def health(self) -> None:
        self.client.get("/health")

    @task(2)
    def summary(self) -> None:
        self.client.get(f"/analytics/project/{PROJECT}", name="/analytics/project/[id]")

    @task(2)
    def recent(self) -> None:
        self.client.get(
            f"/analytics/project/{PROJECT}/recent?limit=20", name="/analytics/project/[id]/recent"
        )

    @task(1)
    def statistics(self) -> None:
        self.client.get(
            f"/analytics/project/{PROJECT}/statistics", name="/analytics/project/[id]/statistics"
        )


class CallUser(User):
    wait_time = between(1.0, 3.0)

    @task
    def call(self) -> None:
        validator = RequestValidator(TWILIO_AUTH_TOKEN)
        call_sid = new_call_sid()
        form = {
            "CallSid": call_sid,
            "AccountSid": ACCOUNT_SID,
            "From": "+15550100000",
            "To": NUMBER,
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        import requests

        signature = validator.compute_signature(f"{self.host}/twilio/voice", form)
        twiml = requests.post(
            f"{self.host}/twilio/voice",
            data=form,
            headers={"X-Twilio-Signature": signature},
            timeout=10,
        ).text
        stream = stream_of(twiml)
        if stream is None:
            events.request.fire(
                request_type="call",
                name="webhook",
                response_time=0,
                response_length=0,
                exception=RuntimeError(twiml[:100]),
            )
            return
        ws = websocket.create_connection(
            stream.url,
            header=[f"X-Twilio-Signature: {validator.compute_signature(stream.url, {})}"],
        )
        frames = TwilioFrames(new_stream_sid(), call_sid)
        ws.send(frames.start(stream.parameters).decode())
        sent_at: dict[str, float] = {}
        reader = gevent.spawn(self._listen, ws, frames, sent_at)
        ends_at = time.monotonic() + CALL_SECONDS
        n = 0
        while time.monotonic() < ends_at:
            n += 1
            payload = base64.b64encode((f"{n:016d}".encode() + b"\xff" * 160)[:160])
            sent_at[payload.decode()] = time.perf_counter()
            ws.send(frames.media(payload).decode())
            gevent.sleep(FRAME_S)
        ws.send(frames.stop().decode())
        reader.kill()
        ws.close()

    def _listen(
        self, ws: websocket.WebSocket, frames: TwilioFrames, sent_at: dict[str, float]
    ) -> None:
        while True:
            event = json.loads(ws.recv())
            if event["event"] == "media":
                sent = sent_at.pop(event["media"]["payload"], None)
                if sent is not None:
                    events.request.fire(
                        request_type="media",
                        name="echo round trip",
                        response_time=(time.perf_counter() - sent) * 1000,
                        response_length=0,
                        exception=None,
                    )
            elif event["event"] == "mark":
                ws.send(frames.mark(event["mark"]["name"]).decode())
