"""The peer the engine is measured against: the simplest Twilio <-> Realtime bridge.

Written here in the style of Twilio's public sample (a FastAPI app on uvicorn, the model
leg on the ``websockets`` client, ``json`` for every message, one task per direction, a
mark after every audio delta, the audio re-encoded through base64 as the sample does,
no records, no signatures, no supervision). It is what an operator would otherwise run,
so ``bench/calls.py`` runs it side by side with the engine, under the same load and the
same model, and reports the engine's figures as ratios of its.

    .venv/bin/python -m bench.peer_bridge --port 8090 --model-url ws://127.0.0.1:9/v1/realtime

Prints ``ready`` on stdout once it listens. ``POST /incoming-call`` answers TwiML that
streams to ``/media-stream``; ``GET /health`` answers 200. uvicorn's defaults pick its
fastest installed parts (uvloop and httptools when present): the peer is given every
advantage it can have.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import sys
from typing import Any

import uvicorn
import websockets
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, PlainTextResponse

SESSION = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "alloy"},
        },
        "instructions": "You are a helpful receptionist.",
    },
}


def make_app(model_url: str, api_key: str) -> FastAPI:
    app = FastAPI()

    @app.get("/health", response_class=PlainTextResponse)
    async def health() -> str:
        return "ok"

    @app.api_route("/incoming-call", methods=["GET", "POST"])
    async def incoming_call(request: Request) -> HTMLResponse:
        host = request.url.hostname
        port = request.url.port
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="ws://{host}:{port}/media-stream" /></Connect></Response>'
        )
        return HTMLResponse(content=twiml, media_type="application/xml")

    @app.websocket("/media-stream")
    async def media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with websockets.connect(
            f"{model_url}?model=gpt-realtime", additional_headers=headers
        ) as model:
            await model.send(json.dumps(SESSION))
            stream_sid: dict[str, Any] = {"sid": None}
            marks: list[str] = []

            async def from_twilio() -> None:
                try:
                    async for message in websocket.iter_text():
                        data = json.loads(message)
                        if data["event"] == "media":
                            append = {
                                "type": "input_audio_buffer.append",
                                "audio": data["media"]["payload"],
                            }
                            await model.send(json.dumps(append))
                        elif data["event"] == "start":
                            stream_sid["sid"] = data["start"]["streamSid"]
                        elif data["event"] == "mark":
                            if marks:
                                marks.pop(0)
                        elif data["event"] == "stop":
                            break
                except WebSocketDisconnect:
                    pass
                await model.close()

            async def to_twilio() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for message in model:
                        event = json.loads(message)
                        if event.get("type") == "response.output_audio.delta" and "delta" in event:
                            payload = base64.b64encode(base64.b64decode(event["delta"])).decode()
                            await websocket.send_json(
                                {
                                    "event": "media",
                                    "streamSid": stream_sid["sid"],
                                    "media": {"payload": payload},
                                }
                            )
                            await websocket.send_json(
                                {
                                    "event": "mark",
                                    "streamSid": stream_sid["sid"],
                                    "mark": {"name": "responsePart"},
                                }
                            )
                            marks.append("responsePart")

            await asyncio.gather(from_twilio(), to_twilio())

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--api-key", default="sk-bench")
    args = parser.parse_args()
    config = uvicorn.Config(
        make_app(args.model_url, args.api_key), host="127.0.0.1", port=args.port,
        log_level="warning",
    )  # fmt: skip
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        await task

    try:  # what uvicorn's loop="auto" would pick
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
