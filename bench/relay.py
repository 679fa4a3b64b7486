"""A TCP relay that adds latency to every request it carries (a WAN in front of S3).

    python bench/relay.py --to 127.0.0.1:7480 --latency-ms 20,30   # prints its port

Each connection is relayed to `--to`. What the client sends is held `MIN..MAX` ms
(one draw per request: a new draw once the server has answered), in order; answers
come back at once. So each request over a kept-alive connection waits one delay, as
the sandbox's `--latency-ms` holds each API request. The benchmark puts it in front
of radosgw (bench/latency.py); the worker, the naive loop and the sandbox's own
checks of each upload all go through it. Not part of the product.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import sys

CHUNK = 256 * 1024


class Pipe:
    """One connection: client -> server held by one delay per request."""

    def __init__(self, low_s: float, high_s: float, rng: random.Random) -> None:
        self.low_s, self.high_s, self.rng = low_s, high_s, rng
        self.answered = True  # the server answered since the client last sent: new request
        self.delay = 0.0
        self.last_at = 0.0

    def due(self, now: float) -> float:
        """When a chunk the client sent `now` goes on to the server."""
        if self.answered:
            self.delay = self.rng.uniform(self.low_s, self.high_s)
            self.answered = False
        self.last_at = max(now + self.delay, self.last_at)
        return self.last_at


async def _upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pipe: Pipe) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            at, data = await queue.get()
            wait = at - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(deliver())
        while True:
            data = await reader.read(CHUNK)
            await queue.put((pipe.due(loop.time()), data))
            if not data:
                return


async def _downstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      pipe: Pipe) -> None:
    while data := await reader.read(CHUNK):
        pipe.answered = True
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def serve(host: str, port: int, low_ms: int, high_ms: int, seed: int | None) -> None:
    rng = random.Random(seed)

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(host, port)
        except OSError:
            c_writer.close()
            return
        for w in (c_writer, s_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = Pipe(low_ms / 1000, high_ms / 1000, rng)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_upstream(c_reader, s_writer, pipe))
                tg.create_task(_downstream(s_reader, c_writer, pipe))
        except* OSError:
            pass  # a reset connection: close both ends
        finally:
            for w in (c_writer, s_writer):
                w.close()

    async def quiet(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError):  # the relay stopping: no traceback
            await handle(c_reader, c_writer)

    server = await asyncio.start_server(quiet, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--to", required=True, help="HOST:PORT of the server")
    p.add_argument("--latency-ms", default="20,30", help="MIN,MAX per request")
    p.add_argument("--seed", type=int)
    args = p.parse_args()
    host, _, port = args.to.rpartition(":")
    low, _, high = args.latency_ms.partition(",")
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(serve(host, int(port), int(low), int(high or low), args.seed))
    sys.exit(0)


if __name__ == "__main__":
    main()
