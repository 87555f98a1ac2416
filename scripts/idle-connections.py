"""Idle AMQP connections: opens N connections to a broker, each through the AMQP
0-9-1 handshake (protocol header, start-ok as guest, tune-ok without heartbeats, open
of vhost `/`), keeps them all open and idle, and prints the broker's RSS before and
with them, per connection.

    python3 scripts/idle-connections.py HOST PORT N BROKER_PID

The handshake is written here (a few frames, no channel): a client library's own
memory for 20 000 connections would be in the way, and the broker's cost of an idle
connection does not depend on which client opened it. This process needs N open
files, as the broker does: N is bounded by `ulimit -n`."""

import asyncio
import struct
import sys


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def shortstr(s):
    b = s.encode()
    return bytes([len(b)]) + b


def longstr(b):
    return struct.pack(">I", len(b)) + b


def method(class_id, method_id, args):
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


async def read_method(reader):
    kind, _channel, size = struct.unpack(">BHI", await reader.readexactly(7))
    payload = await reader.readexactly(size)
    await reader.readexactly(1)
    if kind != 1:
        raise RuntimeError(f"frame type {kind} in the handshake")
    return struct.unpack(">HH", payload[:4]), payload[4:]


async def open_one(host, port, stage):
    reader, writer = await asyncio.open_connection(host, port)
    if stage == "tcp":
        return writer
    writer.write(b"AMQP\x00\x00\x09\x01")
    (ids, _) = await read_method(reader)
    assert ids == (10, 10), f"expected connection.start, got {ids}"
    writer.write(
        method(10, 11, struct.pack(">I", 0) + shortstr("PLAIN")
               + longstr(b"\x00guest\x00guest") + shortstr("en_US"))
    )
    (ids, args) = await read_method(reader)
    assert ids == (10, 30), f"expected connection.tune, got {ids}"
    channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
    writer.write(method(10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    if stage == "tuned":
        return writer
    writer.write(method(10, 40, shortstr("/") + shortstr("") + b"\x00"))
    (ids, _) = await read_method(reader)
    assert ids == (10, 41), f"expected connection.open-ok, got {ids}"
    return writer


async def main():
    host, port, count, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    stage = sys.argv[5] if len(sys.argv) > 5 else "open"
    before = rss_kib(pid)
    writers = []
    pending = asyncio.Semaphore(200)

    async def one():
        async with pending:
            writers.append(await open_one(host, port, stage))

    await asyncio.gather(*(one() for _ in range(count)))
    await asyncio.sleep(2)
    with_them = rss_kib(pid)
    print(
        f"{len(writers)} idle connections: broker RSS {before / 1024:.1f} MiB before, "
        f"{with_them / 1024:.1f} MiB with them, {(with_them - before) / len(writers):.1f} KiB each"
    )
    for w in writers:
        w.close()


asyncio.run(main())
