"""The processes of stdio MCP servers, found and ended through Linux's ``/proc``.

The SDK's stdio client does not expose the process it starts. A server is found as this
process's child whose standard error is the pipe Pilothouse gave it, and its process group is
killed only while a member still writes to that pipe (a recycled process id is never
signalled). Elsewhere than Linux nothing is found: a hung server is left to the SDK's own
close, terminate, kill steps.
"""

from __future__ import annotations

import os
import signal
from contextlib import suppress


def child_on_pipe(pipe: int) -> int | None:
    """The pid of this process's child whose stderr is ``pipe`` (an inode), or None.

    The SDK's stdio client does not expose its process; Linux's /proc names it (elsewhere the
    pid stays unknown, and a hung server is left to the SDK's own close-terminate-kill steps).
    """
    me = os.getpid()
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and int(stat[1]) == me and _stderr_pipe_of(pid) == pipe:
            return pid
    return None


def kill_group(pgid: int, pipe: int) -> None:
    """SIGKILL a stdio server's process group, if a member still writes to our ``pipe``.

    The check keeps a recycled process id from being signalled; the SDK kills the group only
    when the server does not exit by itself, so children it left behind are ended here.
    """
    for pid in _pids():
        stat = _stat(pid)
        if stat is not None and int(stat[2]) == pgid and _stderr_pipe_of(pid) == pipe:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            return


def _pids() -> list[int]:
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> list[bytes] | None:
    """The fields of /proc/<pid>/stat after the command: state, ppid, pgrp, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stderr_pipe_of(pid: int) -> int | None:
    try:
        target = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return None
    if target.startswith("pipe:[") and target.endswith("]"):
        return int(target[6:-1])
    return None
