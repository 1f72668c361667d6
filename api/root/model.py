"""Where calls find the model: OpenAI with a key, else the simulated model in-process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from actors.model_link import ModelEndpoint

if TYPE_CHECKING:
    from engine.config import Settings
    from engine.lifecycle import StopSignal
    from engine.simulator.model import SimulatedModel

log = logging.getLogger("afterhours")


class ModelChoice:
    """Where calls find the model: OpenAI when a key is configured, otherwise the
    simulated model, run in-process as a supervised child (the embedded default)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._simulated_url = ""
        self.simulator: SimulatedModel | None = None
        if settings.openai_api_key is None:
            # Imported only here: the simulator validates events against the openai
            # package's types, about a second of imports an engine with a key never needs.
            from engine.simulator import faults
            from engine.simulator.model import SimulatedModel

            self.simulator = SimulatedModel()
            if settings.simulator_faults is not None:
                faults.apply(self.simulator, settings.simulator_faults)

    def endpoint(self) -> ModelEndpoint:
        settings = self._settings
        if settings.openai_api_key is not None:
            return ModelEndpoint(
                settings.openai_realtime_url,
                settings.openai_realtime_model,
                settings.openai_api_key.reveal(),
                connect_timeout_s=settings.model_connect_timeout_s,
            )
        return ModelEndpoint(
            self._simulated_url,
            settings.openai_realtime_model,
            "simulated",
            connect_timeout_s=settings.model_connect_timeout_s,
        )

    async def run_simulator(self, stop: StopSignal, *, task_status: trio.TaskStatus[str]) -> None:
        assert self.simulator is not None
        async with trio.open_nursery() as nursery:
            self._simulated_url = await nursery.start(self.simulator.serve)
            log.info(
                "no OPENAI_API_KEY: calls talk to the simulated model at %s", self._simulated_url
            )
            task_status.started(self._simulated_url)
            await stop.wait()
            nursery.cancel_scope.cancel()
