"""JUnit XML from the result model: one ``<testsuite>`` per entry, one ``<testcase>`` per
notebook and per system check.

What the common consumers read, and what this writes for them:

* EnricoMi/publish-unit-test-result-action (junitparser): testcase ``name``, ``classname``,
  ``time``, ``file``, ``line``; result ``message``/``type``/text; ``system-out``.
  Annotations go to ``file``:``line``.
* mikepenz/action-junit-report: testcase ``file`` and ``line`` (when both are there it
  uses them as they are, else it guesses from ``classname`` and the stack trace);
  the failure ``message`` is the annotation's text, the failure body its raw details.
* dorny/test-reporter (java-junit): ``parseFloat`` of ``time`` on ``<testsuites>``,
  every ``<testsuite>`` and ``<testcase>`` (so ``time`` is always written), ``name``
  trimmed, test cases grouped by ``classname``; failure ``message`` and body.
* GitLab: testcase ``name``, ``classname``, ``file``, ``time``; it shows the failure
  *body* (so the body starts with the message line).
* Jenkins: ``classname`` split at the last dot into package and class, so classnames are
  ``<entry id>.notebooks`` / ``<entry id>.checks`` (dots inside an entry id become ``_``).

Each notebook's test case carries ``<properties>`` (first child, as pytest writes them):
``gpu_peak_memory_mib``, ``gpu_mean_utilization_pct`` and ``peak_rss_mib`` where measured;
against a baseline also ``baseline_status`` (``absent`` when it was not there),
``baseline_change`` (``newly_failing``, ``fixed``, ``still_failing``, ``newly_skipped``,
``same``), ``baseline_<figure>``, ``<figure>_change_s|_mib``, ``<figure>_change_pct`` and the
lists ``regressions`` / ``improvements`` (figures: ``duration_s``, ``gpu_peak_memory_mib``,
``peak_rss_mib``). The entry's suite says ``baseline`` (where it came from, or why none).
With a history of earlier runs (``gpu-runner report --history``), a notebook it marked also carries
``history_runs``, ``history_failed``, ``history_marks`` (``flaky``, ``slower``, ``more_memory``),
``history_flaky`` / ``history_flaky_why`` and ``history_duration_trend_pct`` /
``history_gpu_peak_memory_trend_pct``.

An entry that did not run (``not_run``: no capacity, runner never online, cancelled, preempted on
every try) is one test case ``not run`` (classname ``<entry id>.entry``) with an ``<error>``
whose message is the reason: every consumer above counts and shows errors.

Every string passes through :func:`xml_safe` (no ANSI, no XML-illegal characters).
"""

from __future__ import annotations

from pathlib import Path

from junitparser import Error as JError
from junitparser import Failure as JFailure
from junitparser import JUnitXml, Properties, Property, Skipped, TestCase, TestSuite

from ..compare import Comparison, NotebookComparison
from ..history import HistoryMarks, Mark
from ..files import atomic_file
from ..results import CheckResult, EntryResult, NotebookResult
from .text import clean_output, describe_failure, failure_details, one_line, runtime_packages, tail, xml_safe

SYSTEM_OUT_MAX_CHARS = 20_000
SYSTEM_OUT_MAX_LINES = 300
FAILURE_TEXT_MAX_CHARS = 60_000
MESSAGE_MAX_CHARS = 1_000

PROPERTY_FACTS = ("gpu_model", "gpu_count", "driver_version", "cuda_version", "hostname", "platform", "python",
                  "python_executable", "python_source")


def _classname(entry_id: str, group: str) -> str:
    return f"{entry_id.replace('.', '_')}.{group}"


def _time(seconds: float | None) -> float:
    return round(max(float(seconds or 0.0), 0.0), 3)


def _set_failure(case: TestCase, failure, fallback_message: str) -> None:
    if failure is not None:
        message = describe_failure(failure, max_chars=MESSAGE_MAX_CHARS)
        kind = failure.kind
        body = failure_details(failure)
    else:
        message = one_line(fallback_message, MESSAGE_MAX_CHARS) or "failed"
        kind = "failed"
        body = message
    jf = JFailure(xml_safe(message), xml_safe(kind))
    if len(body) > FAILURE_TEXT_MAX_CHARS:
        body = body[:2000] + "\n[...]\n" + body[-(FAILURE_TEXT_MAX_CHARS - 2000):]
    jf.text = xml_safe(body)
    case.result = [jf]


def notebook_case(entry_id: str, nb: NotebookResult, nc: NotebookComparison | None = None,
                  mark: Mark | None = None) -> TestCase:
    case = TestCase(xml_safe(nb.path), _classname(entry_id, "notebooks"), _time(nb.duration_s))
    case._elem.set("file", xml_safe(nb.path))
    if nb.status == "failed":
        _set_failure(case, nb.failure, "notebook failed")
        if nb.failure is not None and nb.failure.source_line:
            case._elem.set("line", str(int(nb.failure.source_line)))
        out = clean_output(nb.failure.output_tail if nb.failure else None)
        if out.strip():
            case.system_out = tail(out, max_chars=SYSTEM_OUT_MAX_CHARS, max_lines=SYSTEM_OUT_MAX_LINES)
    elif nb.status == "skipped":
        case.result = [Skipped(xml_safe(one_line(nb.skip_reason or "skipped", MESSAGE_MAX_CHARS)))]
    _case_properties(case, [
        ("gpu_peak_memory_mib", nb.gpu_peak_memory_mib),
        ("gpu_mean_utilization_pct", nb.gpu_mean_utilization_pct),
        ("peak_rss_mib", nb.peak_rss_mib),
        *_baseline_properties(nc),
        *(mark.properties() if mark is not None else []),
    ])
    return case


def _baseline_properties(nc: NotebookComparison | None) -> list[tuple[str, object]]:
    """The notebook against the baseline: its status there, the change, each figure there and
    its change, and which figures regressed or improved."""
    if nc is None:
        return []
    props: list[tuple[str, object]] = [("baseline_status", nc.before_status or "absent")]
    if nc.before_status is not None:
        props.append(("baseline_change", nc.change))
    for d in nc.deltas:
        stem, unit = d.metric.rsplit("_", 1)  # duration_s -> duration, s
        props.append((f"baseline_{d.metric}", d.before))
        if d.change is not None:
            props.append((f"{stem}_change_{unit}", round(d.change, 3)))
        if d.change_pct is not None:
            props.append((f"{stem}_change_pct", round(d.change_pct, 1)))
    props.append(("regressions", ",".join(d.metric for d in nc.regressions) or None))
    props.append(("improvements", ",".join(d.metric for d in nc.improvements) or None))
    return props


def _case_properties(case: TestCase, props: list[tuple[str, object]]) -> None:
    """``<properties>`` as the testcase's first child, the place pytest's ``record_property``
    puts them (Jenkins, GitLab and the publish-unit-test-result action read them there)."""
    items = [(name, value) for name, value in props if value is not None and value != ""]
    if not items:
        return
    box = Properties()
    for name, value in items:
        box.add_property(Property(xml_safe(name), xml_safe(_prop_text(value))))
    case._elem.insert(0, box._elem)


def _prop_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if not value.is_integer() else f"{value:.0f}"
    return str(value)


def check_case(entry_id: str, check: CheckResult) -> TestCase:
    case = TestCase(xml_safe(check.name), _classname(entry_id, "checks"), _time(check.duration_s))
    if check.status == "failed":
        _set_failure(case, check.failure, check.summary or "check failed")
    elif check.status == "skipped":
        case.result = [Skipped(xml_safe(one_line(check.skip_reason or "skipped", MESSAGE_MAX_CHARS)))]
    out = clean_output(check.summary)
    if check.failure is not None and check.failure.output_tail:
        out = (out + "\n" if out else "") + clean_output(check.failure.output_tail)
    if out.strip():
        case.system_out = tail(out, max_chars=SYSTEM_OUT_MAX_CHARS, max_lines=SYSTEM_OUT_MAX_LINES)
    return case


def not_run_case(entry_id: str, reason: str) -> TestCase:
    """The one test case of an entry that did not run: an ``<error>`` with the reason."""
    case = TestCase("not run", _classname(entry_id, "entry"), 0.0)
    err = JError(xml_safe(one_line(reason, MESSAGE_MAX_CHARS) or "not run"), "not_run")
    err.text = xml_safe(reason)
    case.result = [err]
    return case


def entry_suite(result: EntryResult, comparison: Comparison | None = None,
                history: HistoryMarks | None = None) -> TestSuite:
    """The ``<testsuite>`` of one entry; with a ``comparison``, the baseline in its properties
    and in each notebook's; with a ``history``, its marks in each marked notebook's."""
    entry = result.entry
    suite = TestSuite(xml_safe(entry.id))
    props: list[tuple[str, object]] = [
        ("runtime", entry.runtime),
        ("machine", entry.machine),
        ("provider", entry.provider),
        ("ran_locally", str(entry.ran_locally).lower()),
        ("label", entry.label),
    ]
    props += [(k, result.facts.get(k)) for k in PROPERTY_FACTS]
    props += [(f"package.{name}", version) for name, version in runtime_packages(result.facts)]
    overlay = result.facts.get("kernel_overlay")
    if isinstance(overlay, dict):
        props.append(("kernel_overlay", " ".join(f"{n}=={v}" for n, v in (overlay.get("packages") or {}).items()
                                                 if n in ("ipykernel", "ipython", "jupyter-client", "pyzmq"))))
    props += [("interrupted", "true" if result.interrupted else None), ("gpu_runner_version", result.tool_version or None)]
    if result.cost is not None and result.cost.vms:
        props += [("cost_usd_estimate", f"{result.cost.usd:.4f}" if result.cost.usd is not None else "unknown"),
                  ("vms", len(result.cost.vms)),
                  ("vm_hours", f"{sum(v.lifetime_s or 0 for v in result.cost.vms) / 3600:.3f}")]
    ec = comparison.entry(entry.id) if comparison is not None and comparison.available else None
    if comparison is not None:
        props.append(("baseline", comparison.source.description if comparison.available
                      else f"none: {comparison.reason}"))
    if ec is not None:
        props.append(("baseline_entry", "present" if ec.presence == "both" else "absent"))
        if ec.presence == "both":
            props += [("regressions", sum(len(n.regressions) for n in ec.notebooks)),
                      ("newly_failing", sum(1 for n in ec.notebooks if n.change == "newly_failing"))]
    if result.tries:
        props.append(("tries", "; ".join(
            f"{t.retry + 1}: {t.outcome}" + (f" ({t.provisioning_model})" if t.provisioning_model else "")
            for t in result.tries)))
    for name, value in props:
        if value is not None and value != "":
            suite.add_property(name, xml_safe(str(value)))
    for check in result.checks:
        suite.add_testcase(check_case(entry.id, check))
    for nb in result.notebooks:
        mark = history.of(entry.runtime, entry.machine, entry.id, nb.path) if history else None
        suite.add_testcase(notebook_case(entry.id, nb, ec.notebook(nb.path) if ec is not None else None, mark))
    if result.status == "not_run":
        suite.add_testcase(not_run_case(entry.id, result.reason or "not run"))
    suite.update_statistics()
    _set_suite_time(suite, result)
    if result.started_at:
        suite.timestamp = xml_safe(result.started_at)
    host = result.facts.get("hostname")
    if host:
        suite.hostname = xml_safe(str(host))
    return suite


def _set_suite_time(suite: TestSuite, result: EntryResult) -> None:
    # the entry's wall time: notebooks may run in parallel, and checks and kernel starts
    # take time too, so the sum of the cases is not what a reader asks for
    suite.time = _time(result.duration_s)


def junit_for(results: list[EntryResult], *, name: str = "gpu-runner", comparison: Comparison | None = None,
              history: HistoryMarks | None = None) -> JUnitXml:
    """A ``<testsuites>`` document with one suite per entry; its counts are the sums."""
    xml = JUnitXml(name)
    suites = [entry_suite(result, comparison, history) for result in results]
    for suite in suites:
        xml.add_testsuite(suite)
    xml.update_statistics()
    for suite, result in zip(suites, results):
        _set_suite_time(suite, result)
    # machine time of the run: the sum of the entries (they ran on different machines)
    xml.time = _time(sum(r.duration_s or 0.0 for r in results))
    return xml


def write_junit(xml: JUnitXml, path: Path) -> Path:
    """Write atomically, so a reader (or an uploader) never sees half a file."""
    path = Path(path)
    with atomic_file(path) as tmp:
        xml.write(str(tmp), pretty=True)
    return path
