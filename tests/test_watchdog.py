"""The shutdown watchdog: the process's last resort when a stop hangs."""

from __future__ import annotations

import threading

from api.root.watchdog import ShutdownWatchdog

# The timer is a thread by nature (it must fire while Trio is stuck), so these tests use
# a tiny real deadline and wait on an event with a bound, never a fixed sleep.
DEADLINE_S = 0.05
WAIT_S = 5.0


def test_an_armed_watchdog_fires_after_its_deadline() -> None:
    fired = threading.Event()
    watchdog = ShutdownWatchdog(DEADLINE_S, on_expiry=fired.set)
    watchdog.arm()
    assert fired.wait(WAIT_S)


def test_a_disarmed_watchdog_never_fires() -> None:
    fired = threading.Event()
    watchdog = ShutdownWatchdog(DEADLINE_S, on_expiry=fired.set)
    watchdog.arm()
    watchdog.disarm()
    assert not fired.wait(DEADLINE_S * 10)


def test_an_unarmed_watchdog_never_fires() -> None:
    fired = threading.Event()
    ShutdownWatchdog(DEADLINE_S, on_expiry=fired.set).disarm()
    assert not fired.wait(DEADLINE_S * 10)


def test_a_disarmed_watchdog_cannot_be_armed_again() -> None:
    fired = threading.Event()
    watchdog = ShutdownWatchdog(DEADLINE_S, on_expiry=fired.set)
    watchdog.disarm()
    watchdog.arm()  # a late signal after the engine already stopped
    assert not fired.wait(DEADLINE_S * 10)
