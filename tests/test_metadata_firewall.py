"""The metadata firewall of the startup script, for real: network namespaces, real iptables and
ip6tables, a stand-in metadata server that is also the resolver and the time server.

On Compute Engine one address is three services. https://cloud.google.com/compute/docs/internal-dns:
"Each instance has a metadata server that also acts as a DNS resolver for that instance", and
the DHCP lease writes ``nameserver 169.254.169.254`` into resolv.conf.
https://cloud.google.com/compute/docs/instances/configure-ntp: instances are preconfigured to use
Google's internal NTP service, ``metadata.google.internal`` (169.254.169.254). The metadata
itself, and the service account's token, are served over HTTP at
``http://metadata.google.internal/computeMetadata/v1/`` (port 80;
https://cloud.google.com/compute/docs/metadata/overview). The IPv6 address of the same server is
``fd20:ce::254`` (IPv6-only and dual-stack VMs).

So the rules must refuse the HTTP endpoint to the job (every user but root, and containers) and
leave DNS (UDP and TCP 53) and NTP (UDP 123) open: systemd-resolved, chrony and the runner are not
root, and a container's DNS goes out through the FORWARD chain.

The layout (each a network namespace made here):

    ctr (a container on the VM) --veth-- vm (the VM: the rendered rules) --veth-- srv (169.254.169.254, fd20:ce::254)

``vm`` forwards for ``ctr`` as a Docker bridge would. The rules are those of the rendered
startup script: its text, less its last line (``main "$@"``), then ``guard_metadata``, run as root
in ``vm``. Needs root (CI runs as root); skipped without it, except under CI, where it must run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_runner.cloud.startup import render

TOKEN = "ya29.the-vms-service-account-token"
ANSWER = "10.9.8.7"
NOBODY = "65534"

SERVER = r'''
import socket, socketserver, struct, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

TOKEN, ANSWER = sys.argv[1], sys.argv[2]

def dns_answer(query):
    """An A record ANSWER for any A question (AAAA and others: no answer)."""
    i = 12
    while query[i]:
        i += query[i] + 1
    qtype = struct.unpack("!H", query[i + 1:i + 3])[0]
    question = query[12:i + 5]
    header = query[:2] + b"\x81\x80" + struct.pack("!HHHH", 1, 1 if qtype == 1 else 0, 0, 0)
    rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(ANSWER) if qtype == 1 else b""
    return header + question + rr

class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        port = self.server.server_address[1]
        sock.sendto(dns_answer(data) if port == 53 else b"\x24" + b"\0" * 47, self.client_address)

class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        n = struct.unpack("!H", self.request.recv(2))[0]
        out = dns_answer(self.request.recv(n))
        self.request.sendall(struct.pack("!H", len(out)) + out)

class Http(BaseHTTPRequestHandler):
    def do_GET(self):
        ok = (self.path == "/computeMetadata/v1/instance/service-accounts/default/token"
              and self.headers.get("Metadata-Flavor") == "Google")
        body = ('{"access_token": "%s", "expires_in": 3599, "token_type": "Bearer"}' % TOKEN).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body) if ok else 0))
        self.end_headers()
        if ok:
            self.wfile.write(body)
    def log_message(self, *a):
        pass

def six(cls):
    return type(cls.__name__ + "6", (cls,), {"address_family": socket.AF_INET6})

servers = []
for addr in ("169.254.169.254", "fd20:ce::254"):
    v6 = ":" in addr
    U = six(socketserver.ThreadingUDPServer) if v6 else socketserver.ThreadingUDPServer
    T = six(socketserver.ThreadingTCPServer) if v6 else socketserver.ThreadingTCPServer
    H = six(HTTPServer) if v6 else HTTPServer
    servers += [U((addr, 53), Udp), U((addr, 123), Udp), T((addr, 53), Tcp), H((addr, 80), Http)]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
'''

CLIENT = r'''
import json, socket, struct, sys, urllib.request

def query(name):
    q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for part in name.split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\x00\x00\x01\x00\x01"

def a_record(reply):
    return socket.inet_ntoa(reply[-4:]) if struct.unpack("!H", reply[6:8])[0] else "no answer"

def attempt(fn):
    try:
        return fn()
    except Exception as e:
        return "error: " + type(e).__name__

def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def udp(addr, port, payload):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((addr, port))
    s.send(payload)
    return s.recv(512)

def tcp_dns(addr):
    s = socket.create_connection((addr, 53), timeout=3)
    q = query("github.com")
    s.sendall(struct.pack("!H", len(q)) + q)
    n = struct.unpack("!H", s.recv(2))[0]
    return a_record(s.recv(n))

def token(addr):
    host = "[%s]" % addr if ":" in addr else addr
    req = urllib.request.Request("http://%s/computeMetadata/v1/instance/service-accounts/default/token" % host,
                                 headers={"Metadata-Flavor": "Google"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(req, timeout=3).read())["access_token"]

out = {"uid": __import__("os").getuid()}
for addr in ("169.254.169.254", "fd20:ce::254"):
    out[addr] = {
        "dns-udp": attempt(lambda: a_record(udp(addr, 53, query("github.com")))),
        "dns-tcp": attempt(lambda: tcp_dns(addr)),
        "ntp": attempt(lambda: "reply" if len(udp(addr, 123, b"\x23" + b"\0" * 47)) == 48 else "short"),
        "token": attempt(lambda: token(addr)),
    }
if "--resolver" in sys.argv:  # the system's resolver (glibc, resolv.conf), as the runner resolves github.com
    out["getaddrinfo"] = attempt(lambda: socket.getaddrinfo("github.com", 443, socket.AF_INET)[0][4][0])
print(json.dumps(out))
'''


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root: network namespaces and iptables"
    for tool in ("ip", "iptables", "ip6tables", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/proc/net/if_inet6").exists():
        return "needs a kernel with IPv6"
    return None


def _skip_or_fail(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must run the metadata firewall test (as root, with iptables)")
    pytest.skip(why)


def _sh(*args: str) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")


class Net:
    """The three namespaces, the stand-in servers in ``srv``, a resolv.conf for ``vm``."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.srv, self.vm, self.ctr = f"grmd-{tag}-srv", f"grmd-{tag}-vm", f"grmd-{tag}-ctr"
        self.etc = Path("/etc/netns") / self.vm
        self.server: subprocess.Popen[str] | None = None
        self.made: list[str] = []

    def up(self) -> None:
        for ns in (self.srv, self.vm, self.ctr):
            _sh("ip", "netns", "add", ns)
            self.made.append(ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        srv, vm, ctr = self.srv, self.vm, self.ctr
        _sh("ip", "-n", vm, "link", "add", "vm0", "type", "veth", "peer", "name", "md0", "netns", srv)
        _sh("ip", "-n", ctr, "link", "add", "ct0", "type", "veth", "peer", "name", "br0", "netns", vm)
        for ns, dev, v4, v6 in ((srv, "md0", "10.200.0.1/24", "fd00:200::1/64"),
                                (vm, "vm0", "10.200.0.2/24", "fd00:200::2/64"),
                                (vm, "br0", "10.201.0.1/24", "fd00:201::1/64"),
                                (ctr, "ct0", "10.201.0.2/24", "fd00:201::2/64")):
            _sh("ip", "-n", ns, "addr", "add", v4, "dev", dev)
            _sh("ip", "-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        _sh("ip", "-n", srv, "addr", "add", "169.254.169.254/32", "dev", "lo")
        _sh("ip", "-n", srv, "-6", "addr", "add", "fd20:ce::254/128", "dev", "lo")
        _sh("ip", "-n", srv, "route", "add", "10.201.0.0/24", "via", "10.200.0.2")
        _sh("ip", "-n", srv, "-6", "route", "add", "fd00:201::/64", "via", "fd00:200::2")
        _sh("ip", "-n", vm, "route", "add", "169.254.169.254/32", "via", "10.200.0.1")
        _sh("ip", "-n", vm, "-6", "route", "add", "fd20:ce::254/128", "via", "fd00:200::1")
        _sh("ip", "-n", ctr, "route", "add", "default", "via", "10.201.0.1")
        _sh("ip", "-n", ctr, "-6", "route", "add", "default", "via", "fd00:201::1")
        _sh("ip", "netns", "exec", vm, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
        # `ip netns exec` bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text("nameserver 169.254.169.254\n")
        self.server = subprocess.Popen(["ip", "netns", "exec", srv, sys.executable, "-c", SERVER, TOKEN, ANSWER],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.server.stdout is not None and self.server.stdout.readline().strip() == "ready"

    def client(self, ns: str, *, uid: str | None = None) -> dict:
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        who = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid else []
        args = ["ip", "netns", "exec", ns, *who, python, "-c", CLIENT] + (["--resolver"] if ns == self.vm else [])
        r = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd="/")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def down(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)


@pytest.fixture
def net() -> Iterator[Net]:
    why = _unavailable()
    if why:
        _skip_or_fail(why)
    n = Net()
    try:
        n.up()
    except (RuntimeError, OSError, AssertionError) as e:
        n.down()
        _skip_or_fail(f"cannot make network namespaces here ({e})")
    yield n
    n.down()


def _apply_rendered_rules(net: Net, tmp: Path, **render_kw: object) -> subprocess.CompletedProcess[str]:
    """The rendered startup script's own guard_metadata, as root in the VM's namespace."""
    text = render(expected_gpus=1, **render_kw)  # type: ignore[arg-type]
    body, last = text.rstrip("\n").rsplit("\n", 1)
    assert last == 'main "$@"', last  # the script ends by calling main: everything above only defines
    script = tmp / "guard.sh"
    script.write_text(body + "\nguard_metadata\n")
    return subprocess.run(["ip", "netns", "exec", net.vm, "bash", str(script)], capture_output=True, text=True,
                          timeout=60, env={"PATH": os.environ["PATH"]})


ADDRS = ("169.254.169.254", "fd20:ce::254")


def test_the_job_keeps_dns_and_ntp_and_loses_the_token(net: Net, tmp_path: Path) -> None:
    """Before the rules an unprivileged user reaches all of it (so the layout works); after them
    it still resolves names (UDP and TCP, and through resolv.conf as the runner does) and gets
    NTP replies, but not the token, over IPv4 and IPv6; root still gets the token."""
    before = net.client(net.vm, uid=NOBODY)
    assert before["uid"] == int(NOBODY)
    for addr in ADDRS:
        assert before[addr] == {"dns-udp": ANSWER, "dns-tcp": ANSWER, "ntp": "reply", "token": TOKEN}, before
    assert before["getaddrinfo"] == ANSWER

    r = _apply_rendered_rules(net, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr

    job = net.client(net.vm, uid=NOBODY)
    for addr in ADDRS:
        assert job[addr]["dns-udp"] == ANSWER, (addr, job)
        assert job[addr]["dns-tcp"] == ANSWER, (addr, job)
        assert job[addr]["ntp"] == "reply", (addr, job)
        assert job[addr]["token"].startswith("error:"), (addr, job)
    assert job["getaddrinfo"] == ANSWER, job

    root = net.client(net.vm)
    assert root["uid"] == 0
    for addr in ADDRS:
        assert root[addr]["token"] == TOKEN and root[addr]["dns-udp"] == ANSWER, (addr, root)


def test_a_container_keeps_dns_and_loses_the_token(net: Net, tmp_path: Path) -> None:
    """A container's packets cross the VM's FORWARD chain (root inside the container or not)."""
    before = net.client(net.ctr)
    assert all(before[a]["token"] == TOKEN for a in ADDRS), before
    r = _apply_rendered_rules(net, tmp_path, docker=True)
    assert r.returncode == 0, r.stdout + r.stderr
    ctr = net.client(net.ctr)
    for addr in ADDRS:
        assert ctr[addr]["dns-udp"] == ANSWER and ctr[addr]["dns-tcp"] == ANSWER, (addr, ctr)
        assert ctr[addr]["ntp"] == "reply", (addr, ctr)
        assert ctr[addr]["token"].startswith("error:"), (addr, ctr)

