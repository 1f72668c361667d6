"""The documented nginx configuration (docs/deploy/nginx.conf), run for real on
127.0.0.1 with a self-signed certificate in front of the engine: a simulated call goes
through it end to end (https:// webhook, wss:// media stream, status callback), the
signatures checked over the public URLs nginx serves."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from engine.ports import free_port
from engine.simulator.caller import CallerConfig, place_call
from tests.helpers import TWILIO_AUTH_TOKEN, running_engine
from tests.test_call_e2e import wait_for_final
from tests.test_twilio_webhooks import ANSWERED, setup_project

DOCUMENTED = Path(__file__).parents[1] / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def configure(tmp: Path, listen_port: int, api_port: int, media_port: int) -> Path:
    """The documented server block, with only addresses and certificate paths changed,
    inside a minimal main configuration that runs in the foreground from ``tmp``."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            str(tmp / "key.pem"),
            "-out",
            str(tmp / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    server = DOCUMENTED.read_text()
    for old, new in (
        ("listen 443 ssl;", f"listen 127.0.0.1:{listen_port} ssl;"),
        ("server_name calls.example.com;", "server_name localhost;"),
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{api_port};"),
        ("server 127.0.0.1:8081;", f"server 127.0.0.1:{media_port};"),
        ("/etc/ssl/certs/calls.example.com.pem", str(tmp / "cert.pem")),
        ("/etc/ssl/private/calls.example.com.key", str(tmp / "key.pem")),
    ):
        assert old in server, f"the documented nginx.conf no longer has {old!r}"
        server = server.replace(old, new)
    (tmp / "afterhours.conf").write_text(server)
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log;\nevents {{ worker_connections 256; }}\n"
        f"http {{\n  access_log {tmp}/access.log;\n  client_body_temp_path {tmp}/body;\n"
        f"  proxy_temp_path {tmp}/proxy;\n  include {tmp}/afterhours.conf;\n}}\n"
    )
    return main


@pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (.ci/run installs it)")
async def test_a_call_through_the_documented_nginx_configuration(
    fresh_database: str, tmp_path: Path
) -> None:
    listen, api, media = free_port(), free_port(), free_port()
    public = f"https://localhost:{listen}"
    config = configure(tmp_path, listen, api, media)
    trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    async with (
        running_engine(
            fresh_database,
            tmp_path / "engine",
            PORT=str(api),
            MEDIA_PORT=str(media),
            PUBLIC_URL=public,
            PUBLIC_MEDIA_URL=f"wss://localhost:{listen}/twilio/media",
        ) as engine,
        trio.open_nursery() as nursery,
    ):
        nginx = await nursery.start(
            partial(
                trio.run_process,
                [NGINX, "-c", str(config), "-p", str(tmp_path)],
                check=False,
                stderr=subprocess.DEVNULL,
            )
        )
        try:
            await setup_project(engine)
            with trio.fail_after(30):
                await _listening(listen)
                caller = CallerConfig(
                    public, public, TWILIO_AUTH_TOKEN, ANSWERED, ssl_context=trusted
                )
                summary = await place_call(caller, "quick")
                record = await wait_for_final(fresh_database, summary.call_sid)
        finally:
            nginx.terminate()
            nursery.cancel_scope.cancel()
    access_log = (tmp_path / "access.log").read_text()
    assert summary.twiml_ok, summary.error
    assert summary.error is None
    assert summary.heard_ms > 0  # the greeting came back through nginx's WebSocket proxy
    assert summary.status_callback_error is None
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hung_up")
    assert [t["role"] for t in json.loads(record["transcript"])][:2] == ["assistant", "caller"]
    assert '"POST /twilio/voice HTTP/1.1" 200' in access_log
    assert '"GET /twilio/media HTTP/1.1" 101' in access_log


async def _listening(port: int) -> None:
    while True:
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            await trio.sleep(0.05)
            continue
        await stream.aclose()
        return
