"""The run jobs' ``container:``, evaluated from gpu-entry.yml for every kind of entry, as the runner
takes it: no container block at all for an entry without an image, never an empty image and never
an empty ``options`` string (runners before https://github.com/actions/runner/pull/4208, "Allow
empty container options", validate options as a non-empty string and refuse the job;
``container: ''`` is taken as no container, ``{image: ''}`` is refused:
https://github.com/actions/languageservices/pull/323)."""

from __future__ import annotations

import json

import pytest
import yaml
from workflow_harness import REPO, Runner, evaluate


def _run_jobs() -> dict:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / "gpu-entry.yml").read_text(encoding="utf-8"))
    return {n: j for n, j in doc["jobs"].items() if n.startswith("run")}


@pytest.mark.parametrize("entry,expected", [
    ({"container": None, "gpu_count": 0, "container_options": None}, None),
    ({"container": "", "gpu_count": 1, "container_options": "--shm-size 1g"}, None),
    ({"container": "python:3.12-slim", "gpu_count": 0, "container_options": None}, {"image": "python:3.12-slim"}),
    ({"container": "img:1", "gpu_count": 2, "container_options": None}, {"image": "img:1", "options": "--gpus all"}),
    ({"container": "img:1", "gpu_count": 0, "container_options": "--shm-size 1g"},
     {"image": "img:1", "options": "--shm-size 1g"}),
    ({"container": "img:1", "gpu_count": 1, "container_options": "--ipc host"},
     {"image": "img:1", "options": "--gpus all --ipc host"}),
])
def test_the_run_jobs_container_is_one_the_runner_takes(entry: dict, expected: dict | None) -> None:
    ctx = {"inputs": {"entry": json.dumps({"id": "x--y", **entry})}}
    for name, job in _run_jobs().items():
        assert Runner.container_of(name, evaluate(job["container"], ctx)) == expected, name


def test_the_harness_refuses_what_the_runner_refuses() -> None:
    with pytest.raises(AssertionError, match="container.options is empty"):
        Runner.container_of("run", {"image": "img:1", "options": " "})
    with pytest.raises(AssertionError, match="container.image is empty"):
        Runner.container_of("run", {"image": "", "options": "--gpus all"})
    assert Runner.container_of("run", "") is None
