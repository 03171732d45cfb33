"""A fork server for IPython kernels: import ipykernel once, fork a fresh kernel per notebook.

Starting a kernel the usual way spends most of its half second of CPU importing
ipykernel, IPython, zmq and tornado. This process imports them once, then forks: each
child is a new process (no notebook state is shared) that starts exactly as
``python -m ipykernel_launcher ARGS`` would, in its own process group, with
the notebook's working directory, environment and log file.

Before the first fork it also imports what every kernel imports as it starts (the debugger,
above all: half of a forked kernel's start otherwise) and freezes the garbage collector's view
of all that (``gc.freeze``), so each kernel starts in about a third of the CPU it took.

Run as ``python _forkserver.py PARENT_PID [OVERLAY]`` under the kernel's own Python (any
Python 3.8 or newer: the runtime's, not gpu-runner's). OVERLAY, a folder holding ipykernel for
a runtime that has none, goes at the end of ``sys.path``: the runtime's own packages win. Standalone on
purpose: it imports nothing from gpu-runner. It never creates a thread or a zmq context,
so forking is safe. Protocol, one JSON object per line:

    stdin   {"id": N, "args": [...], "cwd": "...", "env": {...}, "log": "..."}
    stdout  {"ready": true}                       once the imports are done
            {"id": N, "pid": PID} | {"id": N, "error": "..."}
            {"exit": PID, "status": CODE}        CODE < 0: killed by signal -CODE

When gpu-runner dies, even by SIGKILL, the server gets SIGTERM (PR_SET_PDEATHSIG) and
kills every kernel's process group, so not even what a notebook started is left; the
kernels also die with the server on their own (SIGKILL). EOF on stdin: the same, then exit.
The server is a child subreaper (Linux): what a kernel started in a new session is
re-parented to it when the kernel dies, so "every descendant" includes it, and the server
reaps it. A kernel whose request names a cgroup (``GPU_RUNNER_CGROUP`` in its environment)
joins it first thing; on the way out the server kills and removes those cgroups too.
"""

import ctypes
import json
import os
import select
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36
CGROUP_ENV = "GPU_RUNNER_CGROUP"


def _pdeathsig(sig: int = signal.SIGKILL) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _kill_groups(children: set) -> None:
    """SIGKILL each kernel's whole process group: the kernel and whatever it started."""
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _exitcode(status: int) -> int:
    """os.waitstatus_to_exitcode, which Python 3.8 lacks."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def reaped():
    """``(pid, exit code)`` of every child that has ended, reaped without waiting (CODE < 0:
    killed by signal -CODE)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, _exitcode(status)


def _descendants() -> list:
    """Every process below this one (from /proc; this file imports nothing but the stdlib)."""
    parent_of = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            parent_of[int(name)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    below, frontier = [], [os.getpid()]
    while frontier:
        nxt = [pid for pid, ppid in parent_of.items() if ppid in frontier]
        below += nxt
        frontier = nxt
    return below


def _kill_all(children: set, cgroups: set) -> None:
    """Everything the kernels started, wherever it went: their groups, every descendant (orphans
    were re-parented to us), their cgroups."""
    _kill_groups(children)
    for _ in range(3):
        pids = _descendants()
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for path in cgroups:
        try:
            with open(os.path.join(path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            pass
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ValueError):
            pass
    for path in cgroups:
        for _ in range(100):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                select.select([], [], [], 0.01)
    for parent in {os.path.dirname(p) for p in cgroups}:
        try:
            os.rmdir(parent)  # the run's cgroup, once every notebook's is gone
        except OSError:
            pass


STREAM_MESSAGE_CHARS = 1 << 20
IOPUB_HWM = 16


def _bound_stream_messages(limit: int = STREAM_MESSAGE_CHARS) -> None:
    """ipykernel sends what a cell printed between two flushes (0.2 s apart, or only at the end of
    a busy cell) as one message: a cell that prints 2 GB sends one 2 GB message, which the
    receiving side must hold whole. In the kernels forked from here, ``sys.stdout``/``stderr``
    flush once ``limit`` characters are pending, and a longer single write goes out in slices,
    so no stream message is much over ``limit``; what the notebook shows is the same text. Any
    ipykernel where this does not apply is left as it is."""
    try:
        from ipykernel.iostream import OutStream
    except Exception:  # noqa: BLE001
        return
    original = getattr(OutStream, "write", None)
    if original is None or getattr(original, "_gpu_runner", False):
        return

    def write(self, string):  # type: ignore[no-untyped-def]
        if not isinstance(string, str) or len(string) <= limit:
            n = original(self, string)
            pending = getattr(self, "_gpu_runner_pending", 0) + (len(string) if isinstance(string, str) else 0)
            if pending >= limit:
                pending = 0
                self.flush()
            self._gpu_runner_pending = pending
            return n
        for i in range(0, len(string), limit):
            original(self, string[i:i + limit])
            self.flush()
        self._gpu_runner_pending = 0
        return len(string)

    write._gpu_runner = True  # type: ignore[attr-defined]
    OutStream.write = write

    # backpressure instead of loss: when gpu-runner reads slower than a cell prints, the kernel's
    # IOPub send waits (XPUB_NODROP) once IOPUB_HWM messages are queued, rather than dropping them
    # or queueing without bound; gpu-runner keeps its own queue as short (see kernels.py)
    try:
        import zmq
        from ipykernel.kernelapp import IPKernelApp
    except Exception:  # noqa: BLE001
        return
    init_iopub = getattr(IPKernelApp, "init_iopub", None)
    if init_iopub is None or not hasattr(zmq, "XPUB_NODROP"):
        return

    def bounded_init_iopub(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = init_iopub(self, *args, **kwargs)
        thread = getattr(self, "iopub_thread", None)
        sock = getattr(thread, "socket", None)  # the zmq socket itself, used by the IOPub thread only

        def apply() -> None:  # on that thread: zmq sockets are not thread-safe
            try:
                if sock.getsockopt(zmq.TYPE) == zmq.XPUB:
                    sock.setsockopt(zmq.SNDHWM, IOPUB_HWM)
                    sock.setsockopt(zmq.XPUB_NODROP, 1)
            except Exception:  # noqa: BLE001
                pass

        if sock is not None and hasattr(thread, "schedule"):
            try:
                thread.schedule(apply)
            except Exception:  # noqa: BLE001
                pass
        return out

    IPKernelApp.init_iopub = bounded_init_iopub


PREIMPORT = (
    "ipykernel.debugger",  # debugpy: half of what a kernel's start costs once forked, if left to each kernel
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "sqlite3",
    "tornado.platform.asyncio",
    "tornado.queues",
)
"""What every kernel imports as it starts (ipykernel 6 and 7): imported once here instead. Only
imports: none of them starts a thread or opens a socket, so forking stays safe. A kernel started
from scratch imports them without its folder on sys.path too (ipykernel_launcher takes it off
while it loads), so a notebook's own ``code.py`` shadows none of them, there as here."""


def _preimport() -> None:
    import importlib

    for name in PREIMPORT:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - another ipykernel or IPython: the kernel imports what it needs
            pass


def _send(obj: dict) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:  # raw fd writes: no Python buffer for a forked child to inherit
        data = data[os.write(1, data):]


def _child(req: dict) -> None:
    """In the forked child: become the kernel. Never returns."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group (the parent sets it too: no window for a missed kill)
        if req["env"].get(CGROUP_ENV):  # before anything runs, so all it starts is in there
            try:
                with open(os.path.join(req["env"][CGROUP_ENV], "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass
        _pdeathsig()
        try:  # what top and `ps -o comm` show
            ctypes.CDLL(None).prctl(PR_SET_NAME, b"ipykernel", 0, 0, 0)
        except (OSError, AttributeError):
            pass
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if req.get("log") else \
            os.open(os.devnull, os.O_WRONLY)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, 65536)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        # as jupyter_client does for the kernels it launches: ipykernel then watches its parent
        # (one more guard against orphans) and prints no stand-alone banner. The setting's
        # default was read from the environment at import, in the server: pass it explicitly.
        os.environ["JPY_PARENT_PID"] = str(os.getppid())
        parent_handle = [f"--IPKernelApp.parent_handle={os.getppid()}"]
        # as `python -m` would: the working directory first on sys.path
        sys.path[0] = os.getcwd()
        sys.argv = ["ipykernel_launcher", *req["args"], *parent_handle]
        import runpy

        runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - report to the log, exit non-zero
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    parent = int(sys.argv[1])
    children: set[int] = set()
    cgroups: set[str] = set()

    def parent_died(*_: object) -> None:
        # gpu-runner is gone (even SIGKILLed): take everything the kernels started with us,
        # so that not even what a notebook started itself is left behind
        _kill_all(children, cgroups)
        os._exit(1)

    signal.signal(signal.SIGTERM, parent_died)
    _pdeathsig(signal.SIGTERM)  # catchable, unlike the kernels' own SIGKILL
    try:  # orphans of the kernels come to us, not to PID 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(1)
    # neither this script's folder nor the working directory: a module there must not shadow
    # what the kernels import from the runtime (each kernel puts its notebook's folder first)
    del sys.path[0]
    if len(sys.argv) > 2:
        sys.path.append(sys.argv[2])  # the kernel overlay, after the runtime's own site-packages
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is gpu-runner's to handle
    import ipykernel.ipkernel  # noqa: F401 - the point: import once, fork many
    import ipykernel.kernelapp  # noqa: F401
    import ipykernel_launcher  # noqa: F401

    _preimport()
    sys.path.insert(0, os.getcwd())
    _bound_stream_messages()
    # what is imported so far is never collected: a kernel's collections then never walk (and so
    # never copy, page by page) the objects it shares with this process (Python's advice for
    # fork without exec: the gc module, gc.freeze)
    import gc

    gc.collect()
    gc.freeze()

    r, w = os.pipe()
    os.set_blocking(w, False)
    signal.set_wakeup_fd(w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _send({"ready": True})
    buf = b""
    while True:
        try:
            ready, _, _ = select.select([0, r], [], [])
        except InterruptedError:
            continue
        if r in ready:
            os.read(r, 4096)
            for pid, code in reaped():  # kernels, and the orphans re-parented to us
                if pid in children:
                    children.discard(pid)
                    _send({"exit": pid, "status": code})
        if 0 in ready:
            chunk = os.read(0, 65536)
            if not chunk:  # gpu-runner is done (or gone): nothing a kernel started outlives it
                _kill_all(children, cgroups)
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if req["env"].get(CGROUP_ENV):
                    cgroups.add(req["env"][CGROUP_ENV])
                try:
                    pid = os.fork()
                except OSError as e:
                    _send({"id": req["id"], "error": str(e)})
                    continue
                if pid == 0:
                    _child(req)
                try:
                    os.setpgid(pid, pid)
                except OSError:
                    pass  # the child got there first
                children.add(pid)
                _send({"id": req["id"], "pid": pid})


if __name__ == "__main__":
    main()
