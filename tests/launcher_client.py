"""``gpu-runner ARGS`` through the test launcher (tests/launcher.py): this process passes its
stdin, stdout, stderr, working directory, environment and arguments to a process forked from
one that has imported gpu-runner already, forwards SIGINT, SIGTERM and SIGHUP to it, and ends
as it ended. Run with ``python -I -S``: standard library only."""

import array
import json
import os
import signal
import socket
import sys


def main() -> None:
    env = dict(os.environ)
    path = env.pop("GPU_RUNNER_TEST_LAUNCHER")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    req = json.dumps({"argv": sys.argv[1:], "env": env, "cwd": os.getcwd()}).encode() + b"\n"
    sock.sendmsg([req], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
    reader = sock.makefile("rb")
    first = json.loads(reader.readline())
    if first.get("fallback"):  # it would import something else: a process of its own
        os.execve(sys.executable, [sys.executable, "-m", "gpu_runner", *sys.argv[1:]], env)
    pid = first["pid"]

    def forward(sig: int, _frame: object) -> None:
        try:
            os.kill(pid, sig)
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    line = reader.readline()
    status = json.loads(line)["status"] if line else -signal.SIGKILL
    if status < 0:  # end as it ended: by that signal
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    sys.exit(status)


if __name__ == "__main__":
    main()
