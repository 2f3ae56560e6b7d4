"""Who holds an outbox lease: the host, the process id and the process's start time.

A run killed with SIGKILL leaves its leases behind. On the same host we can tell at once that
their holder is gone (no such process, or a new one that reused the pid: another start time),
so the next run takes the items back without waiting for the lease to end. A holder on another
host (another machine, container or Lambda sandbox) is never judged: its lease simply ends.

"Same host" means the same hostname, boot and pid namespace: two containers sharing a hostname
see different processes under the same pid.
"""

from __future__ import annotations

import hashlib
import os
import socket
from functools import cache
from pathlib import Path


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (Linux); "" where /proc is absent
    and the process exists; None when there is no such process, or only its zombie."""
    stat = _read(f"/proc/{pid}/stat")
    if stat:
        # The name, field 2, is in parentheses and may hold spaces: count after its end.
        fields = stat.rpartition(")")[2].split()
        return None if fields[0] in ("Z", "X") else fields[19]   # a zombie has stopped
    if Path("/proc/self/stat").exists():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return ""
    return ""


@cache
def _scope() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    digest = hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:8]
    return f"{socket.gethostname()}#{digest}"


def this_process() -> str:
    """`host#scope pid N started T`: written on every lease this process takes."""
    pid = os.getpid()
    return f"{_scope()} pid {pid} started {_started(pid) or '?'}"


def is_gone(holder: str) -> bool:
    """True only when the holder ran on this host and that process no longer runs."""
    scope, _, rest = holder.partition(" pid ")
    pid_text, _, started = rest.partition(" started ")
    if scope != _scope() or not pid_text.isdigit():
        return False
    now = _started(int(pid_text))
    if now is None:
        return True
    return bool(now) and started not in ("?", now)


def host_of(holder: str) -> str:
    """The holder as a person reads it: `host pid N`."""
    scope, _, rest = holder.partition(" pid ")
    return f"{scope.partition('#')[0]} pid {rest.partition(' started ')[0]}" if rest else holder
