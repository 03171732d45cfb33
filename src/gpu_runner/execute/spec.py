"""What to execute: one entry's notebooks and options, whatever produced them.

``gpu-runner run PATH...`` builds one :class:`EntryRun` with the id ``local``; a matrix
file builds one per selected entry. The engine only ever sees :class:`EntryRun`.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError
from ..results import EntryInfo

BUILTIN_CHECKS = ("gpu", "cuda", "compilers", "frameworks", "resources")
"""The built-in system checks (see :mod:`gpu_runner.checks`), by name: here, so that running
them needs no matrix model, and the matrix model validates against the same names."""

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_CELL_TIMEOUT_S = 600.0
# Folders that never hold notebooks a user means to run.
IGNORED_DIRS = {".ipynb_checkpoints", ".git", ".venv", "venv", "node_modules", "__pycache__", ".tox", ".nox"}


@dataclass(frozen=True)
class NotebookSpec:
    source: Path
    """Absolute path of the notebook file."""
    path: str
    """The name reports use (posix, relative); also names its output folder."""

    @property
    def out_subdir(self) -> str:
        """``notebooks/`` + the path without ``.ipynb``, a leading ``notebooks/`` folder of the path
        dropped so it does not stutter: ``notebooks/cpu_smoke.ipynb`` -> ``notebooks/cpu_smoke``,
        ``examples/a.ipynb`` -> ``notebooks/examples/a``. The same notebook always gets the same
        folder, whichever others run with it; it never climbs out of the entry folder."""
        p = PurePosixPath(self.path)
        stem = p.with_suffix("") if p.suffix == ".ipynb" else p
        parts = [part for part in stem.parts if part not in ("", ".", "..", "/")]
        if len(parts) > 1 and parts[0] == "notebooks":
            parts = parts[1:]
        return "/".join(["notebooks", *(parts or ["notebook"])])


@dataclass
class EntryRun:
    """Everything needed to run one entry's notebooks on this machine."""

    info: EntryInfo
    notebooks: list[NotebookSpec]
    parameters: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    cell_timeout_s: float = DEFAULT_CELL_TIMEOUT_S
    kernel: str | None = None
    rerun: bool = False
    log_py: bool = False
    checks: list[Any] = field(default_factory=list)
    """System checks to run before the notebooks (the matrix's plain data: ``{"name": "gpu"}``
    or ``{"name", "run", "expect_exit", "timeout_s"}``); empty: none."""
    expected_gpus: int | None = None
    """GPUs the matrix says this machine has (the ``gpu`` check compares); None: no expectation."""
    expected_gpu_type: str | None = None
    """The matrix's accelerator type, e.g. ``nvidia-l4`` (a different model is a warning)."""
    regression: dict[str, float] | None = None
    """The matrix's thresholds for regressions against a baseline (recorded in results.json's
    options, where ``gpu-runner report --baseline`` reads them); None: the defaults."""
    python: str | None = None
    """The runtime's interpreter (a path or a command on PATH); None: Jupyter's own resolution."""
    python_source: str = "jupyter"
    """What named it: ``--python``, ``matrix``, ``GPU_RUNNER_PYTHON``, or ``jupyter`` (none did)."""
    kernel_overlay: bool = True
    """Bring ipykernel from a cache folder when the runtime's interpreter has none."""


def _has_magic(s: str) -> bool:
    return glob.has_magic(s)


def _glob_base(pattern: str) -> Path:
    """The leading folder of a glob pattern that has no wildcard in it."""
    parts = Path(pattern).parts
    base: list[str] = []
    for part in parts:
        if _has_magic(part):
            break
        base.append(part)
    return Path(*base) if base else Path(".")


def _walk_notebooks(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_DIRS and not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if f.endswith(".ipynb"))
    return found


def repository_root(path: Path) -> Path | None:
    """The nearest folder at or above ``path`` that holds ``.git`` (a git repository's root)."""
    for folder in (path, *path.parents):
        if (folder / ".git").exists():
            return folder
    return None


def display_path(source: Path, given_base: Path, cwd: Path) -> str:
    """Relative to the root of the git repository that holds the notebook, so that a notebook has
    one name whichever folder the run started in (a baseline compares notebooks by name); outside
    a repository relative to ``cwd`` when the notebook lies under it, else to the folder given."""
    source = source.resolve()
    root = repository_root(source.parent)
    for base in ([root] if root is not None else []) + [cwd.resolve(), given_base.resolve()]:
        try:
            return source.relative_to(base).as_posix()
        except ValueError:
            continue
    return source.name


def collect_notebooks(args: list[str], cwd: Path | None = None) -> list[NotebookSpec]:
    """Expand ``PATH|GLOB ...`` into notebooks, in a stable order, without duplicates.

    A folder means every ``.ipynb`` below it (checkpoints and hidden folders left out).
    An argument that matches nothing is a usage error naming it.
    """
    cwd = cwd or Path.cwd()
    specs: dict[Path, NotebookSpec] = {}
    for arg in args:
        candidate = Path(arg) if Path(arg).is_absolute() else cwd / arg
        if _has_magic(arg):
            base = _glob_base(arg)
            base = base if base.is_absolute() else cwd / base
            matches = sorted(Path(p) for p in glob.glob(str(candidate), recursive=True))
            files: list[Path] = []
            for m in matches:
                if m.is_dir():
                    files.extend(_walk_notebooks(m))
                elif m.suffix == ".ipynb" and not (set(m.parts) & IGNORED_DIRS):
                    files.append(m)
        elif candidate.is_dir():
            base = candidate
            files = _walk_notebooks(candidate)
        elif candidate.is_file():
            if candidate.suffix != ".ipynb":
                raise ConfigError(f"{arg}: not a notebook (gpu-runner runs .ipynb files)")
            base = candidate.parent
            files = [candidate]
        else:
            raise ConfigError(f"no such file or folder: {arg}")
        if not files:
            raise ConfigError(f"no notebooks (*.ipynb) match {arg!r}")
        for f in files:
            resolved = f.resolve()
            if resolved not in specs:
                specs[resolved] = NotebookSpec(source=resolved, path=display_path(resolved, base, cwd))
    seen: dict[str, Path] = {}
    for spec in specs.values():
        other = seen.get(spec.out_subdir)
        if other is not None:
            raise ConfigError(
                f"two notebooks would share the output folder {spec.out_subdir!r}: {other} and {spec.source}; "
                "run them from a common parent folder"
            )
        seen[spec.out_subdir] = spec.source
    return list(specs.values())
