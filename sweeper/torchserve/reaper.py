"""A watchdog that stops a TorchServe process group if the sweeper itself dies.

try/finally and signal handlers cover every exit of the sweeper except one: being killed
with SIGKILL (or the OOM killer). Then nothing in the sweeper runs, and the JVM and its
workers would live on, holding ports and CPU. So each server gets a reaper: a tiny process
in its own session that polls the sweeper's pid and, when it is gone, signals the server's
process group (SIGTERM, then SIGKILL). The sweeper kills its reaper when it stops the
server itself.

    python -m sweeper.torchserve.reaper SWEEPER_PID SWEEPER_CREATE_TIME SERVER_PGID [TMP_DIR]

TMP_DIR, the server's private temp directory, is removed once the group is gone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.5
GRACE_S = 5.0


def _alive(pid: int, create_time: float) -> bool:
    try:
        # a recycled pid has another start time
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def watch(pid: int, create_time: float, pgid: int) -> bool:
    """True when the sweeper died and the group had to be stopped here."""
    while _alive(pid, create_time):
        if not _group_alive(pgid):
            return False  # the server is gone already: nothing to guard
        time.sleep(POLL_S)
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.1)
    return True


def start(server_pgid: int, tmp_dir: str = "") -> subprocess.Popen:
    """A reaper guarding `server_pgid` on behalf of this process."""
    me = psutil.Process()
    return subprocess.Popen(
        [sys.executable, "-m", "sweeper.torchserve.reaper", str(me.pid), repr(me.create_time()), str(server_pgid), tmp_dir],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C to the sweeper's terminal must not reach it
        close_fds=True,
    )


def main(argv: list[str]) -> int:
    pid, create_time, pgid = int(argv[0]), float(argv[1]), int(argv[2])
    tmp_dir = argv[3] if len(argv) > 3 else ""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if watch(pid, create_time, pgid) and tmp_dir:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
