"""The phase profile (GPU_RUNNER_PROFILE): nothing when off; CPU by phase, exclusive, when on."""

from __future__ import annotations

import asyncio
import json
from asyncio import events

from conftest import gpu_runner, make_nb
from gpu_runner import phases


def _burn(n: int = 300_000) -> int:
    return sum(i * i for i in range(n))


def test_off_by_default_costs_one_shared_null_context():
    assert phases.PROFILE is None  # the test run sets no GPU_RUNNER_PROFILE
    assert phases.phase("html") is phases.phase("writes")
    with phases.phase("html"):
        pass
    assert phases.clock() == 0.0
    assert phases.stage("execute", 0.0) == 0.0
    assert phases.kernel("ready", 1) is None
    phases.enter("execute")  # nothing to set, nothing patched
    phases.started()
    assert events.Handle._run.__module__ == "asyncio.events"


def test_nested_phases_count_exclusively(tmp_path, monkeypatch):
    prof = phases.Profile(str(tmp_path / "p.json"))
    monkeypatch.setattr(phases, "PROFILE", prof)
    with phases.phase("outer"):
        with phases.phase("inner"):
            _burn()
    assert prof.calls == {"outer": 1, "inner": 1}
    assert prof.cpu["inner"] > 0
    assert prof.cpu["outer"] < prof.cpu["inner"] / 2  # outer did nothing of its own


def test_event_loop_steps_count_for_their_task_phase(tmp_path, monkeypatch):
    prof = phases.Profile(str(tmp_path / "p.json"))
    monkeypatch.setattr(phases, "PROFILE", prof)

    async def worker(name: str) -> None:
        phases.enter(name)
        for _ in range(3):
            _burn(100_000)
            await asyncio.sleep(0)

    async def main() -> None:
        phases.started()
        try:
            await asyncio.gather(worker("a"), worker("b"))
        finally:
            prof.unpatch_loop()

    asyncio.run(main())
    assert prof.cpu["a"] > 0 and prof.cpu["b"] > 0
    assert "startup" in prof.marks
    rep = prof.report()
    assert set(rep["phases"]) >= {"a", "b", "startup", "other"}
    assert events.Handle._run.__module__ == "asyncio.events"  # restored


def test_run_writes_the_profile_when_asked(tmp_path, nbdir):
    make_nb(nbdir, "a.ipynb", ("md", "# a"), "x = 1\nprint(x)")
    make_nb(nbdir, "b.ipynb", "print('b')")
    out_plain, out_prof = tmp_path / "plain", tmp_path / "prof"
    r = gpu_runner("run", ".", "--out", str(out_plain), "--no-pdf", "--no-checks", "--jobs", "2", cwd=nbdir)
    assert r.returncode == 0, r.stdout + r.stderr
    prof_path = tmp_path / "profile.json"
    r = gpu_runner("run", ".", "--out", str(out_prof), "--no-pdf", "--no-checks", "--jobs", "2", cwd=nbdir,
                   env={phases.ENV: str(prof_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    prof = json.loads(prof_path.read_text())
    assert prof["notebooks"] == 2
    assert prof["kernels"]["count"] == 2
    assert prof["peak_rss_mib"] > 0 and prof["cpu_s"] > 0 and prof["children_cpu_s"] > 0
    for name in ("startup", "prepare", "kernel start", "execute", "metrics", "writes", "html", "reports", "other"):
        assert name in prof["phases"], name
    assert prof["phases"]["html"]["calls"] == 3  # the warm-up, then each page once (none made again)
    assert set(prof["stages_wall_s"]) >= {"kernel start", "execute", "kernel shutdown"}
    assert not (out_plain / "profile.json").exists()
    # the profile changes nothing the run leaves
    assert sorted(p.relative_to(out_plain).as_posix() for p in out_plain.rglob("*")) == \
        sorted(p.relative_to(out_prof).as_posix() for p in out_prof.rglob("*"))
