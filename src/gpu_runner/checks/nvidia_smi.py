"""``nvidia-smi -q`` as data.

The layout parsed here is the one ``nvidia-smi -q`` has printed for years (see the
"GPU ATTRIBUTES" section of ``man nvidia-smi``)::

    ==============NVSMI LOG==============

    Timestamp                                 : Thu Nov 14 15:35:07 2024
    Driver Version                            : 550.54.14
    CUDA Version                              : 12.4

    Attached GPUs                             : 2
    GPU 00000000:AD:00.0
        Product Name                          : NVIDIA H100 NVL
        ...
        FB Memory Usage
            Total                             : 95830 MiB

A key and its value are split at the first ``" : "``; a line without one opens a
section whose lines are indented by four more spaces. Each ``GPU <bus id>`` line at the
left margin opens one GPU. Fields a driver does not print (older drivers lack
``Product Architecture`` and ``Reserved``) are ``None``; values ``N/A`` are ``None`` too.
NVIDIA says the text output is not guaranteed to stay compatible, so the parser never
fails on what it does not know: it keeps the whole tree of every GPU, and the check
keeps the whole text as an artifact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_KV = re.compile(r"^(?P<indent> *)(?P<key>\S.*?)\s+:(?:\s(?P<value>.*))?$")
_GPU_HEADER = re.compile(r"^GPU (?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])\s*$")
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z%]*)")
NO_DEVICES = "No devices were found"


@dataclass
class SmiGpu:
    index: int
    bus_id: str
    name: str | None = None
    brand: str | None = None
    architecture: str | None = None
    uuid: str | None = None
    serial: str | None = None
    vbios_version: str | None = None
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    memory_reserved_mib: int | None = None
    persistence_mode: str | None = None
    mig_mode: str | None = None
    compute_mode: str | None = None
    ecc_mode: str | None = None
    volatile_uncorrectable_ecc: int | None = None
    """Uncorrectable ECC errors since the driver loaded (DRAM and SRAM summed)."""
    remapped_rows_pending: bool | None = None
    reset_required: bool | None = None
    temperature_c: float | None = None
    power_limit_w: float | None = None
    performance_state: str | None = None
    tree: dict[str, Any] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """The fields, without the raw tree (what goes into results.json)."""
        return {k: v for k, v in self.__dict__.items() if k != "tree" and v is not None}

    def warnings(self) -> list[str]:
        """What makes this GPU suspect, in words (empty when healthy)."""
        out = []
        who = f"GPU {self.index} ({self.bus_id})"
        if self.volatile_uncorrectable_ecc:
            out.append(f"{who}: {self.volatile_uncorrectable_ecc} uncorrectable ECC error(s) since the driver loaded")
        if self.remapped_rows_pending:
            out.append(f"{who}: a row remapping is pending; the GPU needs a reset")
        if self.reset_required:
            out.append(f"{who}: nvidia-smi says a reset is required")
        if self.mig_mode and self.mig_mode.lower() == "enabled":
            out.append(f"{who}: MIG mode is enabled; frameworks see MIG instances, not the whole GPU")
        return out


@dataclass
class SmiReport:
    driver_version: str | None = None
    cuda_version: str | None = None
    attached_gpus: int | None = None
    timestamp: str | None = None
    gpus: list[SmiGpu] = field(default_factory=list)

    @property
    def count(self) -> int:
        """GPUs: the ``Attached GPUs`` line, else the GPU sections found."""
        return self.attached_gpus if self.attached_gpus is not None else len(self.gpus)


def _value(raw: str | None) -> str | None:
    if raw is None:
        return None
    v = raw.strip()
    return None if v in ("", "N/A", "[N/A]", "Not Supported", "[Not Supported]", "Unknown Error") else v


def _number(raw: Any) -> float | None:
    if not isinstance(raw, str):
        return None
    m = _NUMBER.match(raw)
    return float(m.group(1)) if m else None


def _mib(raw: Any) -> int | None:
    if not isinstance(raw, str):
        return None
    m = _NUMBER.match(raw)
    if not m:
        return None
    n, unit = float(m.group(1)), m.group(2).lower()
    scale = {"kib": 1 / 1024, "mib": 1, "gib": 1024, "b": 1 / 2**20}.get(unit, 1)
    return int(round(n * scale))


def _get(tree: dict[str, Any], *path: str) -> Any:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _first(tree: dict[str, Any], *paths: tuple[str, ...]) -> Any:
    for p in paths:
        v = _get(tree, *p)
        if v is not None:
            return v
    return None


def _yes(raw: Any) -> bool | None:
    if not isinstance(raw, str):
        return None
    return raw.strip().lower() == "yes"


def parse_tree(lines: list[str]) -> dict[str, Any]:
    """Indented ``key : value`` lines into nested dicts (the first of a repeated key wins)."""
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        m = _KV.match(line.rstrip())
        if m and (m.group("value") is not None or line.rstrip().endswith(":")):
            key = m.group("key").strip()
            parent.setdefault(key, _value(m.group("value")))
        else:
            key = line.strip().rstrip(":").strip()
            section: dict[str, Any] = {}
            if key not in parent:
                parent[key] = section
            # else: a repeated section (one per process, say): keep the first, read this one into a scratch dict
            stack.append((indent, section))
    return root


def _ecc_uncorrectable(tree: dict[str, Any]) -> int | None:
    vol = _get(tree, "ECC Errors", "Volatile")
    if not isinstance(vol, dict):
        return None
    total, seen = 0, False
    for key, value in vol.items():
        if isinstance(value, dict):
            # drivers before 525 nest it: Single Bit / Double Bit -> Device Memory, ..., Total
            if key.lower().startswith("double bit"):
                n = _number(value.get("Total"))
                if n is not None:
                    total += int(n)
                    seen = True
            continue
        if "uncorrectable" in key.lower():
            n = _number(value)
            if n is not None:
                total += int(n)
                seen = True
    return total if seen else None


def _gpu(index: int, bus: str, tree: dict[str, Any]) -> SmiGpu:
    return SmiGpu(
        index=index,
        bus_id=bus,
        name=_get(tree, "Product Name"),
        brand=_get(tree, "Product Brand"),
        architecture=_get(tree, "Product Architecture"),
        uuid=_get(tree, "GPU UUID"),
        serial=_get(tree, "Serial Number"),
        vbios_version=_get(tree, "VBIOS Version"),
        memory_total_mib=_mib(_first(tree, ("FB Memory Usage", "Total"), ("Memory Usage", "Total"))),
        memory_used_mib=_mib(_first(tree, ("FB Memory Usage", "Used"), ("Memory Usage", "Used"))),
        memory_reserved_mib=_mib(_get(tree, "FB Memory Usage", "Reserved")),
        persistence_mode=_get(tree, "Persistence Mode"),
        mig_mode=_get(tree, "MIG Mode", "Current"),
        compute_mode=_get(tree, "Compute Mode"),
        ecc_mode=_first(tree, ("ECC Mode", "Current"), ("Ecc Mode", "Current")),  # "Ecc" before ~R495
        volatile_uncorrectable_ecc=_ecc_uncorrectable(tree),
        remapped_rows_pending=_yes(_get(tree, "Remapped Rows", "Pending")),
        reset_required=_yes(_get(tree, "GPU Reset Status", "Reset Required")),
        temperature_c=_number(_get(tree, "Temperature", "GPU Current Temp")),
        power_limit_w=_number(_first(tree, ("GPU Power Readings", "Current Power Limit"),
                                     ("Power Readings", "Power Limit"), ("GPU Power Readings", "Power Limit"))),
        performance_state=_get(tree, "Performance State"),
        tree=tree,
    )


def parse(text: str) -> SmiReport:
    """Parse the text of ``nvidia-smi -q``. Never raises; unknown lines are kept in the trees."""
    report = SmiReport()
    header: list[str] = []
    blocks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = line.rstrip("\r")
        if line.startswith("="):  # ==============NVSMI LOG==============
            continue
        m = _GPU_HEADER.match(line)
        if m:
            blocks.append((m.group("bus"), []))
        elif blocks and (line.startswith(" ") or not line.strip()):
            blocks[-1][1].append(line)
        else:
            # a new top-level line ends the GPU sections (e.g. Unit data after the GPUs)
            if blocks and line.strip():
                blocks.append(("", []))
            header.append(line)
    top = parse_tree(header)
    report.driver_version = _value(top.get("Driver Version")) if isinstance(top.get("Driver Version"), str) else None
    report.cuda_version = _value(top.get("CUDA Version")) if isinstance(top.get("CUDA Version"), str) else None
    report.timestamp = top.get("Timestamp") if isinstance(top.get("Timestamp"), str) else None
    n = _number(top.get("Attached GPUs"))
    report.attached_gpus = int(n) if n is not None else None
    index = 0
    for bus, lines in blocks:
        if not bus:
            continue
        # the GPU's lines are indented once; remove that indent so its tree starts at 0
        dedented = [l[4:] if l.startswith("    ") else l.lstrip(" ") for l in lines]
        report.gpus.append(_gpu(index, bus, parse_tree(dedented)))
        index += 1
    return report


__all__ = ["NO_DEVICES", "SmiGpu", "SmiReport", "parse", "parse_tree"]
