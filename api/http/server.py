"""The API server as a supervised child: Hypercorn's trio worker, stopped by its
``StopSignal`` (Hypercorn installs no signal handlers of its own)."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, cast

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from engine.errors import StartupError

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

    from api.http.app import App
    from engine.lifecycle import StopSignal

log = logging.getLogger("afterhours.api")

# In-flight HTTP requests get this long after a stop. The API is the last child started,
# so it is the first stopped: no new call arrives while the calls group drains.
HTTP_GRACEFUL_TIMEOUT_S = 2.0


class ApiServer:
    def __init__(
        self,
        app: App,
        *,
        host: str,
        port: int,
        reuse_port: bool = False,
        own_port: int | None = None,
    ) -> None:
        self._app = app
        self.app = app  # read-only use: its statistics and route table
        self._host = host
        self._port = port
        self._reuse_port = reuse_port  # workers share PORT (SO_REUSEPORT)
        self._own_port = own_port  # a worker's private port, for its own metrics
        self.bound_urls: list[str] = []

    def _config(self) -> Config:
        host = f"[{self._host}]" if ":" in self._host else self._host  # IPv6 literal
        config = Config()
        config.bind = [f"{host}:{self._port}"]
        if self._own_port is not None:
            config.bind.append(f"{host}:{self._own_port}")
        if self._reuse_port:
            config.workers = 2  # Hypercorn sets SO_REUSEPORT on its sockets when > 1
        config.graceful_timeout = HTTP_GRACEFUL_TIMEOUT_S
        config.accesslog = None
        config.errorlog = logging.getLogger("afterhours.http")
        return config

    async def run(self, stop: StopSignal, *, task_status: trio.TaskStatus[list[str]]) -> None:
        bind_error: OSError | None = None
        async with trio.open_nursery() as nursery:
            # Our App speaks plain-dict ASGI; hypercorn's TypedDicts describe the same messages.
            app = cast("ASGIFramework", self._app)
            serving = partial(serve, app, self._config(), shutdown_trigger=stop.wait)
            try:
                self.bound_urls = await nursery.start(serving)
            except* OSError as group:  # hypercorn raises the bind error inside a group
                bind_error = _first_leaf(group)  # raised below, outside the nursery
            else:
                log.info("API listening on %s", ", ".join(self.bound_urls))
                task_status.started(self.bound_urls)
        if bind_error is not None:
            reason = bind_error.strerror or str(bind_error)
            raise StartupError(f"cannot listen on {self._host}:{self._port} (HOST/PORT): {reason}")


def _first_leaf(group: BaseExceptionGroup[OSError]) -> OSError:
    first = group.exceptions[0]
    return first if isinstance(first, OSError) else _first_leaf(first)
