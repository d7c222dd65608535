"""The distributed cron end to end: a real 3-member cluster, the storage process, 3 workers.

Each test crashes or pauses the scheduler in the middle of a job, checks that another worker
led within the lease TTL, and then checks, from storage's log and Baton's run records, that
every job of the schedule had its effect exactly once (none skipped, none twice) and not before
it was due:

- the scheduler killed with SIGKILL while a job runs (claimed, no effect yet);
- the scheduler stopped with SIGSTOP while a job runs, past its lease, then resumed: its late
  writes were refused by storage (HTTP 409, stale token) and by Baton's fenced put
  (FAILED_PRECONDITION, stale fencing token);
- the scheduler killed after a job's effect and before its record: the successor's retry finds
  the effect in storage and does not repeat it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import baton
from cluster import Cluster, free_port

HERE = Path(__file__).resolve().parent
WORKERS = 3
#: The session lease TTL: the shortest the cluster grants (1.5 of its 2 s election timeout).
TTL_S = 3
#: Jobs are due every PERIOD_S and run for WORK_S, the window in which a test strikes.
PERIOD_S = 0.5
WORK_S = 0.4
JOBS = 20
#: Beyond the TTL, what a takeover may take: the leader's expiry tick, the waiting campaign's
#: wake-up and reply, and 6 engineers' builds on 2 cores.
TAKEOVER_SLACK_S = 2.0
#: Jobs done before the test strikes, so the schedule is known to be running.
WARM_UP_JOBS = 2
#: Deadline of every wait on a condition; generous, as the machine is shared.
WAIT_S = 120.0
POLL_S = 0.02
#: Tries to stop the scheduler while a job runs (a slow poll may see the claim too late).
STRIKE_TRIES = 5
CALL_TIMEOUT_S = 10.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        time.sleep(POLL_S)


class Cron:
    """One cron under test: its storage process and workers, with their logs."""

    def __init__(self, cluster: Cluster, client: baton.Client, tmp: Path) -> None:
        self.client = client
        self.tmp = tmp
        self.prefix = f"cron-{uuid.uuid4().hex[:8]}"
        self.election = client.election(f"{self.prefix}/scheduler")
        config = tmp / "jobs.json"
        config.write_text(json.dumps({"period_s": PERIOD_S, "work_s": WORK_S, "count": JOBS, "jobs": ["a", "b", "c"]}))
        self.storage_url = f"http://127.0.0.1:{free_port()}"
        port = self.storage_url.rsplit(":", 1)[1]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._spawn("storage", [str(HERE / "storage.py"), "--port", port])
        wait_for("storage", self._storage_answers)
        for i in range(WORKERS):
            # Each worker starts on another member, as separate machines would.
            endpoints = cluster.endpoints[i:] + cluster.endpoints[:i]
            self._spawn(f"w{i}", [
                str(HERE / "worker.py"), "--name", f"w{i}", "--endpoints", ",".join(endpoints),
                "--storage", self.storage_url, "--config", str(config), "--prefix", self.prefix,
                "--ttl", str(TTL_S),
            ])

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)

    def _storage_answers(self) -> bool:
        try:
            self.storage()
            return True
        except OSError:
            return False

    def storage_faults(self, reply_delay_s: float) -> None:
        body = json.dumps({"reply_delay_s": reply_delay_s}).encode()
        request = urllib.request.Request(f"{self.storage_url}/faults", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_S):
            pass

    def storage(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.storage_url}/state", timeout=CALL_TIMEOUT_S) as reply:
            return dict(json.loads(reply.read()))

    def events(self, worker: str, event: str | None = None) -> list[dict[str, Any]]:
        """The worker's events so far (optionally one kind), skipping anything not JSON."""
        out = []
        for line in (self.tmp / f"{worker}.log").read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and (event is None or entry.get("event") == event):
                out.append(entry)
        return out

    def leader(self) -> baton.Leader | None:
        return self.election.leader()

    def records(self) -> dict[int, dict[str, Any]]:
        runs = self.client.get_prefix(f"{self.prefix}/runs/", timeout=CALL_TIMEOUT_S)
        return {int(key.rsplit(b"/", 1)[1]): json.loads(value) for key, value in runs.items()}

    def all_done(self) -> bool:
        records = self.records()
        return all(records.get(k, {}).get("state") == "done" for k in range(JOBS))

    def strike_mid_job(self, worker: str, sig: signal.Signals) -> tuple[int, float]:
        """Sends `sig` to `worker` while it runs a job (claimed, nothing written to storage yet);
        the job and the time. The worker is frozen first, so what it did can be checked."""
        process = self.processes[worker]
        for _ in range(STRIKE_TRIES):
            seen = len(self.events(worker, "claimed"))
            job = wait_for("claim", lambda: self.events(worker, "claimed")[seen:])[0]["job"]
            process.send_signal(signal.SIGSTOP)
            struck_at = time.time()
            later = [e for e in self.events(worker) if e.get("job") == job and e["event"] != "claimed"]
            written = [e for e in self.storage()["log"] if e["job"] == job]
            if not later and not written:
                if sig != signal.SIGSTOP:
                    process.send_signal(sig)
                return int(job), struck_at
            process.send_signal(signal.SIGCONT)
        pytest.fail(f"could not catch {worker} mid-job in {STRIKE_TRIES} tries")

    def takeover(self, victim: str, since: float) -> tuple[baton.Leader, float]:
        """The leader after `victim`, and seconds from `since` until it said it leads."""
        def successor() -> baton.Leader | None:
            leader = self.leader()
            return leader if leader is not None and leader.value != victim else None

        leader = wait_for("new leader", successor)
        leading = wait_for("leading event", lambda: [
            e for e in self.events(leader.value, "leading") if e["token"] == leader.token
        ])
        return leader, leading[0]["at"] - since

    def assert_exactly_once(self) -> dict[str, Any]:
        """Every job's effect once, not before it was due, and Baton's record of it agrees."""
        state = self.storage()
        applied = Counter(e["job"] for e in state["log"] if e["op"] == "write" and e["outcome"] == "applied")
        assert applied == Counter(range(JOBS)), f"effects per job: {applied}"
        effects = {int(k): v for k, v in state["effects"].items()}
        assert sorted(effects) == list(range(JOBS))
        t0_raw = self.client.get(f"{self.prefix}/t0", timeout=CALL_TIMEOUT_S)
        assert t0_raw is not None
        t0 = json.loads(t0_raw)["t0"]
        records = self.records()
        for k in range(JOBS):
            assert effects[k]["at"] >= t0 + k * PERIOD_S, f"job {k} ran before it was due"
            assert records[k]["state"] == "done" and records[k]["effect_token"] == effects[k]["token"], records[k]
        # The workers' side agrees (a worker killed waiting for storage's answer never saw it).
        stored = Counter(e["job"] for w in range(WORKERS) for e in self.events(f"w{w}", "stored") if e["applied"])
        assert set(stored) <= set(range(JOBS)) and all(n == 1 for n in stored.values()), stored
        return state

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()


@pytest.fixture
def cron(cluster: Cluster, tmp_path: Path) -> Iterator[Cron]:
    with baton.Client(cluster.endpoints, timeout=CALL_TIMEOUT_S) as client:
        c = Cron(cluster, client, tmp_path)
        try:
            yield c
        finally:
            c.stop()


def scheduler_warmed_up(cron: Cron) -> str:
    """The scheduler's name, once it has run a few jobs."""
    leader = wait_for("leader", cron.leader)
    wait_for("warm-up", lambda: len(cron.events(leader.value, "done")) >= WARM_UP_JOBS)
    return leader.value


def test_scheduler_killed_mid_job_another_takes_over_and_no_job_runs_twice(cron: Cron) -> None:
    victim = scheduler_warmed_up(cron)
    job, killed_at = cron.strike_mid_job(victim, signal.SIGKILL)
    cron.processes[victim].wait()
    leader, took_s = cron.takeover(victim, killed_at)
    print(f"takeover after SIGKILL: {took_s:.2f}s (TTL {TTL_S}s)")
    assert took_s <= TTL_S + TAKEOVER_SLACK_S
    wait_for("every job done", cron.all_done)
    cron.assert_exactly_once()
    # The job the victim had claimed was run again by its successor, and only there.
    record = cron.records()[job]
    assert record["token"] != cron.events(victim, "claimed")[-1]["token"], record
    assert any(e["job"] == job and e["previous"] for e in cron.events(leader.value, "claimed"))


def test_paused_scheduler_is_replaced_and_its_late_writes_are_refused(cron: Cron) -> None:
    victim = scheduler_warmed_up(cron)
    old_token = cron.events(victim, "leading")[-1]["token"]
    job, stopped_at = cron.strike_mid_job(victim, signal.SIGSTOP)
    leader, took_s = cron.takeover(victim, stopped_at)
    print(f"takeover after SIGSTOP: {took_s:.2f}s (TTL {TTL_S}s)")
    assert took_s <= TTL_S + TAKEOVER_SLACK_S
    assert leader.token > old_token
    # Resume the ex-scheduler only once its successor has told storage its token.
    wait_for("storage fenced", lambda: cron.storage()["highest"] >= leader.token)
    cron.processes[victim].send_signal(signal.SIGCONT)

    refused = wait_for("storage refusal", lambda: cron.events(victim, "storage-refused"))
    assert refused[0]["job"] == job and refused[0]["token"] == old_token
    baton_refused = wait_for("Baton refusal", lambda: cron.events(victim, "baton-refused"))
    assert baton_refused[0]["token"] == old_token
    assert baton_refused[0]["code"] == "FAILED_PRECONDITION"
    assert "stale fencing token" in baton_refused[0]["error"]
    wait_for("deposed", lambda: cron.events(victim, "deposed"))

    wait_for("every job done", cron.all_done)
    state = cron.assert_exactly_once()
    # Storage itself saw the late write and refused it, and applied nothing twice.
    late = [e for e in state["log"] if e["token"] == old_token and e["outcome"] == "refused"]
    assert late and late[0]["job"] == job, state["log"]
    assert not [e for e in state["log"] if e["outcome"] == "duplicate"]
    # Baton kept the successor's record of the job, not the ex-scheduler's late one.
    assert cron.records()[job]["token"] != old_token


def test_scheduler_killed_between_effect_and_record_the_effect_is_not_repeated(cron: Cron) -> None:
    victim = scheduler_warmed_up(cron)
    token = cron.events(victim, "leading")[-1]["token"]
    # Storage applies the victim's next write but holds its answer, so the victim dies knowing
    # nothing of it: the job's effect exists, its run record still says "claimed".
    cron.storage_faults(reply_delay_s=WAIT_S)
    held_since = time.time()
    applied = wait_for("held write", lambda: [
        e for e in cron.storage()["log"] if e["token"] == token and e["outcome"] == "applied" and e["at"] >= held_since
    ])
    job = applied[0]["job"]
    cron.processes[victim].kill()
    killed_at = time.time()
    cron.processes[victim].wait()
    cron.storage_faults(reply_delay_s=0)
    assert cron.records()[job]["state"] == "claimed"
    leader, took_s = cron.takeover(victim, killed_at)
    print(f"takeover after SIGKILL between effect and record: {took_s:.2f}s (TTL {TTL_S}s)")
    assert took_s <= TTL_S + TAKEOVER_SLACK_S

    wait_for("every job done", cron.all_done)
    state = cron.assert_exactly_once()
    # The successor ran the job again; storage kept the victim's effect and said so.
    duplicates = [e for e in state["log"] if e["outcome"] == "duplicate"]
    assert [(d["job"], d["token"]) for d in duplicates] == [(job, leader.token)], duplicates
    record = cron.records()[job]
    assert record["token"] == leader.token and record["effect_token"] == token, record
