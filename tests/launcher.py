"""A fork server for the command line, so that tests pay for importing it once, not per call.

``python -m gpu_runner`` spends most of its CPU importing (the Compute Engine client alone takes
over two seconds): the suite runs the real command line hundreds of times. This server imports it
once; each call forks a fresh process that becomes ``gpu-runner ARGS`` exactly as a new one would:
the caller's stdin, stdout and stderr (passed over the socket), working directory, environment
and arguments, its own process group, signal dispositions reset, ``atexit`` run, the exit status
(or the signal that ended it) passed back. The caller's process is :data:`CLIENT`, a few
milliseconds of standard-library Python, which forwards SIGINT, SIGTERM and SIGHUP.

A call whose interpreter would import something else (``PYTHON*`` variables that differ, such as a
``PYTHONPATH`` holding a stand-in module) is refused with ``{"fallback": true}``, and the client
execs a plain ``python -m gpu_runner`` instead, as ``conftest.gpu_runner`` does when no server runs.

Protocol (Unix socket): the client sends one JSON request ``{"argv", "env", "cwd"}`` with its
three standard descriptors (SCM_RIGHTS); the server answers ``{"pid": N}``, then
``{"status": S}`` (S < 0: killed by signal -S) once that process has ended. A client that goes
away takes its process group with it.
"""

from __future__ import annotations

import array
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

CLIENT = Path(__file__).with_name("launcher_client.py")
SOCKET_ENV = "GPU_RUNNER_TEST_LAUNCHER"
PRELOAD = (
    "gpu_runner.cli", "gpu_runner.execute.engine", "gpu_runner.checks", "gpu_runner.report",
    "gpu_runner.report.html", "gpu_runner.cloud.lifecycle", "gpu_runner.cloud.gce", "gpu_runner.github.client",
    "gpu_runner.github.comments", "gpu_runner.plan", "google.cloud.compute_v1", "github", "nbconvert",
)


IMPORT_SETTINGS = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE", "PYTHONUSERBASE",
                   "PYTHONPLATLIBDIR", "PYTHONIOENCODING", "PYTHONUTF8", "PYTHONWARNINGS", "PYTHONHASHSEED",
                   "PYTHONOPTIMIZE", "PYTHONDEVMODE", "PYTHONSTARTUP", "GPU_RUNNER_PROFILE")
"""What makes a new interpreter import or behave otherwise than this one (PYTHONUNBUFFERED is applied
to the new process's streams; PYTHONDONTWRITEBYTECODE only decides whether .pyc files are written);
and GPU_RUNNER_PROFILE, which gpu-runner reads as it is imported (and which times a real start)."""


def same_interpreter(env: dict[str, str]) -> bool:
    """Whether a process with ``env`` would import what this one did."""
    return all(env.get(k) == os.environ.get(k) for k in IMPORT_SETTINGS)


def _become(req: dict, fds: list[int]) -> None:
    """In the forked child: become ``gpu-runner ARGV``. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)
        for target, fd in enumerate(fds[:3]):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # the new descriptors, with fresh buffers set up as Python sets up its own at start
        unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))

        def stream(fd: int, mode: str, errors: str, line: bool) -> io.TextIOWrapper:
            raw = io.FileIO(fd, mode, closefd=False)
            buf = raw if (unbuffered and mode == "w") else (io.BufferedWriter(raw) if mode == "w" else io.BufferedReader(raw))
            return io.TextIOWrapper(buf, encoding="utf-8", errors=errors, line_buffering=line,  # type: ignore[arg-type]
                                    write_through=unbuffered and mode == "w")

        sys.stdin = sys.__stdin__ = stream(0, "r", "strict", False)
        sys.stdout = sys.__stdout__ = stream(1, "w", "strict", os.isatty(1))
        sys.stderr = sys.__stderr__ = stream(2, "w", "backslashreplace", True)
        sys.argv = ["gpu-runner", *req["argv"]]
        from gpu_runner.cli import main

        try:
            main(list(req["argv"]))
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except KeyboardInterrupt:
            code = 130
    except BaseException:  # noqa: BLE001 - say what broke, exit non-zero
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(path: str) -> None:
    from gpu_runner.execute._forkserver import reaped

    for module in PRELOAD:
        __import__(module)
    assert threading.active_count() == 1, "importing started a thread: forking would not be safe"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    conns: dict[int, socket.socket] = {}  # child pid -> its client's connection
    print("ready", flush=True)
    while True:
        try:
            ready, _, _ = select.select([srv, r, *conns.values()], [], [])
        except InterruptedError:
            continue
        if r in ready:
            os.read(r, 4096)
            for pid, code in reaped():
                conn = conns.pop(pid, None)
                if conn is not None:
                    try:
                        conn.sendall(json.dumps({"status": code}).encode() + b"\n")
                    except OSError:
                        pass
                    conn.close()
        for pid, conn in list(conns.items()):
            if conn in ready:  # the client went away (killed by a test's timeout): so does its process
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
                conns.pop(pid).close()
        if srv in ready:
            conn, _ = srv.accept()
            fds = array.array("i")
            data = b""
            while not data.endswith(b"\n"):
                msg, anc, _flags, _addr = conn.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
                if not msg:
                    break
                data += msg
                for level, kind, payload in anc:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            if not data.endswith(b"\n") or len(fds) != 3:
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            req = json.loads(data)
            if not same_interpreter(req["env"]):
                conn.sendall(b'{"fallback": true}\n')
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            pid = os.fork()
            if pid == 0:
                srv.close()
                conn.close()
                _become(req, list(fds))
            for fd in fds:
                os.close(fd)
            conns[pid] = conn
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")


class Launcher:
    """One server process, started on first use, stopped at the end of the session."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "launcher.sock")
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> Launcher:
        self.proc = subprocess.Popen([sys.executable, __file__, self.path], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        return self

    def command(self) -> list[str]:
        return [sys.executable, "-I", "-S", str(CLIENT)]

    def env(self) -> dict[str, str]:
        return {SOCKET_ENV: self.path}

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    serve(sys.argv[1])
