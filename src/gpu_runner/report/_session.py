"""Playwright's Node.js driver, as the leader of a new session (so a terminal's Ctrl-C, which
signals the foreground process group, does not reach it; gpu-runner closes it itself).

Playwright runs ``EXECUTABLE ENTRYPOINT run-driver``; gpu-runner points it at
``python _session.py run-driver``, and this finds the driver as Playwright would and execs it.
"""

import sys

del sys.path[0]  # this folder (report/) must not shadow standard modules (html)

import os  # noqa: E402


def main() -> None:
    from playwright._impl._driver import compute_driver_executable

    node, cli = compute_driver_executable()
    try:
        os.setsid()
    except OSError:
        pass  # already a group leader: it is not in the caller's group anyway
    os.execv(node, [node, cli, *sys.argv[1:]])


if __name__ == "__main__":
    main()
