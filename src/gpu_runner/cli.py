"""Command line: the only place that parses arguments and maps errors to exit codes.

Exit codes (every command): 0 all passed, 1 a notebook or check failed,
2 usage or configuration error, 3 infrastructure failure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml

from . import __version__
from .errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, EXIT_USAGE, ConfigError, GpuRunnerError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _parse_param(raw: str) -> tuple[str, Any]:
    name, sep, value = raw.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise click.BadParameter(f"{raw!r} is not NAME=VALUE with NAME a Python identifier", param_hint="-p")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value  # not a YAML scalar: keep the text as it was typed
    if isinstance(parsed, (dict, list)):
        parsed = value  # -p takes scalars; flow collections stay strings
    return name, parsed


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="gpu-runner")
def cli() -> None:
    """Run the notebooks of GPU runtimes on every machine they support, and report."""


@cli.command("run")
@click.argument("paths", nargs=-1, metavar="[PATH|GLOB]...")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("results"),
              show_default=True, help="Results folder; one sub-folder per entry.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Notebooks run in parallel.  [default: number of CPUs]")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-notebook limit in seconds (a notebook's metadata.execution.timeout overrides).  [default: 3600]")
@click.option("--cell-timeout", "cell_timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Per-cell limit in seconds.  [default: 600]")
@click.option("--rerun", is_flag=True, help="After a clean pass, run every cell again in the same kernel.")
@click.option("--kernel", default=None, help="Kernel name for every notebook instead of its own kernelspec.")
@click.option("-p", "--parameter", "params", multiple=True, metavar="NAME=VALUE",
              help="Inject a parameter (value read as a YAML scalar) after the cell tagged 'parameters'.")
@click.option("--log", "log_mode", type=click.Choice(["py", "none"]), default="none", show_default=True,
              help="'py': write and print a jupytext percent-format log.py of each executed notebook.")
def run_cmd(
    paths: tuple[str, ...],
    out_dir: Path,
    jobs: int | None,
    timeout_s: float | None,
    cell_timeout_s: float | None,
    rerun: bool,
    kernel: str | None,
    params: tuple[str, ...],
    log_mode: str,
) -> None:
    """Execute notebooks on this machine and write results to --out.

    With no PATH, runs the notebooks under ./notebooks.
    """
    from .execute.engine import run_entries
    from .execute.spec import DEFAULT_CELL_TIMEOUT_S, DEFAULT_TIMEOUT_S, EntryRun, collect_notebooks
    from .log import Logger
    from .results import EntryInfo

    parameters = dict(_parse_param(p) for p in params)
    if not paths:
        if not Path("notebooks").is_dir():
            raise ConfigError("no PATH given and no ./notebooks folder here; name the notebooks to run")
        paths = ("notebooks",)
    notebooks = collect_notebooks(list(paths))
    runs = [
        EntryRun(
            info=EntryInfo(id="local"),
            notebooks=notebooks,
            parameters=parameters,
            timeout_s=timeout_s or DEFAULT_TIMEOUT_S,
            cell_timeout_s=cell_timeout_s or DEFAULT_CELL_TIMEOUT_S,
            kernel=kernel,
            rerun=rerun,
            log_py=log_mode == "py",
        )
    ]
    logger = Logger.for_environment()
    outcome = run_entries(runs, out_dir=out_dir, jobs=jobs or os.cpu_count() or 1, logger=logger)
    sys.exit(outcome.exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and map every error to its exit code."""
    try:
        cli.main(args=argv, prog_name="gpu-runner", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as e:  # usage errors
        e.show()
        sys.exit(EXIT_USAGE)
    except GpuRunnerError as e:
        click.secho(f"gpu-runner: error: {e}", fg="red", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(EXIT_OK)


__all__ = ["cli", "main", "EXIT_FAILED", "EXIT_INFRA"]
