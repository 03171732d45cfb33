"""Kernels that start without port races and never outlive the run.

* Transport: ZMQ over ``ipc`` (Unix sockets in a private folder) on POSIX, so parallel
  kernel start-ups never race for the same TCP port (the classic "Address already in
  use" of parallel notebook runs). TCP elsewhere.
* Each kernel leads its own process group (jupyter_client starts it in a new session);
  every way out of a notebook kills the whole group, so a kernel's own children
  (DataLoader workers, a stray ``subprocess``) go with it.
* On Linux the kernel also gets a parent-death signal: if gpu-runner itself is
  SIGKILLed, the kernel is killed by the kernel of the OS, not left holding GPU memory.
* :class:`KernelRegistry` knows every live process group and kills them all from
  ``atexit`` and from the signal handlers, whatever state the run is in.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import AsyncKernelManager

from .runtime import GENERIC_PYTHONS, Interpreter, overlay_boot_command
from .sweep import CGROUP_ENV, NOTEBOOK_ENV

_PDEATHSIG_HELPER = Path(__file__).with_name("_pdeathsig.py")
STARTUP_TIMEOUT_S = 120.0
IOPUB_HWM = 16
"""Messages of a forked kernel's IOPub queued on our side (the fork server sets the same on its side)."""


class KernelStartError(Exception):
    """The kernel could not be started (missing kernelspec, crashed at start, never ready)."""


_FORKSERVER = Path(__file__).with_name("_forkserver.py")
FORKSERVER_ENV = "GPU_RUNNER_FORKSERVER"
"""Set to 0 to start every kernel as its own process from scratch."""
PER_NOTEBOOK_ENV = frozenset({"GPU_RUNNER_ARTIFACTS_DIR", NOTEBOOK_ENV, CGROUP_ENV})
"""Environment that differs between notebooks of one entry; everything else keys the fork server."""


class ForkedProcess:
    """A kernel forked by a :class:`ForkServer`, with the parts of Popen's API the kernel
    manager uses. Its exit status arrives from the server (it is the server's child)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        self._exited = asyncio.Event()

    def _set_exit(self, status: int) -> None:
        self.returncode = status
        self._exited.set()

    def poll(self) -> int | None:
        return self.returncode

    async def exited(self) -> None:
        """Until the server says this kernel has exited."""
        await self._exited.wait()

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode  # only called once poll() has a status

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One ``_forkserver.py`` process: a Python with ipykernel imported, forking kernels."""

    def __init__(self, python: str, env: dict[str, str], overlay: Path | None = None) -> None:
        self.python = python
        self.env = env
        self.overlay = overlay
        self.proc: asyncio.subprocess.Process | None = None
        self.error: str | None = None
        self._next = 0
        self._pending: dict[int, asyncio.Future[ForkedProcess]] = {}
        self._children: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Lock()

    async def start(self, timeout: float = 60.0) -> bool:
        async with self._started:
            if self.proc is not None or self.error is not None:
                return self.error is None
            try:
                overlay = [str(self.overlay)] if self.overlay is not None else []
                self.proc = await asyncio.create_subprocess_exec(
                    self.python, str(_FORKSERVER), str(os.getpid()), *overlay,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL, env=self.env, start_new_session=True,
                )
                REGISTRY.add(self.proc.pid)
                line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)  # type: ignore[union-attr]
                if not line or not json.loads(line).get("ready"):
                    raise RuntimeError("it exited while importing ipykernel")
            except Exception as e:  # noqa: BLE001 - any failure means: launch kernels the usual way
                self.error = str(e) or type(e).__name__
                await self.close()
                return False
            self._reader = asyncio.ensure_future(self._read())
            return True

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if "exit" in msg:
                child = self._children.pop(msg["exit"], None)
                if child is not None:
                    child._set_exit(msg["status"])
                else:
                    self._early_exits[msg["exit"]] = msg["status"]
            elif "id" in msg:
                fut = self._pending.pop(msg["id"], None)
                if fut is None or fut.done():
                    continue
                if "pid" in msg:
                    child = ForkedProcess(msg["pid"])
                    self._children[child.pid] = child
                    if child.pid in self._early_exits:
                        child._set_exit(self._early_exits.pop(child.pid))
                    fut.set_result(child)
                else:
                    fut.set_exception(RuntimeError(msg.get("error", "fork failed")))
        # the server is gone: its children died with it (parent-death signal)
        self.error = self.error or "the fork server exited"
        for child in self._children.values():
            child._set_exit(-signal.SIGKILL)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RuntimeError(self.error))

    async def spawn(self, args: list[str], *, cwd: str, env: dict[str, str], log: str | None) -> ForkedProcess:
        assert self.proc is not None and self.proc.stdin is not None
        self._next += 1
        fut: asyncio.Future[ForkedProcess] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        self.proc.stdin.write((json.dumps({"id": self._next, "args": args, "cwd": cwd, "env": env,
                                           "log": log}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, 30)

    async def close(self) -> None:
        if self.proc is None:
            return
        from .. import phases

        phases.fork_server(self.proc.pid)
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the server kills its children and exits
            await asyncio.wait_for(self.proc.wait(), 5)
        kill_group(self.proc.pid)
        REGISTRY.discard(self.proc.pid)
        with contextlib.suppress(Exception):
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


class ForkServers:
    """Fork servers of a run, one per Python interpreter (and kernel overlay) and entry environment."""

    def __init__(self) -> None:
        self.enabled = os.name == "posix" and os.environ.get(FORKSERVER_ENV, "1") != "0"
        self._servers: dict[tuple[str, str, tuple[tuple[str, str], ...]], ForkServer] = {}

    async def get(self, python: str, env: dict[str, str], overlay: Path | None = None) -> ForkServer | None:
        if not self.enabled:
            return None
        base = {k: v for k, v in env.items() if k not in PER_NOTEBOOK_ENV}
        key = (python, str(overlay or ""), tuple(sorted(base.items())))
        server = self._servers.get(key)
        if server is None:
            server = self._servers[key] = ForkServer(python, base, overlay)
        return server if await server.start() else None

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._servers.values()), return_exceptions=True)
        self._servers.clear()


def _ipykernel_args(cmd: list[str]) -> list[str] | None:
    """The arguments of ``PYTHON -m ipykernel_launcher ARGS``, or None for any other command."""
    if len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"]:
        return cmd[3:]
    return None


def _generic_python(argv0: str) -> bool:
    """A kernelspec's interpreter that names no environment of its own: ``python``, ``python3``,
    ``{python}`` (or gpu-runner's own interpreter, as ipykernel's built-in spec writes it)."""
    return argv0 in GENERIC_PYTHONS or argv0 == sys.executable


def kernel_python(spec: Any, runtime: Interpreter | None) -> str | None:
    """The interpreter a Python kernelspec runs under: the runtime's, when one is named and the
    spec's argv names a generic ``python``; else the spec's own (``python`` resolved as
    jupyter_client does). None for a kernel that is not Python."""
    argv = list(spec.argv or [])
    if not argv or (spec.language or "").lower() != "python":
        return None
    if _generic_python(argv[0]):
        return runtime.executable if (runtime is not None and runtime.named) else sys.executable
    return shutil.which(argv[0]) or argv[0]


class GuardedKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernel dies with this process (Linux: PR_SET_PDEATHSIG),
    forked from a :class:`ForkServer` when one serves this kernel's Python."""

    fork_server: ForkServer | None = None
    log_path: str | None = None
    runtime_python: str | None = None
    """The runtime's interpreter, in place of the kernelspec's generic ``python``."""
    overlay: Path | None = None
    """The kernel overlay to append to the kernel's ``sys.path`` (runtime without ipykernel)."""

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.runtime_python and cmd:
            cmd[0] = self.runtime_python
        if self.overlay is not None and self.fork_server is None:
            args = _ipykernel_args(cmd)
            if args is not None:
                cmd = overlay_boot_command(cmd[0], self.overlay, args)
        if sys.platform.startswith("linux") and self.fork_server is None:
            return [sys.executable, "-I", "-S", str(_PDEATHSIG_HELPER), str(os.getpid()), "--", *cmd]
        return cmd

    async def _async_wait(self, pollinterval: float = 0.1) -> None:  # type: ignore[override]
        # a forked kernel's exit is told by its server: no polling every 0.1 s on each shutdown
        proc = getattr(self.provisioner, "process", None)
        if isinstance(proc, ForkedProcess):
            await proc.exited()
            return
        await super()._async_wait(pollinterval=pollinterval)

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        server = self.fork_server
        args = _ipykernel_args(kernel_cmd)
        if server is None or args is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        prov = self.provisioner
        assert prov is not None
        proc = await server.spawn(args, cwd=str(kw.get("cwd") or os.getcwd()), env=dict(kw.get("env") or {}),
                                  log=self.log_path)
        prov.process = proc  # type: ignore[attr-defined]
        prov.pid = proc.pid  # type: ignore[attr-defined]
        prov.pgid = proc.pid  # type: ignore[attr-defined]
        prov.cwd = kw.get("cwd")  # type: ignore[attr-defined]
        self._reconcile_connection_info(prov.connection_info)


class KernelRegistry:
    """Every process group a live kernel leads. Kills them all on demand or at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        atexit.register(self.kill_all)

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def live(self) -> list[int]:
        with self._lock:
            return sorted(self._groups)

    def kill_all(self) -> None:
        for pgid in self.live():
            kill_group(pgid)
            self.discard(pgid)


REGISTRY = KernelRegistry()


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group; gone already is fine."""
    if not hasattr(os, "killpg"):
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_name(returncode: int | None) -> str | None:
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


class KernelSpecs:
    """Kernelspec look-ups, cached for the run (the search walks several folders). With a
    runtime interpreter named, its own Jupyter data paths come first: the kernels a runtime
    ships (``conda-env-...``) are found."""

    def __init__(self, runtime: Interpreter | None = None) -> None:
        self.runtime = runtime
        self._ksm = KernelSpecManager()
        if runtime is not None and runtime.named:
            own = [d for d in runtime.kernel_dirs() if d]
            self._ksm.kernel_dirs = own + [d for d in self._ksm.kernel_dirs if d not in own]
        self._cache: dict[str, Any] = {}

    @property
    def manager(self) -> KernelSpecManager:
        return self._ksm

    def available(self) -> list[str]:
        return sorted(self._ksm.find_kernel_specs())

    def get(self, name: str) -> Any:
        if name not in self._cache:
            try:
                self._cache[name] = self._ksm.get_kernel_spec(name)
            except NoSuchKernel:
                self._cache[name] = None
        spec = self._cache[name]
        if spec is None:
            raise KernelStartError(
                f"kernel {name!r} is not installed on this machine (installed: {', '.join(self.available()) or 'none'})"
            )
        return spec


@dataclass
class Kernel:
    """A started kernel with its ready client."""

    name: str
    km: GuardedKernelManager
    kc: Any
    pgid: int | None
    pid: int | None
    _socket_dir: str | None = field(default=None, repr=False)
    _log: Any = field(default=None, repr=False)
    log_path: Path | None = None

    @property
    def returncode(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return None if proc is None else proc.poll()

    async def wait_exit(self, timeout: float = 2.0) -> int | None:
        """The kernel's exit status once it has died (negative: killed by that signal)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            rc = self.returncode
            if rc is not None:
                return rc
            await asyncio.sleep(0.05)
        return self.returncode

    async def interrupt(self) -> None:
        try:
            await self.km.interrupt_kernel()
        except Exception:  # noqa: BLE001 - a dead kernel cannot be interrupted; the caller kills it
            pass

    async def shutdown(self, graceful: bool = True) -> None:
        """Stop the kernel and everything in its process group. Never raises."""
        try:
            self.kc.stop_channels()
        except Exception:  # noqa: BLE001
            pass
        try:
            if graceful and self.returncode is None:
                await asyncio.wait_for(self.km.shutdown_kernel(now=False), timeout=self.km.shutdown_wait_time + 2)
            else:
                await self.km.shutdown_kernel(now=True)
        except Exception:  # noqa: BLE001 - killing the group below is what matters
            pass
        self.kill()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self.close_log()

    def close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
            if self.log_path is not None and self.log_path.exists() and self.log_path.stat().st_size == 0:
                self.log_path.unlink()

    def log_tail(self, limit: int = 4000) -> str:
        """The end of what the kernel process itself printed (not the notebook's outputs)."""
        if self._log is not None:
            self._log.flush()
        try:
            data = self.log_path.read_bytes()[-limit:] if self.log_path else b""
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")

    def kill(self) -> None:
        """SIGKILL the kernel's process group, synchronously (safe from signal handlers)."""
        if self.pgid is not None:
            kill_group(self.pgid)
            REGISTRY.discard(self.pgid)
        proc = getattr(self.km.provisioner, "process", None)
        if proc is not None:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001
                pass


async def start_kernel(
    name: str,
    *,
    specs: KernelSpecs,
    cwd: Path,
    env: dict[str, str],
    log_path: Path | None = None,
    forks: ForkServers | None = None,
    startup_timeout: float = STARTUP_TIMEOUT_S,
) -> Kernel:
    """Start kernel ``name`` in ``cwd`` with ``env`` added, and wait until it answers.

    The kernel process's own stdout and stderr (crash messages, C-level library output,
    the kernel's logging) go to ``log_path``, not to gpu-runner's terminal.
    """
    spec = specs.get(name)  # raises KernelStartError when missing
    runtime = specs.runtime
    python = kernel_python(spec, runtime)
    on_runtime = bool(runtime is not None and runtime.named and spec.argv and _generic_python(spec.argv[0])
                      and python is not None)
    if on_runtime and runtime is not None and runtime.problem:
        raise KernelStartError(f"kernel {name!r} cannot start: {runtime.problem}")
    overlay = runtime.overlay if (on_runtime and runtime is not None) else None
    socket_dir = None
    if os.name == "posix":
        # short path: Unix socket paths are limited to ~107 bytes
        socket_dir = tempfile.mkdtemp(prefix="gr-", dir="/tmp" if os.path.isdir("/tmp") else None)
        km = GuardedKernelManager(kernel_name=name, kernel_spec_manager=specs.manager, transport="ipc",
                                  ip=os.path.join(socket_dir, "k"))
    else:
        km = GuardedKernelManager(kernel_name=name, kernel_spec_manager=specs.manager)
    km.kernel_spec  # noqa: B018 - resolve now (cached spec above proves it exists)
    km.shutdown_wait_time = 2.0
    if on_runtime:
        km.runtime_python, km.overlay = python, overlay
    kernel_env = {**os.environ, **(spec.env or {}), **env}
    kernel_env.pop("JPY_PARENT_PID", None)
    if forks is not None and python is not None and _ipykernel_args(spec.argv) is not None:
        km.fork_server = await forks.get(python, kernel_env, overlay)
    km.log_path = str(log_path) if log_path is not None else None
    extra: list[str] = []
    if spec.language.lower() == "python" and any("ipykernel" in a for a in spec.argv):
        # Parallel kernels sharing one IPython history sqlite file lock each other out.
        extra.append("--HistoryManager.hist_file=:memory:")
    kernel: Kernel | None = None
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed with the kernel
    # a forked kernel opens the log itself
    streams = {"stdout": log, "stderr": subprocess.STDOUT} if (log is not None and km.fork_server is None) else {}
    try:
        await km.start_kernel(cwd=str(cwd), env=kernel_env, extra_arguments=extra, **streams)
        prov = km.provisioner
        pid = getattr(getattr(prov, "process", None), "pid", None)
        pgid = getattr(prov, "pgid", None) or pid
        if pgid is not None:
            REGISTRY.add(pgid)
        kc = km.client()
        if km.fork_server is not None:
            # a forked kernel waits (XPUB_NODROP) rather than drop when this queue is full, so it can
            # be short: at most IOPUB_HWM stream messages of about 1 MB each are held here
            with contextlib.suppress(Exception):
                kc.context.setsockopt(zmq.RCVHWM, IOPUB_HWM)
        kernel = Kernel(name=name, km=km, kc=kc, pgid=pgid, pid=pid, _socket_dir=socket_dir, _log=log,
                        log_path=log_path)
        kc.start_channels()
        await _wait_ready(kernel, startup_timeout)
        kc.allow_stdin = False
        return kernel
    except BaseException as e:
        detail = str(e) or type(e).__name__
        if kernel is not None:
            rc = kernel.returncode
            if rc is not None:
                detail = f"the kernel exited with code {rc} while starting" + (
                    f" ({signal_name(rc)})" if signal_name(rc) else ""
                )
            said = kernel.log_tail(1500).strip()
            if said:
                detail += f"; it said:\n{said}"
            kernel.kill()
            kernel.close_log()
        else:
            if km.has_kernel:
                await km.shutdown_kernel(now=True)
            if log is not None:
                log.close()
        if socket_dir:
            shutil.rmtree(socket_dir, ignore_errors=True)
        if not isinstance(e, Exception):  # cancelled (or interrupted): cleaned up, carry on unwinding
            raise
        raise KernelStartError(f"kernel {name!r} failed to start: {detail}") from e


IOPUB_PROOF_S = 0.2
"""How long, after a kernel_info reply, the first IOPub message may take before we ask again."""


async def kernel_ready(kc: Any, timeout: float) -> None:
    """The kernel answers ``kernel_info`` on the shell channel and its IOPub reaches us.

    jupyter_client's ``wait_for_ready`` does the same, then waits until IOPub has been quiet
    for 0.2 s to drop what arrived meanwhile: a fixed 0.2 s on every kernel start. That is not
    needed here: nbclient reads only the messages whose parent is the request it sent. IOPub
    is proven connected by any message arriving on it (a subscriber that joins late misses
    what was published before); until one does, kernel_info is asked again."""
    from queue import Empty

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        msg_id = kc.kernel_info()
        reply = None
        while reply is None:
            left = deadline - loop.time()
            if left <= 0:
                raise RuntimeError(f"the kernel did not answer in {timeout:g} s")
            try:
                msg = await kc.shell_channel.get_msg(timeout=min(left, 1.0))
            except Empty:
                break  # ask again
            if msg.get("parent_header", {}).get("msg_id") == msg_id and msg.get("msg_type") == "kernel_info_reply":
                reply = msg
        if reply is None:
            continue
        try:
            await kc.iopub_channel.get_msg(timeout=IOPUB_PROOF_S)
        except Empty:
            continue  # IOPub not connected yet: what it published for this request is lost
        kc._handle_kernel_info_reply(reply)
        return


async def _wait_ready(kernel: Kernel, timeout: float) -> None:
    """Wait for kernel_info, failing fast when the kernel process dies meanwhile."""
    ready = asyncio.ensure_future(kernel_ready(kernel.kc, timeout))
    try:
        while True:
            done, _ = await asyncio.wait({ready}, timeout=0.2)
            if done:
                ready.result()
                return
            if kernel.returncode is not None:
                raise KernelStartError(f"the kernel exited with code {kernel.returncode} while starting")
    finally:
        if not ready.done():
            ready.cancel()
