"""Run the suite's process and timing tests (those that signal, kill, cancel or wait on processes
and threads) many times, with the CPU cores loaded and without, and count the failures per test.

Each round is one fresh `pytest` run of all of them (its own temporary folder); with the load on,
`stress-ng --cpu N` (or N busy Python processes where stress-ng is missing) keeps every core busy
for the whole round. Counts, failure messages and the machine go to a JSON file; `--append` adds
to the counts already there, so the rounds can be run in batches.

    python tests/stress.py                          # 20 rounds without load, 20 with it
    python tests/stress.py --rounds 5 --load on --append
    python tests/stress.py --rounds 3 --load off tests/test_jobs.py   # other tests
    python tests/stress.py --load on --load-by PID --rounds 20 --append
        # a running job (a benchmark on every core) is the load while it lives, then the hogs
    python tests/stress.py --load off --rounds 20 --minutes 150   # no round begun after 150 min
Not part of `make test` (hours on 2 cores): `make stress`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "test_stress.json"
TESTS = [  # every test that signals, kills, cancels or waits on processes or threads
    "tests/test_reliability_processes.py",
    "tests/test_extract_resume.py",
    "tests/test_jobs.py",
    "tests/test_testhooks.py",
    "tests/test_train.py::test_ctrl_c_stops_the_workers_and_the_same_command_resumes",
    "tests/test_ray_engine.py",
    "tests/test_service_restart.py",
    "tests/test_service_api.py::"
    "test_extract_cancel_at_once_resume_and_a_failing_job_does_not_stop_the_queue",
    "tests/test_service_cancel.py",
    "tests/test_service_pipelines.py",
    "tests/test_service_runs.py",
    "tests/test_service_load.py",
    "tests/test_service_parts.py::test_claims_from_many_threads_never_share_a_job",
    "tests/test_service_parts.py::test_cancelling_is_shown_until_the_runner_ends",
    "tests/test_service_ray.py",
    "tests/test_service_pooled.py::test_a_train_job_on_two_stores_trains_one_pooled_run",
    "tests/test_service_browser.py",
    "tests/test_service_browser_lab.py",
    # object storage: lease locks between processes (one killed), Ray workers, the server cut
    "tests/test_object_storage.py::"
    "test_a_lock_on_object_storage_refuses_a_second_holder_until_released",
    "tests/test_object_storage.py::"
    "test_the_lock_of_a_holder_killed_with_sigkill_is_taken_once_its_lease_ran_out",
    "tests/test_object_storage.py::test_of_two_takers_of_a_stale_lease_exactly_one_wins",
    "tests/test_object_storage.py::"
    "test_extract_train_evaluate_on_s3_with_ray_give_the_local_numbers_bit_for_bit",
    "tests/test_object_storage.py::"
    "test_a_server_gone_mid_extraction_loses_nothing_written_and_the_command_resumes",
    "tests/test_object_storage.py::"
    "test_a_second_train_into_a_run_folder_on_s3_is_refused_while_one_holds_it",
    "tests/test_object_storage.py::"
    "test_a_train_into_s3_killed_with_sigkill_resumes_from_what_was_written_back",
    "tests/test_cluster.py",  # ray start nodes; one killed mid-extraction
    "tests/test_service_s3.py",  # the service's jobs on object storage
]
ROUND_TIMEOUT_S = 3600  # one round never takes longer, whatever the load


def start_load(hogs: int) -> tuple[subprocess.Popen, str]:
    """`hogs` CPU hogs in a process group of their own, and what they are."""
    if shutil.which("stress-ng"):
        command, what = ["stress-ng", "--cpu", str(hogs), "--quiet"], f"stress-ng --cpu {hogs}"
    else:
        spin = f'{sys.executable} -c "while True: pass" &'
        command, what = ["sh", "-c", f"{spin * hogs} wait"], f"{hogs} busy python processes"
    return subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL), what


def stop_group(process: subprocess.Popen, first: int, grace: float) -> None:
    """End `process`'s group: signal `first`, then SIGKILL what lives after `grace` s.

    It waits by `communicate`, which keeps reading the process's pipes: a pytest writing its
    interrupted summary into a full pipe would otherwise block there and be killed mid-teardown.
    The output read stays with `process`; a later `communicate()` returns all of it.
    """
    os.killpg(process.pid, first)
    try:
        process.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def stop_load(load: subprocess.Popen) -> None:
    """End the hogs (SIGTERM: stress-ng reaps its own; SIGKILL after 30 s)."""
    stop_group(load, signal.SIGTERM, 30)


def run_round(tests: list[str], scratch: Path) -> tuple[dict, float]:
    """One pytest run of `tests`: {test id: (outcome, message, seconds)} and its wall time (s)."""
    report = scratch / "report.xml"
    command = [sys.executable, "-m", "pytest", "-v", "-rfE", "-p", "no:cacheprovider",
               f"--basetemp={scratch / 'tmp'}", f"--junitxml={report}", *tests]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                    os.environ.get("PYTHONPATH")]))}
    started = time.monotonic()
    pytest = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    timed_out = False
    try:
        stdout, stderr = pytest.communicate(timeout=ROUND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:  # timed out, or this script stopped: Ctrl-C to pytest first, so that its fixtures
        if pytest.poll() is None:  # stop the servers and nodes, then SIGKILL what is left
            stop_group(pytest, signal.SIGINT, 60)
    if timed_out:
        found = from_lines(pytest.communicate()[0])
        found["(round)"] = ("failed", f"timed out after {ROUND_TIMEOUT_S} s", None)
        return found, ROUND_TIMEOUT_S
    seconds = time.monotonic() - started
    if not report.exists():  # pytest itself died: count what its lines say, keep its last words
        found = from_lines(stdout)
        found["(round)"] = ("failed", f"pytest ended with code {pytest.returncode} and wrote no "
                            f"report; its output ends: {stdout[-2500:]} {stderr[-1500:]}", None)
        return found, seconds
    found = outcomes(report)
    for name, (outcome, message, took) in found.items():  # the whole story of a failure
        if outcome == "failed":
            found[name] = (outcome, message + " | " + _section(stdout, name), took)
    return found, seconds


_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED)", re.MULTILINE)


def from_lines(output: str | None) -> dict:
    """{test id: (outcome, message, None)} from pytest -v's lines, for a round without a report."""
    found = {}
    for name, word in _LINE.findall(output or ""):
        outcome = {"PASSED": "passed", "SKIPPED": "skipped"}.get(word, "failed")
        found[name] = (outcome, "" if outcome != "failed" else _section(output, name), None)
    return found


def _section(output: str, name: str) -> str:
    """The end of pytest's failure section of test `name` (its short name in the header)."""
    short = name.split("::")[-1]
    start = output.find(f"_ {short} _")
    return output[start:start + 20000][-2500:] if start >= 0 else ""


def outcomes(report: Path) -> dict:
    """{test id: (outcome, message, seconds)} from a JUnit XML report (an error counts as a
    failure)."""
    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        name = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "")[:1000]
            elif child.tag == "skipped" and outcome == "passed":
                outcome, message = "skipped", (child.get("message") or "")[:200]
        found[name] = (outcome, message, float(case.get("time") or 0))
    return found


def add_round(mode: dict, found: dict, seconds: float, load: str) -> None:
    """Count one round's outcomes into `mode` (the counts of one load setting)."""
    mode["rounds"] += 1
    mode.setdefault("loads", []).append(load)
    mode["round_seconds"].append(round(seconds, 1))
    mode["load_average_1min"].append(round(os.getloadavg()[0], 2))
    mode.setdefault("commits", []).append(_commit())
    for name, (outcome, message, took) in found.items():
        counts = mode["tests"].setdefault(name, {"runs": 0, "passed": 0, "failed": 0,
                                                 "skipped": 0, "failures": []})
        counts["runs"] += 1
        if took is not None:  # the slowest run of this test, for planning the rounds
            counts["max_seconds"] = round(max(took, counts.get("max_seconds", 0)), 1)
        counts[outcome] += 1
        if outcome == "failed":
            counts["failures"].append({"round": mode["rounds"], "message": message})
        if outcome == "skipped":
            counts["skip_reason"] = message


def _commit() -> str:
    """The commit the round ran on (short hash, '+' when the tree had changes)."""
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
                           capture_output=True, text=True).stdout.strip()
    return rev + ("+" if dirty else "") if rev else "unknown"


def _running(pid: int | None) -> bool:
    """Whether process `pid` still runs (False for None)."""
    return pid is not None and Path(f"/proc/{pid}").exists()


def _command_of(pid: int) -> str:
    """Process `pid`'s command line, as ps would show it."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def new_record(hogs: int) -> dict:
    from mespot.environment import describe

    return {"benchmark": "test_stress", "what": "each round is one fresh pytest run of the "
            "tests named; load on: every core kept busy by CPU hogs for the whole round",
            "machine": describe(), "hogs": hogs, "modes": {}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tests", nargs="*", default=TESTS)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--load", choices=("off", "on", "both"), default="both")
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 1,
                        help="CPU hogs with the load on (default: one per core)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="add to the counts in --out")
    parser.add_argument("--note", default="", help="said in the file (e.g. what else ran)")
    parser.add_argument("--minutes", type=float, default=None,
                        help="start no round after this many minutes (a session's budget)")
    parser.add_argument("--load-by", type=int, metavar="PID", default=None,
                        help="with the load on: process PID (a job busy on every core) is the "
                        "load while it runs; the hogs start when it has ended")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill`: end the round and the hogs
    # SIGINT as at a terminal, also when started in the background (`nohup ... &` ignores it):
    # the rounds' pytest inherits it, so stopping a round tears its servers and nodes down
    signal.signal(signal.SIGINT, signal.default_int_handler)
    record = json.loads(args.out.read_text()) if args.append and args.out.exists() \
        else new_record(args.hogs)
    if args.note:
        record.setdefault("notes", []).append(args.note)
    began = time.monotonic()
    for load in (("off", "on") if args.load == "both" else (args.load,)):
        mode = record["modes"].setdefault(f"load_{load}", {
            "rounds": 0, "round_seconds": [], "load_average_1min": [], "tests": {}})
        hog, what = None, "none"
        try:
            for k in range(args.rounds):
                if args.minutes is not None and time.monotonic() > began + 60 * args.minutes:
                    print(f"load {load}: {args.minutes:g} min are over; {k} round(s) run",
                          flush=True)
                    break
                if load == "on" and hog is None and not _running(args.load_by):
                    hog, what = start_load(args.hogs)
                elif load == "on" and hog is None:
                    what = f"process {args.load_by}: {_command_of(args.load_by)}"
                mode["load"] = what
                with tempfile.TemporaryDirectory(prefix="mespot-stress-") as scratch:
                    found, seconds = run_round(args.tests, Path(scratch))
                add_round(mode, found, seconds, what)
                failed = sorted(n for n, (o, *_) in found.items() if o == "failed")
                print(f"load {load} round {k + 1}/{args.rounds}: {len(found)} tests, "
                      f"{len(failed)} failed {failed} in {seconds:.0f} s", flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(record, indent=1) + "\n")
        finally:
            if hog is not None:
                stop_load(hog)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    failures = sum(t["failed"] for m in record["modes"].values() for t in m["tests"].values())
    print(f"written: {args.out} ({failures} failure(s) in all)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
