"""Results stay right on an operator's bad day: workers and PostgreSQL misbehave under load.

Every job is shell code that appends ``start TOKEN PID`` to a ledger when it starts and
``end TOKEN`` when it ends (see ``conftest.Ledger``), so each test counts how many times each job
really ran, whatever the store says.

- ``test_paused_worker_leaves_the_rerun_result``: a worker frozen (SIGSTOP) mid-job is declared
  lost and its job re-run elsewhere; when it wakes up (SIGCONT) its stale attempt is killed
  before it ends, the re-run's result stands (attempts 2, the other worker), and the woken
  worker still runs new jobs.
- ``test_outage_10s[fast|immediate]``: PostgreSQL stopped for 10 s under a steady stream of
  submissions to two API replicas: every acknowledged job completes, exactly once; the workers
  and APIs survive and recover.
- ``test_outage_longer_than_every_timeout``: the same with an outage longer than the heartbeat,
  the lost-worker window and the pool's connection timeout.
- ``test_outage_does_not_rerun_live_jobs``: an outage longer than the lost-worker window while
  jobs run: nobody is lost, the jobs finish once (attempts 1), nothing is re-run.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

import httpx
import pytest

from tests.acceptance.server import FINAL_STATUSES, results, submit
from tests.faults.conftest import LOST_AFTER_S, FaultCluster, Ledger, StopMode

pytestmark = pytest.mark.acceptance

RecordProperty = Any  # pytest's record_property fixture: a callable (name, value)


# -- helpers ---------------------------------------------------------------------------------------


def _fail(cluster: FaultCluster, problems: list[str], summary: str = "") -> NoReturn:
    pytest.fail(
        "\n".join(["- " + problem for problem in problems])
        + (f"\n{summary}" if summary else "")
        + "\n"
        + cluster.logs()
    )


def _job(client: httpx.Client, ledger: Ledger, sleep_s: float) -> tuple[str, str]:
    """Submit one ledger job: (token, job id)."""
    token = ledger.token()
    return token, submit(client, ledger.code(token, sleep_s), language="shell", timeout=60)


def _wait_all_final(
    clients: list[httpx.Client], ids: list[str], deadline_s: float
) -> dict[str, str]:
    """Poll until every job is final or the deadline passes: job id -> last status seen."""
    last: dict[str, str] = {job_id: "unknown" for job_id in ids}
    waiting = set(ids)
    give_up_at = time.monotonic() + deadline_s
    turn = 0
    while waiting and time.monotonic() < give_up_at:
        for job_id in sorted(waiting):
            turn += 1
            try:
                response = clients[turn % len(clients)].get(f"/jobs/{job_id}/status")
            except httpx.HTTPError as exc:
                last[job_id] = f"error {type(exc).__name__}"
                continue
            if response.status_code != 200:
                last[job_id] = f"HTTP {response.status_code}"
                continue
            last[job_id] = response.json()["status"]
            if last[job_id] in FINAL_STATUSES:
                waiting.discard(job_id)
        if waiting:
            time.sleep(0.2)
    return last


def _workers_alive(cluster: FaultCluster, client: httpx.Client, deadline_s: float) -> str:
    """Why not every worker runs and heartbeats within ``deadline_s`` ("" when they do)."""
    exited = [
        f"{w.directory.name} exited with {w.popen.poll() if w.popen else None}"
        for w in cluster.workers
        if w.popen is None or w.popen.poll() is not None
    ]
    if exited:
        return "; ".join(exited)
    alive: object = None
    give_up_at = time.monotonic() + deadline_s
    while time.monotonic() < give_up_at:
        try:
            alive = client.get("/health").json()["queue"]["workers_alive"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            alive = repr(exc)
        if alive == len(cluster.workers):
            return ""
        time.sleep(0.2)
    return f"/health counts {alive} live workers, not {len(cluster.workers)}"


def _api_health(cluster: FaultCluster) -> list[str]:
    problems = []
    for api in cluster.apis:
        if api.popen is None or api.popen.poll() is not None:
            problems.append(f"{api.directory.name} exited")
            continue
        try:
            response = httpx.get(f"{api.url}/health", timeout=5, trust_env=False)
        except httpx.HTTPError as exc:
            problems.append(f"{api.directory.name} /health: {exc!r}")
            continue
        if response.status_code != 200:
            problems.append(f"{api.directory.name} /health {response.status_code}: {response.text}")
    return problems


# -- 1. a paused worker ----------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_paused_worker_leaves_the_rerun_result(fault_cluster: FaultCluster, ledger: Ledger) -> None:
    cluster = fault_cluster
    api = cluster.api()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="1")
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="1")
    cluster.wait_workers(2)
    client = api.client()
    sleep_s = 12.0  # the stale attempt must still be sleeping when its worker wakes up
    token, job_id = _job(client, ledger, sleep_s)

    first_starts = ledger.wait_starts(token, 1, deadline_s=15)
    if first_starts is None:
        _fail(cluster, [f"job {job_id} never started: {results(client, job_id)}"])
    first_started = time.monotonic()
    stale_pid = first_starts[0]
    victim = cluster.owner_of(stale_pid)
    assert victim is not None, f"no worker's process tree holds the job's shell {stale_pid}"
    first = results(client, job_id)
    assert first["attempts"] == 1 and first["worker"], first
    paused, other = cluster.workers[victim], cluster.workers[1 - victim]

    os.kill(paused.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    try:
        # lost after 4 s without a heartbeat, re-queued, taken by the idle worker
        rerun_starts = ledger.wait_starts(token, 2, deadline_s=sleep_s - 2)
        rerun_seen_s = time.monotonic() - paused_at
        rerun_owner = cluster.owner_of(rerun_starts[1]) if rerun_starts else None
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    resumed_after_s = time.monotonic() - first_started
    if rerun_starts is None:
        _fail(
            cluster,
            [
                f"the job was not re-run within {sleep_s - 2:g} s of pausing its worker "
                f"(lost after {LOST_AFTER_S:g} s): {results(client, job_id)}",
                f"ledger: {ledger.of(token)}",
            ],
        )
    assert resumed_after_s < sleep_s - 1, "the test resumed the worker too late to tell"

    status = _wait_all_final([client], [job_id], deadline_s=sleep_s + 20)[job_id]
    full = results(client, job_id)
    # the stale attempt would have written its end by now had it survived its worker's wake-up
    time.sleep(max(0.0, first_started + sleep_s + 1.5 - time.monotonic()))
    runs = ledger.of(token)

    problems = []
    if status != "completed":
        problems.append(f"status {status!r}, not completed: {full['error_message']!r}")
    if full["stdout"] != f"out {token} {rerun_starts[1]}\n":
        problems.append(
            f"stdout {full['stdout']!r} is not the re-run's (pid {rerun_starts[1]}; "
            f"the stale attempt's pid is {stale_pid})"
        )
    if full["attempts"] != 2:
        problems.append(f"attempts {full['attempts']}, not 2")
    if not full["worker"] or full["worker"]["id"] == first["worker"]["id"]:
        problems.append(f"the result names worker {full['worker']}, the paused one was {first}")
    if rerun_owner != 1 - victim:
        problems.append(f"the re-run ran under worker index {rerun_owner}, not {1 - victim}")
    if runs.ends != 1:
        problems.append(
            f"{runs.ends} end lines for the job, not 1: the paused worker's stale attempt "
            "was not killed when it woke up"
        )
    if len(runs.starts) != 2:
        problems.append(f"{len(runs.starts)} start lines, not 2")
    if paused.popen is None or paused.popen.poll() is not None:
        problems.append(f"the paused worker exited after SIGCONT ({paused.popen})")
    summary = (
        f"re-run seen {rerun_seen_s:.1f} s after SIGSTOP; SIGCONT {resumed_after_s:.1f} s after "
        f"the first start; ledger {runs}"
    )
    print(f"\n{summary}")
    if problems:
        _fail(cluster, problems, summary)

    # the woken worker still takes work: two jobs at once, one per worker (concurrency 1 each)
    tokens = [_job(client, ledger, 3) for _ in range(2)]
    owners = []
    for new_token, _ in tokens:
        starts = ledger.wait_starts(new_token, 1, deadline_s=15)
        owners.append(cluster.owner_of(starts[0]) if starts else None)
    last = _wait_all_final([client], [new_id for _, new_id in tokens], deadline_s=20)
    statuses = [last[new_id] for _, new_id in tokens]
    if victim not in owners or statuses != ["completed", "completed"]:
        _fail(
            cluster,
            [
                f"after waking up, the paused worker (index {victim}) ran none of two new "
                f"jobs: they ran under {owners}, ended {statuses}"
            ],
            summary,
        )
    assert other.popen is not None and other.popen.poll() is None


# -- 2, 3. PostgreSQL stopped under a stream of submissions ---------------------------------------


@dataclass
class Submission:
    index: int
    token: str
    api: int
    sent_wall: float
    outcome: str = "pending"  # "200", "HTTP 503", "ReadTimeout", ...
    answer_s: float = 0.0  # how long the API took to answer (or fail)
    answered_wall: float = 0.0
    job_id: str | None = None


@dataclass
class Submitter:
    """Submits short ledger jobs at ``rate`` per second to the APIs in turn, in the background,
    each on a thread of a pool (a slow answer does not slow the stream down)."""

    cluster: FaultCluster
    ledger: Ledger
    rate: float = 10.0
    submissions: list[Submission] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _local: threading.local = field(default_factory=threading.local)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: list[httpx.Client] = field(default_factory=list)

    def _client(self, api: int) -> httpx.Client:
        clients: dict[int, httpx.Client] | None = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = {}
        if api not in clients:
            clients[api] = httpx.Client(
                base_url=self.cluster.apis[api].url, trust_env=False, timeout=15.0
            )
            with self._lock:
                self._clients.append(clients[api])
        return clients[api]

    def _send(self, submission: Submission) -> None:
        body = {
            "code": self.ledger.code(submission.token, 0.2),
            "language": "shell",
            "timeout": 60,
        }
        sent = time.monotonic()
        try:
            response = self._client(submission.api).post("/execute", json=body)
        except httpx.HTTPError as exc:
            submission.outcome = type(exc).__name__
            return
        finally:
            submission.answer_s = time.monotonic() - sent
            submission.answered_wall = time.time()
        if response.status_code == 200 and response.json().get("job_id"):
            submission.job_id = str(response.json()["job_id"])
            submission.outcome = "200"
        else:
            submission.outcome = f"HTTP {response.status_code}"

    def run(self) -> None:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = []
            next_at = time.monotonic()
            while not self._stop.is_set():
                index = len(self.submissions)
                submission = Submission(
                    index, self.ledger.token(), index % len(self.cluster.apis), time.time()
                )
                self.submissions.append(submission)
                futures.append(pool.submit(self._send, submission))
                next_at += 1 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))
            concurrent.futures.wait(futures)
        for client in self._clients:
            client.close()

    def stop(self) -> None:
        self._stop.set()

    @property
    def acknowledged(self) -> list[Submission]:
        return [s for s in self.submissions if s.job_id is not None]


def _outage(
    cluster: FaultCluster,
    ledger: Ledger,
    record_property: RecordProperty,
    mode: StopMode,
    outage_s: float,
) -> None:
    a, b = cluster.api(), cluster.api()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    cluster.wait_workers(2)
    clients = [a.client(), b.client()]
    postgres = cluster.postgres

    submitter = Submitter(cluster, ledger)
    thread = threading.Thread(target=submitter.run, name="submitter", daemon=True)
    thread.start()
    try:
        time.sleep(3)
        stopped_wall = time.time()
        stop_took_s = postgres.stop(mode)
        down_wall = time.time()  # from here to restarting_wall, nothing answers
        time.sleep(max(0.0, outage_s - (time.time() - stopped_wall)))
        restarting_wall = time.time()
        postgres.start()
        started_wall = time.time()
        time.sleep(3)
    finally:
        submitter.stop()
        thread.join(30)
    assert not thread.is_alive(), "the submitter did not stop"

    acknowledged = submitter.acknowledged
    final = _wait_all_final(clients, [s.job_id for s in acknowledged if s.job_id], 60)
    runs = ledger.runs()
    outcomes = Counter(s.outcome for s in submitter.submissions)
    not_completed = {
        s.job_id: final.get(s.job_id or "")
        for s in acknowledged
        if final.get(s.job_id or "") != "completed"
    }
    completed = len(acknowledged) - len(not_completed)
    duplicates = [s.token for s in acknowledged if runs.get(s.token) and runs[s.token].ends > 1]
    lost = [s.token for s in acknowledged if s.token not in runs or runs[s.token].ends == 0]
    restarted = [s.token for s in acknowledged if s.token in runs and len(runs[s.token].starts) > 1]
    acked_tokens = {s.token for s in acknowledged}
    ran_unacknowledged = [t for t in runs if t.startswith("T") and t not in acked_tokens]

    # recovery: from PostgreSQL's start until the first job submitted after it completes
    after = [s for s in acknowledged if s.sent_wall >= started_wall]
    recovery_s: float | None = None
    first_ack_after_s: float | None = None
    if after:
        first_ack_after_s = after[0].sent_wall - started_wall
        try:
            done = results(clients[0], after[0].job_id or "")
        except AssertionError:  # not readable: reported as not completed below
            done = {"completed_at": None}
        if done["completed_at"]:
            completed_at = datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
            recovery_s = completed_at.timestamp() - started_wall
    sent_during = [s for s in acknowledged if stopped_wall <= s.sent_wall < started_wall]
    answered_while_down = [s for s in acknowledged if down_wall < s.answered_wall < restarting_wall]

    numbers: dict[str, object] = {
        "stop_mode": mode,
        "outage_s": round(started_wall - stopped_wall, 1),
        "pg_ctl_stop_s": round(stop_took_s, 2),
        "submitted": len(submitter.submissions),
        "acknowledged": len(acknowledged),
        "acknowledged_sent_during_outage": len(sent_during),
        "acknowledged_while_down": len(answered_while_down),
        "completed": completed,
        "duplicates": len(duplicates),
        "lost": len(lost),
        "restarted": len(restarted),
        "ran_unacknowledged": len(ran_unacknowledged),
        "first_ack_after_start_s": None
        if first_ack_after_s is None
        else round(first_ack_after_s, 2),
        "recovery_s": None if recovery_s is None else round(recovery_s, 2),
        "outcomes": dict(outcomes),
        "slowest_answer_s": round(max((s.answer_s for s in submitter.submissions), default=0), 2),
    }
    for name, value in numbers.items():
        record_property(name, value)
    summary = "numbers: " + ", ".join(f"{k}={v}" for k, v in numbers.items())
    print(f"\n{summary}")

    problems = []
    if not after:
        problems.append("no submission was acknowledged after PostgreSQL came back")
    if not_completed:
        sample = dict(list(not_completed.items())[:5])
        problems.append(f"{len(not_completed)} acknowledged jobs not completed: {sample}")
        for job_id in list(sample)[:3]:
            try:
                full = results(clients[0], job_id or "")
            except AssertionError as exc:
                problems.append(f"  {job_id}: unreadable: {exc}")
                continue
            problems.append(
                f"  {job_id}: {full['status']}, attempts {full['attempts']}, "
                f"error {full['error_message']!r}"
            )
    if duplicates:
        problems.append(f"{len(duplicates)} acknowledged jobs ended more than once")
    if lost:
        problems.append(f"{len(lost)} acknowledged jobs never ended: {lost[:5]}")
    if why := _workers_alive(cluster, clients[0], deadline_s=10):
        problems.append(f"workers: {why}")
    problems += _api_health(cluster)
    if problems:
        _fail(cluster, problems, summary)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_outage_10s(
    fault_cluster: FaultCluster, ledger: Ledger, record_property: RecordProperty, mode: StopMode
) -> None:
    _outage(fault_cluster, ledger, record_property, mode, outage_s=10)


@pytest.mark.timeout(180)
def test_outage_longer_than_every_timeout(
    fault_cluster: FaultCluster, ledger: Ledger, record_property: RecordProperty
) -> None:
    # heartbeat 0.5 s, lost after 4 s, 3 s for a pooled connection: 12 s is longer than all
    _outage(fault_cluster, ledger, record_property, "immediate", outage_s=12)


# -- 4. an outage while jobs run -------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_outage_does_not_rerun_live_jobs(fault_cluster: FaultCluster, ledger: Ledger) -> None:
    cluster = fault_cluster
    api = cluster.api()
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    cluster.worker(INTERPRETER_WORKER_CONCURRENCY="2")
    cluster.wait_workers(2)
    client = api.client()
    jobs = [_job(client, ledger, 14) for _ in range(4)]
    owners = []
    for token, job_id in jobs:
        pids = ledger.wait_starts(token, 1, deadline_s=15)
        if pids is None:
            _fail(cluster, [f"job {job_id} never started: {results(client, job_id)}"])
        owners.append(cluster.owner_of(pids[0]))
    started = time.monotonic()

    cluster.postgres.stop("fast")
    time.sleep(8)  # twice the lost-worker window: every heartbeat is stale when it comes back
    cluster.postgres.start()
    back_after_s = time.monotonic() - started

    final = _wait_all_final([client], [job_id for _, job_id in jobs], deadline_s=40)
    runs = ledger.runs()
    problems = []
    for token, job_id in jobs:
        try:
            full: dict[str, Any] = results(client, job_id)
        except AssertionError as exc:
            full = {"status": final[job_id], "attempts": None, "error_message": str(exc)}
        run = runs.get(token)
        starts = len(run.starts) if run else 0
        ends = run.ends if run else 0
        if full["status"] != "completed" or full["attempts"] != 1 or starts != 1 or ends != 1:
            problems.append(
                f"job {job_id}: {full['status']}, attempts {full['attempts']}, "
                f"{starts} starts, {ends} ends, error {full['error_message']!r}"
            )
    if why := _workers_alive(cluster, client, deadline_s=10):
        problems.append(f"workers: {why}")
    problems += _api_health(cluster)
    if problems:
        _fail(
            cluster,
            problems,
            f"jobs ran under workers {owners}; PostgreSQL back {back_after_s:.1f} s after stop",
        )
