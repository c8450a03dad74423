"""Child processes of the tests: CPU burned without holding the GIL, lines read with a
deadline, and a stop that cannot wait forever.

A thread that spins in pure Python holds the GIL for the whole switch interval, again and
again: on a busy 2-core machine the child's other threads (its main thread printing
"ready", a thread that still has to name itself) can wait for seconds, and a parent that
reads the child's stdout without a deadline then waits with it. So a spinning thread
burns its CPU in C with the GIL released (BURN), and the parent reads with read_line.
"""

from __future__ import annotations

import os
import select
import subprocess
import time

# Source for a child script: burn() costs a thread about a millisecond of its own CPU (one
# SHA-256 of 1 MiB; hashlib releases the GIL for anything over 2 KiB), so a loop of it keeps
# a core busy while every other thread of the process still runs. /proc/PID/task/TID/stat
# counts the CPU to the thread that called it.
BURN = r"""
import hashlib as _hashlib
_BLOCK = bytes(1 << 20)
def burn():
    _hashlib.sha256(_BLOCK).digest()
"""


def spawn(args: list[str], **kw) -> subprocess.Popen:
    """Popen with stdout a pipe read unbuffered (for read_line)."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, bufsize=0, **kw)


def read_line(proc: subprocess.Popen, timeout_s: float = 30.0) -> str:
    """The child's next line on stdout (without its line break), waiting at most timeout_s.
    TimeoutError when none comes in time, EOFError when the child closed its stdout first
    (it exited: its status is in the message). Reads the pipe's file descriptor itself, so
    proc.stdout must not be read any other way."""
    fd = proc.stdout.fileno()
    buf: bytearray = proc.__dict__.setdefault("_line_buffer", bytearray())
    deadline = time.monotonic() + timeout_s
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"child {proc.pid} wrote no line in {timeout_s:g} s (so far: {bytes(buf)!r})")
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError(f"child {proc.pid} closed its stdout (exit status {proc.poll()}): {bytes(buf)!r}")
            buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line.decode(errors="replace").rstrip("\r")


def stop(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Kill the child and reap it; a child that is not gone in timeout_s fails the test
    (subprocess.TimeoutExpired) instead of hanging it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=timeout_s)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # a write to a dead child's stdin still buffered
                pass
