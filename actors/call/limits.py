"""The call's limits as a pure state machine: silence and maximum duration.

Silence: when neither the caller nor the model has made a sound for the project's
``silence_timeout_s``, the model asks once whether the caller is still there; after
another such stretch it says goodbye and the call ends (``silence_timeout``). Duration:
``warn_before_end_s`` before the project's ``max_call_s`` the model says the call must
wrap up; at ``max_call_s`` it says goodbye and the call ends (``max_duration``). Times are
Trio clock seconds, so tests drive this with plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["prompt_silence", "end_silence", "warn_duration", "end_duration"]

SAY_STILL_THERE = 'Ask briefly whether the caller is still there. Say: "Are you still there?"'
SAY_SILENCE_GOODBYE = (
    'The caller has gone quiet. Say: "I have not heard anything, so I will hang up now. '
    'If you still need help, please call back. Goodbye."'
)
SAY_WRAP_UP = 'Tell the caller the call must end soon. Say: "We will need to wrap up in a moment."'
SAY_DURATION_GOODBYE = 'Say: "I am sorry, we have reached the time limit for this call. Goodbye."'


@dataclass
class CallLimits:
    silence_timeout_s: float
    max_call_s: float
    started_at_s: float
    warn_before_end_s: float = 30.0
    last_activity_s: float = 0.0
    prompted: bool = False
    warned: bool = False
    ending: bool = False

    def __post_init__(self) -> None:
        self.last_activity_s = self.started_at_s

    def activity(self, now_s: float, *, caller: bool) -> None:
        """Somebody made a sound: the silence clock starts again. Only the caller's voice
        answers the "are you still there?" (the model's own prompt does not)."""
        self.last_activity_s = max(self.last_activity_s, now_s)
        if caller:
            self.prompted = False

    def due(self, now_s: float) -> Action | None:
        """What the call must do now, if anything (each action once)."""
        if self.ending:
            return None
        if now_s >= self.started_at_s + self.max_call_s:
            self.ending = True
            return "end_duration"
        if not self.warned and now_s >= self._warn_at_s():
            self.warned = True
            return "warn_duration"
        if now_s >= self.last_activity_s + self.silence_timeout_s:
            if self.prompted:
                self.ending = True
                return "end_silence"
            self.prompted = True
            self.last_activity_s = now_s  # the prompt itself restarts the wait
            return "prompt_silence"
        return None

    def next_check_s(self) -> float:
        """The earliest time ``due`` may have something to say."""
        times = [self.started_at_s + self.max_call_s, self.last_activity_s + self.silence_timeout_s]
        if not self.warned:
            times.append(self._warn_at_s())
        return min(times)

    def _warn_at_s(self) -> float:
        return self.started_at_s + max(0.0, self.max_call_s - self.warn_before_end_s)
