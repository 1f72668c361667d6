"""The media sockets' readiness poller (engine/ready_poller.py), on real socket pairs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing

from engine.ready_poller import SWEEP_EVERY_S, ReadyPoller, current_poller, use_poller
from engine.ws import READ_BYTES, WebSocket, WebSocketClosed, accept, connect

TICK_S = 0.002


@asynccontextmanager
async def running(tick_s: float = TICK_S) -> AsyncIterator[ReadyPoller]:
    poller = ReadyPoller(tick_s)
    async with trio.open_nursery() as nursery:
        await nursery.start(poller.run)
        yield poller
        nursery.cancel_scope.cancel()


Pair = tuple[trio.socket.SocketType, trio.socket.SocketType]


@pytest.fixture
async def socketpair() -> AsyncIterator[Callable[[], Pair]]:
    """Socket pairs, every one closed when the test ends."""
    made: list[trio.socket.SocketType] = []

    def make() -> Pair:
        pair = trio.socket.socketpair()
        made.extend(pair)
        return pair

    yield make
    for sock in made:
        sock.close()


async def read_once(poller: ReadyPoller, sock: trio.socket.SocketType) -> bytes:
    """As engine/ws.py reads: wait, then one read(2); EAGAIN means wait again."""
    while True:
        await poller.wait_readable(sock)
        try:
            return os.read(sock.fileno(), READ_BYTES)
        except BlockingIOError:
            continue


async def test_readers_ready_together_are_woken_in_one_pass(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    sockets = [socketpair() for _ in range(10)]
    received: dict[int, bytes] = {}
    async with running() as poller, trio.open_nursery() as nursery:
        for n, (ours, _) in enumerate(sockets):

            async def reader(n: int = n, sock: trio.socket.SocketType = ours) -> None:
                received[n] = await read_once(poller, sock)

            nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        woken_before = poller.woken
        for n, (_, theirs) in enumerate(sockets):
            os.write(theirs.fileno(), b"frame %d" % n)
    assert received == {n: b"frame %d" % n for n in range(10)}
    # the registration's first wait tries a read (EAGAIN), then every reader parks: the
    # ten frames are collected by one poll and their readers woken in the same pass
    assert poller.woken - woken_before == 10
    assert poller.wakeups == 1


async def test_data_that_came_while_nobody_waited_is_read_on_the_next_wait(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, theirs = socketpair()
    async with running() as poller:
        with trio.move_on_after(1):
            await read_once(poller, ours)  # registers it; nothing to read yet
        os.write(theirs.fileno(), b"early")
        await trio.sleep(0.1)  # the poller sees it with nobody parked: remembered
        woken = poller.woken
        with trio.fail_after(TICK_S / 2):  # no wait for the next tick
            assert await read_once(poller, ours) == b"early"
        assert poller.woken == woken  # nobody had to be woken


async def test_a_cancelled_wait_leaves_the_socket_free_for_the_next(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, theirs = socketpair()
    async with running() as poller:
        with trio.move_on_after(0.5) as scope:
            await read_once(poller, ours)
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(theirs.send, b"later"))
            assert await read_once(poller, ours) == b"later"


async def test_two_readers_of_one_socket_are_refused(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, _ = socketpair()
    async with running() as poller, trio.open_nursery() as nursery:
        nursery.start_soon(read_once, poller, ours)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await poller.wait_readable(ours)
        nursery.cancel_scope.cancel()


async def reader_of_closed(
    poller: ReadyPoller, sock: trio.socket.SocketType, errors: list[BaseException]
) -> None:
    """Reads ``sock`` until told it is closed; the error goes into ``errors``."""
    try:
        await read_once(poller, sock)
    except trio.ClosedResourceError as exc:
        errors.append(exc)


async def test_forget_wakes_the_parked_reader_with_closed(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, _ = socketpair()
    errors: list[BaseException] = []
    async with running() as poller, trio.open_nursery() as nursery:
        nursery.start_soon(reader_of_closed, poller, ours, errors)
        await trio.testing.wait_all_tasks_blocked()
        poller.forget(ours)
        ours.close()
    assert len(errors) == 1


async def test_a_socket_closed_by_another_task_is_found_by_the_sweep(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, _ = socketpair()
    errors: list[BaseException] = []
    async with running() as poller, trio.open_nursery() as nursery:
        nursery.start_soon(reader_of_closed, poller, ours, errors)
        await trio.testing.wait_all_tasks_blocked()
        closed_at_s = trio.current_time()
        ours.close()  # no forget: the poller cannot see this close, and epoll forgets it
    assert len(errors) == 1
    assert trio.current_time() - closed_at_s <= 2 * SWEEP_EVERY_S


async def test_a_reused_descriptor_is_registered_anew(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    async with running() as poller:
        first, first_peer = socketpair()
        os.write(first_peer.fileno(), b"one")
        assert await read_once(poller, first) == b"one"
        number = first.fileno()
        first.close()
        first_peer.close()
        second, second_peer = socketpair()
        for sock in (second, second_peer):
            if sock.fileno() == number:
                break
        else:
            pytest.skip("the kernel did not reuse the descriptor number")
        other = second_peer if sock is second else second
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(other.send, b"two"))
            with trio.fail_after(1):
                assert await read_once(poller, sock) == b"two"


async def test_a_stopped_poller_hands_its_readers_to_trio(
    autojump_clock: trio.testing.MockClock, socketpair: Callable[[], Pair]
) -> None:
    ours, theirs = socketpair()
    got: list[bytes] = []
    poller = ReadyPoller(TICK_S)
    async with trio.open_nursery() as readers:
        async with trio.open_nursery() as polling:
            await polling.start(poller.run)
            readers.start_soon(lambda: _append(got, read_once(poller, ours)))
            await trio.testing.wait_all_tasks_blocked()
            polling.cancel_scope.cancel()
        assert not poller.running
        await trio.testing.wait_all_tasks_blocked()
        os.write(theirs.fileno(), b"after")  # only Trio's own wait_readable can see this now
    assert got == [b"after"]


async def _append(into: list[bytes], read: object) -> None:
    into.append(await read)  # type: ignore[misc]


def test_a_negative_tick_is_refused() -> None:
    with pytest.raises(ValueError, match="tick_s"):
        ReadyPoller(-0.001)


async def test_a_websocket_through_the_poller_reads_a_message_larger_than_a_read() -> None:
    """Edge-triggered: a read that fills its buffer must not wait for a new edge, or the
    rest of a message already in the kernel's buffer would never be read."""
    size = 5 * READ_BYTES
    with trio.fail_after(10):
        async with running() as poller, trio.open_nursery() as nursery:
            done = trio.Event()
            received: list[int] = []

            async def serve(stream: trio.SocketStream) -> None:
                socket, _ = await accept(
                    stream, check=lambda _r: None, max_message_bytes=2 * size,
                    send_timeout_s=5, handshake_timeout_s=5,
                )  # fmt: skip
                assert socket._poller is poller
                for message in await socket.receive_batch():
                    received.append(len(message))
                await socket.aclose()
                done.set()

            with use_poller(poller):
                assert current_poller() is poller
                listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            client: WebSocket = await connect(
                f"ws://127.0.0.1:{port}/", headers=[], max_message_bytes=2 * size,
                send_timeout_s=5, connect_timeout_s=5,
            )  # fmt: skip
            await client.send_text(b"x" * size)
            # Read until the server's close: the reply goes back at once, so its close
            # handshake does not wait out its deadline in real time.
            closed = None
            while closed is None:
                try:
                    await client.receive_batch()
                except WebSocketClosed as exc:
                    closed = exc
            assert closed.code == 1000
            await done.wait()
            await client.aclose()
            nursery.cancel_scope.cancel()
    assert received == [size]
    assert current_poller() is None
