"""arq 0.28.0's own worker and cron tests, run against scalr_queue's Worker (docs/arq-compatibility.md).

arq's sdist ships its tests. This module takes ``tests/test_worker.py`` and ``tests/test_cron.py`` from it (one
``pip download`` from the package index, cached in build/arq-suite/), puts our fixtures beside them
(tests/arq_suite/conftest.py: arq's fixtures on our own redis-server, JSON pools, ``arq.worker.Worker`` swapped for
``scalr_queue.worker.Worker``) and runs pytest on them in a subprocess, with arq's own pytest settings. Each test's
outcome is compared with ``EXPECTED_DIFFERENCES``: a test failing that is not listed fails this module, and so does
a listed test that passes (the list must stay true). The same run against arq's own Worker is the baseline.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT

ARQ_VERSION = "0.28.0"  # the installed arq must be this version: its tests are the check
CACHE = ROOT / "build" / "arq-suite"
SUITE_FILES = ("test_worker.py", "test_cron.py")
CONFTEST = ROOT / "tests" / "arq_suite" / "conftest.py"
DOC = ROOT / "docs" / "arq-compatibility.md"
RUN_TIMEOUT_S = 300

# Each arq test that fails against our Worker by design, grouped by cause; each cause is a section of
# docs/arq-compatibility.md (the anchor after the "#").
EXPECTED_DIFFERENCES: dict[str, str] = {
    # Jobs, results and errors are JSON: no pickle, no custom serializer; a failure reads back as JobFailedError.
    "test_worker.py::test_custom_serializers": "job_serializer=msgpack is refused #json-not-pickle",
    "test_worker.py::test_incompatible_serializers_2": "job_serializer=msgpack is refused #json-not-pickle",
    "test_worker.py::test_deserialization_error": "an argument that is not JSON fails at enqueue #json-not-pickle",
    "test_worker.py::test_return_exception": "an exception is not a JSON result: the job fails #json-not-pickle",
    "test_worker.py::test_run_check_error": "the stored error reads back as JobFailedError #json-not-pickle",
    "test_worker.py::test_job_retry_dont_retry": "the stored error reads back as JobFailedError #json-not-pickle",
    "test_worker.py::test_job_job_not_found_run_check": "stored error is JobFailedError #json-not-pickle",
    "test_worker.py::test_job_expired_run_check": "the stored error reads back as JobFailedError #json-not-pickle",
    # Plain exceptions and timeouts are retried with backoff until max_tries.
    "test_worker.py::test_error_success": "a TypeError is retried before the job fails #retries",
    "test_worker.py::test_max_jobs_completes": "a ValueError is retried, so the burst has no failure #retries",
    "test_worker.py::test_job_timeout": "a timed-out try is retried; the error is JobTimeoutError #retries",
    # max_tries counts every try; Retry raised on the last one fails the job there, with its reason.
    "test_worker.py::test_retry_lots": "4 retries, then the 5th try fails: no 6th pick #max-tries",
    "test_worker.py::test_retry_lots_check": "the failure says why, not 'max 5 retries exceeded' #max-tries",
    # Without queue_name or a pool, the worker serves SCALR_QUEUE_NAME, not arq's arq:queue.
    "test_worker.py::test_no_jobs": "run_worker without queue_name serves arq:queue:default #default-queue",
    # scalr_queue's own keys (workers, task registry, dashboard counts) sit beside arq's.
    "test_worker.py::test_set_health_check_key": "our keys beside arq's #our-keys",
    "test_worker.py::test_remain_keys": "our keys beside arq's #our-keys",
    "test_worker.py::test_remain_keys_no_results": "our keys beside arq's #our-keys",
    "test_worker.py::test_remain_keys_keep_results_forever": "our keys beside arq's #our-keys",
    "test_worker.py::test_remain_keys_keep_results_forever_in_function": "our keys beside arq's #our-keys",
    # A cron run is queued ahead with a per-tick key; arq holds its in-progress key for 60 s instead.
    "test_cron.py::test_job_successful[0.0]": "no 60 s in-progress hold after a cron run #cron-runs",
    "test_cron.py::test_job_successful[0.5]": "no 60 s in-progress hold after a cron run #cron-runs",
    "test_cron.py::test_job_successful[0.9]": "no 60 s in-progress hold after a cron run #cron-runs",
    # A task must be an async function taking ctx: checked when the worker is built.
    "test_worker.py::test_str_function": "asyncio.sleep takes no ctx: refused at start #tasks-checked",
    # arq's private methods and internals, which our Worker does not have.
    "test_worker.py::test_queue_read_limit_equals_max_jobs": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_custom_queue_read_limit": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_max_bursts_dont_get": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_worker_retry[exception_thrown0]": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_worker_retry[exception_thrown1]": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_worker_crash[exception_thrown0]": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_worker_crash[exception_thrown1]": "calls Worker._poll_iteration #arq-internals",
    "test_worker.py::test_handle_sig": "MagicMock main_task and tasks; our stop is a state #arq-internals",
    "test_worker.py::test_handle_no_sig": "MagicMock tasks on a worker never started #arq-internals",
}

# arq tests whose outcome is not judged: they fail now and then on a loaded machine, with arq's own Worker too.
FLAKY: dict[str, str] = {
    "test_worker.py::test_default_job_expiry[1000000-1000000]": "1 ms tolerance on a PTTL read #flaky",
}


@dataclass(frozen=True)
class SuiteRun:
    outcomes: dict[str, str]  # test id -> passed / failed / skipped
    output: str

    def ids(self, outcome: str) -> set[str]:
        return {test for test, got in self.outcomes.items() if got == outcome}


def arq_sdist() -> Path:
    """arq's sdist from the package index, downloaded once into build/arq-suite/."""
    installed = importlib.metadata.version("arq")
    assert installed == ARQ_VERSION, (
        f"arq {installed} is installed but the suite step runs arq {ARQ_VERSION}'s tests: "
        "update ARQ_VERSION and re-check EXPECTED_DIFFERENCES"
    )
    sdist = CACHE / f"arq-{ARQ_VERSION}.tar.gz"
    if sdist.exists():
        return sdist
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as download:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        done = subprocess.run(
            [*command, "--disable-pip-version-check", f"arq=={ARQ_VERSION}", "-d", download],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, f"pip download of arq's sdist failed:\n{done.stdout}\n{done.stderr}"
        os.replace(Path(download) / sdist.name, sdist)  # atomic: a parallel run finds a whole file or none
    return sdist


def lay_out_suite(sdist: Path, into: Path) -> None:
    """arq's pytest settings, its worker and cron tests, and our conftest, as a project of their own."""
    tests = into / "tests"
    tests.mkdir(parents=True)
    top = f"arq-{ARQ_VERSION}"
    with tarfile.open(sdist) as archive:
        for name, target in [("pyproject.toml", into / "pyproject.toml")] + [
            (f"tests/{test_file}", tests / test_file) for test_file in SUITE_FILES
        ]:
            member = archive.extractfile(f"{top}/{name}")
            assert member is not None, f"{name} is missing from {sdist.name}"
            target.write_bytes(member.read())
    shutil.copyfile(CONFTEST, tests / "conftest.py")


def run_suite(into: Path, *, plain: bool) -> SuiteRun:
    """pytest on the laid-out suite in a subprocess; each test's outcome read from its JUnit report."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SCALR_QUEUE_", "PYTEST_")) and name != "REDIS_URL"
    }
    if plain:
        env["SCALR_ARQ_SUITE_PLAIN"] = "1"
    report = into / "report.xml"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-c", "pyproject.toml", "--rootdir", ".", "-q", "--tb=native"),
            *("-p", "no:cacheprovider", "-p", "no:cloudcoil", "--junitxml", str(report)),
            # arq's suite runs in its file order: its test_health_check_pass leaves arq:queue:health-check set
            # (no flush after it), so a shuffled order that puts test_health_check_direct next fails it, ours or arq's
            *("-p", "no:randomly"),
            # pytest-asyncio 1.x asks for this setting (arq pinned 0.23); redis-py 5 deprecates arq's close()
            *("-o", "asyncio_default_fixture_loop_scope=function"),
            *("-W", "ignore:Call to deprecated close:DeprecationWarning"),
        ],
        cwd=into,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode in (0, 1) and report.exists(), (
        f"arq's suite did not run to its end (exit {done.returncode}):\n{output[-6000:]}"
    )
    return SuiteRun(read_junit(report), output)


def read_junit(report: Path) -> dict[str, str]:
    """Test id (``test_worker.py::name[param]``) -> passed / failed / skipped; an error counts as failed."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).iter("testcase"):
        test = f"{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}"
        got = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                got = "failed"
            elif child.tag == "skipped" and got == "passed":
                got = "skipped"
        if rank[got] >= rank[outcomes.get(test, "passed")]:
            outcomes[test] = got
    return outcomes


def heading_anchors(markdown: str) -> set[str]:
    """The anchors mkdocs gives the page's headings."""
    anchors = set()
    for title in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE):
        slug = re.sub(r"[^\w\s-]", "", title.lower()).strip()
        anchors.add(re.sub(r"[\s]+", "-", slug))
    return anchors


@pytest.fixture(scope="module")
def sdist() -> Path:
    return arq_sdist()


@pytest.fixture
def show(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Print a line in the test output, and in `make test`'s summary (tests/conftest.py prints it)."""

    def show_line(line: str) -> None:
        print(line)
        record_property("arq_suite", line)

    return show_line


@pytest.mark.timeout(RUN_TIMEOUT_S * 2)
def test_arq_suite_against_our_worker(sdist: Path, tmp_path: Path, show: Callable[[str], None]) -> None:
    """arq's worker and cron tests pass against scalr_queue's Worker, except the listed, documented differences."""
    lay_out_suite(sdist, tmp_path)
    run = run_suite(tmp_path, plain=False)
    failed, passed = run.ids("failed"), run.ids("passed")
    judged_failures = failed - FLAKY.keys()
    unexpected = sorted(judged_failures - EXPECTED_DIFFERENCES.keys())
    now_passing = sorted(passed & EXPECTED_DIFFERENCES.keys())
    missing = sorted(EXPECTED_DIFFERENCES.keys() - run.outcomes.keys())
    counts = Counter(run.outcomes.values())
    show(
        f"arq {ARQ_VERSION} worker+cron tests against scalr_queue's Worker: {counts['passed']} passed, "
        f"{len(judged_failures & EXPECTED_DIFFERENCES.keys())} expected failures, {len(unexpected)} unexpected, "
        f"{len(now_passing)} expected but passing, {counts['skipped']} skipped (arq's own), "
        f"{len(failed & FLAKY.keys())} flaky failed"
    )
    problems = [f"unexpected failure: {test}" for test in unexpected]
    problems += [
        f"listed as a difference but passes now (drop it from the list): {test}" for test in now_passing
    ]
    problems += [f"listed but not in arq's suite any more: {test}" for test in missing]
    assert not problems, "\n".join(problems) + f"\n\narq's suite output:\n{run.output[-20000:]}"


@pytest.mark.timeout(RUN_TIMEOUT_S * 2)
def test_arq_suite_against_arq_itself(sdist: Path, tmp_path: Path, show: Callable[[str], None]) -> None:
    """The same fixtures, arq's own Worker and pickle: every test passes, so a failure above is ours, not theirs."""
    lay_out_suite(sdist, tmp_path)
    run = run_suite(tmp_path, plain=True)
    counts = Counter(run.outcomes.values())
    show(
        f"arq {ARQ_VERSION} worker+cron tests against arq's own Worker (baseline): {counts['passed']} passed, "
        f"{counts['failed']} failed, {counts['skipped']} skipped"
    )
    failed = sorted(run.ids("failed") - FLAKY.keys())
    assert not failed, "\n".join(failed) + f"\n\narq's suite output:\n{run.output[-20000:]}"


def test_every_difference_points_at_a_section_of_the_doc() -> None:
    """Each listed reason ends in an anchor of docs/arq-compatibility.md, and each listed test is arq's."""
    anchors = heading_anchors(DOC.read_text())
    for test, reason in {**EXPECTED_DIFFERENCES, **FLAKY}.items():
        assert test.split("::")[0] in SUITE_FILES, test
        anchor = reason.rsplit("#", 1)[-1]
        assert "#" in reason and anchor in anchors, f"{test}: '#{anchor}' is not a section of {DOC.name}"
