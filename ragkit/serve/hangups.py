"""Telling that a request's client has left, so that its work can stop.

``ragkit serve``'s transport (:mod:`ragkit.serve.transport`) puts a :class:`Hangup` in every
request's ASGI scope and fires it when the connection is lost (or cut by a deadline) before the answer
has started. Behind another ASGI server the request awaits the ASGI ``http.disconnect`` instead
(:func:`client_left`), in a task beside the work. :func:`hangup_of` picks the one a request has;
:func:`watch` runs it for one awaited job (:meth:`ragkit.serve.batching.Worker.run`); see
:class:`Hangup` for an example.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["HANGUP_SCOPE_KEY", "Hangup", "client_left", "hangup_of", "watch"]

logger = logging.getLogger("ragkit")

HANGUP_SCOPE_KEY = "ragkit.hangup"
"""The key of a request's :class:`Hangup` in its ASGI scope, where the server's transport provides one."""


class Hangup:
    """One request's hang-up signal, fired by the transport when its client leaves before the answer.

    ``ragkit serve``'s transport puts one in every request's scope (:data:`HANGUP_SCOPE_KEY`) and fires
    it from the event loop when the connection is lost (or cut by a deadline) before the answer has
    started. Watching a request through it costs a list append, where awaiting the ASGI
    ``http.disconnect`` needs a task of its own per request (a few percent of the requests per second
    on a small model, ``benchmarks/server_load.py``).

    Example:
        >>> hangup = Hangup()
        >>> hangup.add(lambda: logging.info("gone"))
        True
        >>> hangup.fire()
        >>> hangup.fired, hangup.add(lambda: None)
        (True, False)
    """

    __slots__ = ("_callbacks", "fired")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], Any]] = []
        self.fired = False

    def add(self, callback: Callable[[], Any]) -> bool:
        """Call ``callback()`` when the client leaves; ``False`` (and no call) if it has already left."""
        if self.fired:
            return False
        self._callbacks.append(callback)
        return True

    def discard(self, callback: Callable[[], Any]) -> None:
        """Forget ``callback`` (the work is done)."""
        try:
            self._callbacks.remove(callback)
        except ValueError:
            pass

    def fire(self) -> None:
        """The client left: run the callbacks, once."""
        if self.fired:
            return
        self.fired = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one watcher's bug must not stop the others
                logger.debug("ragkit serve: a hang-up callback failed", exc_info=True)


def hangup_of(request: Any) -> Hangup | Callable[[], Awaitable[None]]:
    """How to tell that the client of ``request`` left, for :meth:`ragkit.serve.batching.Worker.run`: the
    :class:`Hangup` that ``ragkit serve``'s transport put in the request's scope,
    else (another ASGI server) a coroutine function awaiting ``http.disconnect`` (:func:`client_left`).
    """
    hangup = request.scope.get(HANGUP_SCOPE_KEY)
    if isinstance(hangup, Hangup):
        return hangup
    return lambda: client_left(request)


async def client_left(request: Any) -> None:
    """Return once the client of ``request`` has disconnected (its body must have been read).

    After the body, the ASGI ``receive`` has nothing but ``http.disconnect`` to give: the server
    sends it when the connection is lost (or when the answer is complete), so awaiting it watches for
    a hang-up without polling. Run it beside the work and cancel it when the work is done (see
    :meth:`ragkit.serve.batching.Worker.run`).
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def watch(
    gone: Callable[[], Awaitable[Any]] | Hangup, future: asyncio.Future, left: list[bool]
) -> Callable[[], None]:
    """Cancel ``future`` when the client leaves (noting it in ``left``); return what stops the watch.

    With a :class:`Hangup` this is a callback (nothing runs while the client stays); with a coroutine
    function, a task that awaits it (see :func:`client_left`). Call the returned function once the
    work is done.
    """

    def hung_up() -> None:
        left.append(True)
        future.cancel()

    if isinstance(gone, Hangup):
        if not gone.add(hung_up):
            hung_up()  # it left before the work began
        return lambda: gone.discard(hung_up)
    return asyncio.get_running_loop().create_task(_watch(gone, hung_up)).cancel


async def _watch(gone: Callable[[], Awaitable[Any]], hung_up: Callable[[], None]) -> None:
    try:
        await gone()
    except Exception:  # the watch itself failed: the client may well still be there
        logger.debug("ragkit serve: watching for a hang-up failed", exc_info=True)
        return
    hung_up()
