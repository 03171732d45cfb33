"""The README and the pages under docs/ say what the code does: every ``gpu-runner`` command in
their shell blocks runs as written (in a copy of the repository's sample files), every workflow
they show is a valid workflow, every relative link and anchor resolves, and the README stays a
short front door."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REPO, gpu_runner, local_env

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```", re.S | re.M)
SHELL = {"sh", "bash", "shell", "console"}


def _blocks(page: Path, langs: set[str]) -> list[str]:
    return [m.group("body") for m in FENCE.finditer(page.read_text(encoding="utf-8")) if m.group("lang") in langs]


ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
CLOUD = {"doctor", "start", "stop", "janitor", "fetch", "runs", "history", "comment", "baseline", "revoke-approval"}
"""Commands that talk to Compute Engine or GitHub: the test checks that they parse as written (every
option and argument the command line knows, every file they name there) instead of running them."""


def _commands() -> list[tuple[str, str]]:
    """(page, command line) for each shell line that calls gpu-runner on its own (no pipe, no
    substitution): the ones a reader copies. Comments after `#` and leading VAR=value are dropped."""
    out = []
    for page in PAGES:
        for body in _blocks(page, SHELL):
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                while words and ASSIGNMENT.match(words[0]):
                    words = words[1:]
                if not words:
                    continue
                exe = Path(words[0]).name
                if exe != "gpu-runner" or any(c in line for c in "|$`<>;&"):
                    continue
                out.append((page.relative_to(REPO).as_posix(), shlex.join(words[1:])))
    return out


COMMANDS = _commands()
LOCAL = [(p, c) for p, c in COMMANDS if shlex.split(c)[0] not in CLOUD]
REMOTE = [(p, c) for p, c in COMMANDS if shlex.split(c)[0] in CLOUD]


def test_the_readme_is_a_short_front_door() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) < 200
    for heading in ("## Try it", "## Run your own notebooks", "## Exit codes", "## Read more"):
        assert heading in text
    # the two commands of the set-up, exactly as CI and a new user run them
    assert ".venv/bin/pip install -e '.[all]' && .venv/bin/gpu-runner run --matrix matrix/example.yml" in text
    assert ".venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest" in text
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest" in ci
    # the screenshot it shows is there
    assert (REPO / "docs" / "dashboard.png").stat().st_size > 10_000


def test_the_pages_show_commands_to_check() -> None:
    pages = {p for p, _ in COMMANDS}
    assert {"README.md", "docs/matrix.md", "docs/github-actions.md"} <= pages, pages
    assert LOCAL and REMOTE


@pytest.fixture(scope="module")
def sample_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a reader has after cloning: the sample matrix and notebooks (a copy: commands write results/)."""
    root = tmp_path_factory.mktemp("clone")
    for part in ("matrix", "notebooks"):
        shutil.copytree(REPO / part, root / part)
    shutil.copy(REPO / "matrix" / "example.yml", root / "matrix.yml")  # a runtime repository's own matrix
    return root


@pytest.mark.parametrize("page, command", REMOTE, ids=[f"{p}: {c}" for p, c in REMOTE])
def test_each_cloud_command_in_the_docs_parses_as_written(sample_repo: Path, page: str, command: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No cloud here: the command line must take it as written (click parses every option and
    argument, and checks the files it names), which is what a reader copying it first meets."""
    import click

    from gpu_runner.cli import cli

    monkeypatch.chdir(sample_repo)
    words = shlex.split(command)
    try:
        with cli.make_context("gpu-runner", list(words)) as ctx:
            sub = cli.get_command(ctx, words[0])
            assert sub is not None, f"{page}: no command {words[0]!r}"
            rest = words[1:]
            if isinstance(sub, click.Group):
                sub = sub.get_command(ctx, rest[0])
                rest = rest[1:]
            sub.make_context(words[0], rest, parent=ctx)
    except click.ClickException as e:
        pytest.fail(f"{page}: `gpu-runner {command}`: {e.format_message()}")


@pytest.mark.slow
@pytest.mark.parametrize("page, command", LOCAL, ids=[f"{p}: {c}" for p, c in LOCAL])
def test_each_command_in_the_docs_runs_as_written(sample_repo: Path, page: str, command: str) -> None:
    r = gpu_runner(*shlex.split(command), cwd=sample_repo, env=local_env())
    assert r.returncode == 0, f"{page}: `gpu-runner {command}` exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}
    return headings | set(re.findall(r'<a (?:id|name)="([^"]+)"', text))


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


def test_every_workflow_the_docs_show_is_a_valid_workflow() -> None:
    """A caller copied from the docs must pass GitHub's published workflow schema (the one
    check-jsonschema bundles, as `.ci/run` lints the project's own workflows)."""
    import json
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("check_jsonschema.builtin_schemas.vendor")
                        .joinpath("github-workflows.json").read_text(encoding="utf-8"))
    shown = 0
    for page in PAGES:
        for body in _blocks(page, {"yaml", "yml"}):
            doc = yaml.safe_load(body)
            if not isinstance(doc, dict) or "jobs" not in doc:
                continue
            shown += 1
            doc["on"] = doc.pop(True) if True in doc else doc.get("on")
            errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
            assert not errors, f"{page.relative_to(REPO)}: a workflow that GitHub would refuse: {errors}"
    assert shown >= 1
