"""One wake-up per batch of ready sockets: the media path's readiness poller.

Trio's own ``wait_readable`` arms a one-shot epoll registration for every wait and wakes
each reader as its socket becomes ready. On a paced stream (a caller's frame every 20 ms,
a model delta every 20 ms, on every one of tens of calls) that is one scheduler pass, one
``epoll_ctl`` and one ``epoll_wait`` per frame: docs/performance.md measures the engine at
about half the CPU per call-second at 160 calls as at 40, because at 160 calls several
sockets are ready at each pass and share its cost.

``ReadyPoller`` makes that sharing deliberate. One task owns a private epoll set, with each
socket registered once, edge-triggered, for as long as it lives; every ``tick_s`` it collects
what became ready and wakes those readers together, in one pass. The price is latency: a
frame waits at most ``tick_s`` longer before its reader sees it (a 2 ms tick on a 20 ms
frame). ``tick_s = 0`` polls on every pass of the scheduler (batching only what is ready at
once). Without a running poller (its task not started, or stopped) ``wait_readable`` is
Trio's own, so a reader never depends on it being there.

Edge-triggered means the kernel reports a socket once per arrival of data, not while data
is waiting: a reader that read a full buffer (more may be waiting) says so with
``mark_ready``, and the next wait returns at once.
"""

from __future__ import annotations

import contextvars
import select
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

import outcome
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

# How often parked readers whose socket another task closed are woken (with
# ``ClosedResourceError``), when nobody called ``forget``: Trio wakes its own waiters on
# close; this poller cannot see a close, so it looks.
SWEEP_EVERY_S = 0.1
MAX_EVENTS = 1024  # per epoll_wait; more ready sockets wait for the next tick
_READABLE = select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP

_current: contextvars.ContextVar[ReadyPoller | None] = contextvars.ContextVar(
    "afterhours_ready_poller", default=None
)


def current_poller() -> ReadyPoller | None:
    """The poller readers started under ``use_poller`` share (``None``: Trio's own)."""
    return _current.get()


@contextmanager
def use_poller(poller: ReadyPoller | None) -> Iterator[None]:
    """Tasks started inside (and theirs) find ``poller`` as ``current_poller()``."""
    token = _current.set(poller)
    try:
        yield
    finally:
        _current.reset(token)


class ReadyPoller:
    def __init__(self, tick_s: float) -> None:
        if tick_s < 0:
            raise ValueError("tick_s must be >= 0")
        self.tick_s = tick_s
        self._epoll: select.epoll | None = None
        # fd -> the socket object registered under it; a different object under the same
        # number means the first was closed and the number reused: registered anew.
        self._sockets: dict[int, trio.socket.SocketType] = {}
        self._ready: set[int] = set()  # reported ready while nobody was waiting
        self._waiters: dict[int, trio.lowlevel.Task] = {}
        self.wakeups = 0  # passes that woke at least one reader (for the bench)
        self.woken = 0  # readers woken

    @property
    def running(self) -> bool:
        return self._epoll is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled; then every parked reader is woken to wait on its own."""
        epoll = select.epoll()
        self._epoll = epoll
        task_status.started()
        swept_at_s = trio.current_time()
        try:
            while True:
                events = epoll.poll(0, MAX_EVENTS)
                if events:
                    self._dispatch(events)
                    if self.tick_s > 0:
                        await trio.sleep(self.tick_s)
                    else:
                        await trio.lowlevel.checkpoint()
                else:
                    # Nothing ready: wait for the first socket that is (the epoll set's
                    # own descriptor is readable then), at most until the next sweep.
                    with trio.move_on_after(SWEEP_EVERY_S):
                        await trio.lowlevel.wait_readable(epoll.fileno())
                now_s = trio.current_time()
                if now_s - swept_at_s >= SWEEP_EVERY_S:
                    swept_at_s = now_s
                    self._wake_closed()
        finally:
            self._epoll = None
            waiters, self._waiters = self._waiters, {}
            for task in waiters.values():
                trio.lowlevel.reschedule(task)  # it reads, or waits again on Trio's own
            self._sockets.clear()
            self._ready.clear()
            epoll.close()

    def _dispatch(self, events: list[tuple[int, int]]) -> None:
        woken = 0
        for fd, _mask in events:
            task = self._waiters.pop(fd, None)
            if task is None:
                self._ready.add(fd)
            else:
                trio.lowlevel.reschedule(task)
                woken += 1
        if woken:
            self.wakeups += 1
            self.woken += woken

    def _wake_closed(self) -> None:
        for fd in [fd for fd, sock in self._sockets.items() if sock.fileno() < 0]:
            self._drop(fd, trio.ClosedResourceError("the socket was closed"))

    def _drop(self, fd: int, error: BaseException | None) -> None:
        self._sockets.pop(fd, None)
        self._ready.discard(fd)
        task = self._waiters.pop(fd, None)
        if task is not None:
            trio.lowlevel.reschedule(task, outcome.Error(error) if error else outcome.Value(None))

    def forget(self, sock: trio.socket.SocketType) -> None:
        """Before ``sock`` is closed: its registration goes, a parked reader is woken
        with ``ClosedResourceError``."""
        fd = sock.fileno()
        if fd < 0 or self._sockets.get(fd) is not sock:
            return
        if self._epoll is not None:
            with suppress(OSError):  # already gone with its socket
                self._epoll.unregister(fd)
        self._drop(fd, trio.ClosedResourceError("the socket is being closed"))

    def mark_ready(self, sock: trio.socket.SocketType) -> None:
        """More may be waiting on ``sock`` (a read filled its buffer): edge-triggered
        epoll will not say so again, so the next wait returns at once."""
        fd = sock.fileno()
        if fd >= 0 and self._sockets.get(fd) is sock:
            self._ready.add(fd)

    async def wait_readable(self, sock: trio.socket.SocketType) -> None:
        """Until ``sock`` may be readable; a checkpoint, as Trio's ``wait_readable``."""
        epoll = self._epoll
        if epoll is None:
            await trio.lowlevel.wait_readable(sock)
            return
        fd = sock.fileno()
        if fd < 0:
            raise trio.ClosedResourceError("the socket was closed")
        if self._sockets.get(fd) is not sock:
            self._register(epoll, fd, sock)
        if fd in self._ready:
            self._ready.discard(fd)
            await trio.lowlevel.checkpoint()
            return
        if fd in self._waiters:
            raise trio.BusyResourceError("another task is already reading this socket")
        self._waiters[fd] = trio.lowlevel.current_task()

        def abort(_raise_cancel: object) -> trio.lowlevel.Abort:
            self._waiters.pop(fd, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _register(self, epoll: select.epoll, fd: int, sock: trio.socket.SocketType) -> None:
        # The number was another socket's, now closed: a reader still parked on it is
        # told so (its socket is gone), and the number is this socket's from here on.
        if fd in self._sockets:
            self._drop(fd, trio.ClosedResourceError("the socket was closed"))
        try:
            epoll.register(fd, _READABLE)
        except FileExistsError:
            epoll.modify(fd, _READABLE)
        self._sockets[fd] = sock
        # Data may have arrived before the registration: let the first wait try a read.
        self._ready.add(fd)
