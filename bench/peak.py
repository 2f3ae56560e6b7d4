"""The peak resident memory of the process that asks, for the benchmarks' fresh processes.

Not `getrusage(RUSAGE_SELF).ru_maxrss`: Linux carries a process's peak over fork and exec, so
a child started by a parent of 200 MB reports 200 MB however little it uses itself (a child
that only printed its ru_maxrss did). /proc's VmHWM is the peak of the program the process
runs now; ru_maxrss is the answer only where /proc is not (macOS, which counts in bytes).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def peak_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])  # "VmHWM:   39972 kB"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak
