"""``afterhours serve --workers N``: N engine processes, one per core.

The parent owns what the workers share: the embedded PostgreSQL when ``DATABASE_URL`` is
unset (its DSN is handed to the workers), and the signals. Each worker is a whole
engine (``serve`` with ``WORKERS=N`` and its ``WORKER_INDEX``): it binds ``PORT`` and
``MEDIA_PORT`` with SO_REUSEPORT, so the kernel spreads connections (and so calls) over
the workers, plus its own API port ``PORT + 100 + index``, where a scraper reads that
worker's ``/metrics`` (labelled ``afterhours_engine_info{worker,pid}``). Workers have
their own spool directories.

Signals are passed on: the first SIGTERM/SIGINT drains every worker, a second shortens
the drains, a third stops them at once. A worker that exits on its own is restarted
after a second; more than ``RESTART_INTENSITY`` allows (5 restarts in 60 s, counted as
the engine's own supervisor counts: ``RestartWindow``) and the parent stops them all and
exits 3, like that supervisor. The parent exits 0 when every
worker stopped cleanly.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import trio
import trio_asyncio

from api.root.database import open_engine_database
from engine.supervisor import RestartIntensity, RestartWindow

if TYPE_CHECKING:
    from pathlib import Path

    from engine.config import Settings

log = logging.getLogger("afterhours.workers")

RESTART_INTENSITY = RestartIntensity(max_restarts=5, period_s=60.0)
RESTART_DELAY_S = 1.0
EXIT_ESCALATED = 3


class Workers:
    def __init__(self, settings: Settings, env_file: Path) -> None:
        self._settings = settings
        self._env_file = env_file
        self._processes: dict[int, trio.Process] = {}
        self._stopping = False
        self._restarts = RestartWindow(RESTART_INTENSITY)
        self._gave_up = False
        self.exit_codes: dict[int, int] = {}

    async def run(self) -> int:
        async with (
            trio_asyncio.open_loop(),
            open_engine_database(self._settings, self._database_gave_up) as database,
        ):
            env = {**os.environ, "DATABASE_URL": database.dsn}
            env["WORKERS"] = str(self._settings.workers)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pass_signals)
                    async with trio.open_nursery() as workers:
                        for index in range(self._settings.workers):
                            workers.start_soon(self._keep_running, index, env)
                    nursery.cancel_scope.cancel()
            finally:
                # Leaving for any other reason (a bug, a cancel): no worker outlives us.
                for process in self._processes.values():
                    if process.returncode is None:
                        process.kill()
        if self._gave_up:
            return EXIT_ESCALATED
        return 0 if all(code == 0 for code in self.exit_codes.values()) else 1

    async def _keep_running(self, index: int, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "api.cli", "serve", "--env-file", str(self._env_file)]
        while True:
            process = await trio.lowlevel.open_process(
                command, env=env | {"WORKER_INDEX": str(index)}, stdin=subprocess.DEVNULL
            )
            self._processes[index] = process
            log.info("worker %d started (pid %d)", index, process.pid)
            code = await process.wait()
            self.exit_codes[index] = code
            if self._stopping:
                log.info("worker %d stopped (exit %d)", index, code)
                return
            if not self._restarts.admit():
                log.critical(
                    "workers keep exiting (more than %d restarts in %g s): stopping",
                    RESTART_INTENSITY.max_restarts,
                    RESTART_INTENSITY.period_s,
                )
                self._gave_up = True
                self._signal_all(signal.SIGTERM)
                return
            log.error("worker %d exited with %d: restarting it", index, code)
            await trio.sleep(RESTART_DELAY_S)

    def _database_gave_up(self) -> None:
        """The embedded PostgreSQL kept dying (engine/postgres_supervisor.py logged why):
        the workers drain and stop, and the parent exits 3."""
        self._gave_up = True
        self._signal_all(signal.SIGTERM)

    async def _pass_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self._stopping = True
                log.info("%s: passed on to every worker", signal.Signals(signum).name)
                self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        self._stopping = True
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signum)
