"""Exec a kernel command that dies with its parent (Linux PR_SET_PDEATHSIG), in the
notebook's cgroup when ``GPU_RUNNER_CGROUP`` names one.

Run as ``python -I -S _pdeathsig.py PARENT_PID -- CMD...``. Standalone on purpose: it must
start in milliseconds and import nothing from the package.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main() -> None:
    parent = int(sys.argv[1])
    sep = sys.argv.index("--")
    cmd = sys.argv[sep + 1 :]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        sys.exit(1)
    cgroup = os.environ.get("GPU_RUNNER_CGROUP")
    if cgroup:  # join the notebook's cgroup before the kernel runs anything
        try:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main()
