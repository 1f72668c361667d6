"""The simulated Realtime model in echo mode, alone in its process (for bench/calls.py).

Prints its WebSocket URL on the first line of stdout and a statistics port on the
second; a TCP connection to that port gets one JSON line (sessions open and total, so
the benchmark can check that no model session outlives its call), then serves until
killed.

``--tls-dir DIR``: the model is served over TLS (``wss://``), as OpenAI's is, with a
certificate for 127.0.0.1 from a throwaway CA (``trustme``) whose PEM is written to
``DIR/ca.pem`` for the bridge to trust (``SSL_CERT_FILE``)."""

from __future__ import annotations

import argparse
import ssl
import sys
from functools import partial
from pathlib import Path

import msgspec
import trio
import trustme

from engine.simulator.model import SimulatedModel


async def serve(tls_dir: Path | None) -> None:
    model = SimulatedModel(echo=True)

    async def stats(stream: trio.SocketStream) -> None:
        async with stream:
            line = msgspec.json.encode(
                {
                    "sessions_open": model.statistics().sessions_open,
                    "sessions_total": model.statistics().sessions_total,
                }
            )
            await stream.send_all(line + b"\n")

    async with trio.open_nursery() as nursery:
        if tls_dir is None:
            url = await nursery.start(model.serve)
        else:
            authority = trustme.CA()
            authority.cert_pem.write_to_path(str(tls_dir / "ca.pem"))
            server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            authority.issue_cert("127.0.0.1").configure_cert(server_context)

            async def over_tls(stream: trio.SocketStream) -> None:
                await model.serve_stream(trio.SSLStream(stream, server_context, server_side=True))

            listeners = await nursery.start(partial(trio.serve_tcp, over_tls, 0, host="127.0.0.1"))
            url = f"wss://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1/realtime"
        listeners = await nursery.start(partial(trio.serve_tcp, stats, 0, host="127.0.0.1"))
        sys.stdout.write(f"{url}\n{listeners[0].socket.getsockname()[1]}\n")
        sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tls-dir", type=Path, default=None)
    trio.run(serve, parser.parse_args().tls_dir)


if __name__ == "__main__":
    main()
