"""How many synchronous 4 KiB writes this machine's disk takes per second: the floor
under any broker's publish-confirm round trip with one message in flight, since a
confirm of a persistent message waits for one.

    python3 scripts/disk-sync.py [DIR] [COUNT]

Writes COUNT 4 KiB blocks (3 000 by default) into a 4 MiB file in DIR (default: the
current directory), whose blocks are written once first so that no write allocates,
in two ways: `pwrite` then `fdatasync` (what Warren's journal does), and `pwrite` on a
file opened with O_DIRECT | O_DSYNC. Prints for each the rate, the time per write
and this process's CPU per write. Run it pinned, as the brokers are
(`taskset -c 0 python3 scripts/disk-sync.py`)."""

import mmap
import os
import resource
import sys
import time

directory = sys.argv[1] if len(sys.argv) > 1 else "."
count = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
path = os.path.join(directory, f"disk-sync-{os.getpid()}.tmp")
blocks = 1024
block = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT needs
block.write(b"w" * 4096)


def measure(label, flags, sync):
    fd = os.open(path, os.O_RDWR | flags)
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        for i in range(count):
            os.pwrite(fd, block, (i % blocks) * 4096)
            if sync:
                os.fdatasync(fd)
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        os.close(fd)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(
        f"{label:24} {count / elapsed:6.0f} writes/s, {elapsed / count * 1e6:5.0f} µs each, "
        f"CPU {cpu / count * 1e6:4.0f} µs each"
    )


fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
try:
    os.pwrite(fd, b"\0" * (blocks * 4096), 0)
    os.fsync(fd)
finally:
    os.close(fd)
try:
    measure("pwrite + fdatasync", 0, True)
    measure("O_DIRECT | O_DSYNC", os.O_DIRECT | os.O_DSYNC, False)
finally:
    os.unlink(path)
