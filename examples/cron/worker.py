"""worker.py: one worker of the distributed cron. Run several; one at a time schedules.

Every worker campaigns in one Baton election (the built-in ``election`` module) with a session
lease of ``--ttl`` seconds. The leader is the scheduler: it alone runs jobs; the others wait in
the election and take over when its lease ends (it crashed, paused, or lost the network).

The schedule is deterministic: job k (k = 0, 1, ...; ``count`` of them, or forever) is due at
``t0 + k * period_s``, where ``t0`` is written once, by the first scheduler, to ``<prefix>/t0``.
Job k's name is ``jobs[k % len(jobs)]`` from the config. A job runs for ``work_s`` seconds.

Exactly once. Job k's state is its run record ``<prefix>/runs/<k>`` in Baton, written only with
the lock module's ``fenced-put`` under the scheduler's election token (the election and the lock
lay out their keys alike, so the lock's fence checks the election's leader): Baton refuses it
unless that token still leads. Running job k is:

1. check: read the run record; ``done`` means it ran, skip it;
2. claim: fenced-put ``{"state": "claimed", token}``;
3. run the job (``work_s``), then write its effect to the storage process with the token;
   storage keeps one effect per job and refuses tokens below the highest it has seen;
4. record: fenced-put ``{"state": "done"}`` (or ``"refused"`` when storage refused).

A scheduler that dies after 2 leaves a claimed record: its successor runs the job again. One
that dies after 3 but before 4 leaves an effect in storage and a claimed record: its successor
runs the job again and storage answers that the job already has its effect (``applied: false``),
so the effect happens once and the successor records it done. A new scheduler first announces
its token to storage (``POST /fence``), so from then on storage refuses its predecessor.

The worker does not ask its session mid-job whether it still leads: a pause right after such a
check would make it worthless. It always sends both writes of a job with its token and lets each
resource decide; that is what makes a paused ex-scheduler harmless, and what the test shows.

Each event is printed to stdout as one JSON line (``event``: leading, fenced, claimed, stored,
done, storage-refused, baton-refused, deposed, ...).

    python worker.py --name w1 --endpoints 127.0.0.1:2379 --storage http://127.0.0.1:8377
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import baton
from baton import errors

HERE = Path(__file__).resolve().parent
#: Deadline of each Baton call that should answer at once, in seconds.
CALL_TIMEOUT_S = 10.0
#: Deadline of each request to the storage process, in seconds.
STORAGE_TIMEOUT_S = 5.0
#: Tries of a write whose outcome was unknown (member or storage unreachable); each is safe to
#: repeat: a fenced put of the same record, a storage write deduplicated per job.
WRITE_TRIES = 5
#: Pause before another try, and before campaigning again after an error, in seconds.
RETRY_PAUSE_S = 0.5
#: Digits of the job number in its run record key, so records list in job order.
JOB_DIGITS = 8


def emit(worker: str, event: str, **fields: Any) -> None:
    print(json.dumps({"at": time.time(), "worker": worker, "event": event, **fields}), flush=True)


class Deposed(Exception):
    """This worker no longer leads (a resource refused its token, or its session was lost)."""


class StorageRefused(Deposed):
    """The storage process refused a token lower than the highest it has seen."""


@dataclass(frozen=True)
class Config:
    period_s: float
    work_s: float
    count: int | None
    jobs: list[str]

    @staticmethod
    def load(path: Path) -> Config:
        raw = json.loads(path.read_text())
        return Config(float(raw["period_s"]), float(raw.get("work_s", 0)), raw.get("count"), list(raw["jobs"]))


class Storage:
    """The storage process's two writes (see storage.py)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _send(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
        )
        for attempt in range(WRITE_TRIES):
            try:
                with urllib.request.urlopen(request, timeout=STORAGE_TIMEOUT_S) as reply:
                    return dict(json.loads(reply.read()))
            except urllib.error.HTTPError as error:
                if error.code == 409:
                    raise StorageRefused(json.loads(error.read()).get("error", "stale token")) from None
                raise
            except OSError:
                if attempt + 1 == WRITE_TRIES:
                    raise
                time.sleep(RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    def fence(self, token: int, worker: str) -> None:
        self._send("POST", "/fence", {"token": token, "worker": worker})

    def write(self, job: int, token: int, worker: str, output: str) -> dict[str, Any]:
        return self._send("PUT", f"/jobs/{job}", {"token": token, "worker": worker, "output": output})


class Scheduler:
    """One leadership: runs due jobs with `token` until a resource refuses it."""

    def __init__(self, worker: Worker, session: baton.Session, token: int) -> None:
        self.w = worker
        self.client = worker.client
        self.session = session
        self.token = token

    def fenced_put(self, key: str, record: dict[str, Any]) -> None:
        """Writes `key` only while this scheduler's token leads the election."""
        input = {"name": self.w.election_name, "token": self.token, "key": key, "value": json.dumps(record)}
        for attempt in range(WRITE_TRIES):
            try:
                self.client.call("lock", "fenced-put", input, timeout=CALL_TIMEOUT_S)
                return
            except errors.StaleFencingToken as refusal:
                code = refusal.code.name if refusal.code else None
                emit(self.w.name, "baton-refused", key=key, token=self.token, code=code, error=refusal.message)
                raise Deposed(refusal.message) from None
            except errors.Unavailable:
                if attempt + 1 == WRITE_TRIES:
                    raise
                time.sleep(RETRY_PAUSE_S)

    def run_key(self, k: int) -> str:
        return f"{self.w.prefix}/runs/{k:0{JOB_DIGITS}d}"

    def record(self, k: int) -> dict[str, Any] | None:
        value = self.client.get(self.run_key(k), timeout=CALL_TIMEOUT_S)
        return None if value is None else dict(json.loads(value))

    def origin(self) -> float:
        """The schedule's t0, written by the first scheduler ever."""
        key = f"{self.w.prefix}/t0"
        value = self.client.get(key, timeout=CALL_TIMEOUT_S)
        if value is None:
            t0 = time.time()
            self.fenced_put(key, {"t0": t0})
            return t0
        return float(json.loads(value)["t0"])

    def run(self) -> None:
        self.w.storage.fence(self.token, self.w.name)
        emit(self.w.name, "fenced", token=self.token)
        t0 = self.origin()
        k = 0
        while self.w.config.count is None or k < self.w.config.count:
            if self.session.lost.wait(max(t0 + k * self.w.config.period_s - time.time(), 0)):
                raise Deposed(f"session lost: {self.session.lost_reason}")
            self.run_job(k)
            k += 1
        emit(self.w.name, "schedule-complete", token=self.token, count=k)
        self.session.lost.wait()
        raise Deposed(f"session lost: {self.session.lost_reason}")

    def run_job(self, k: int) -> None:
        before = self.record(k)
        if before is not None and before["state"] == "done":
            return
        name = self.w.config.jobs[k % len(self.w.config.jobs)]
        mine = {"token": self.token, "worker": self.w.name, "job": name}
        self.fenced_put(self.run_key(k), {"state": "claimed", **mine})
        emit(self.w.name, "claimed", job=k, name=name, token=self.token, previous=before)
        time.sleep(self.w.config.work_s)
        outcome = "done"
        try:
            answer = self.w.storage.write(k, self.token, self.w.name, f"{name} #{k}")
            effect_token = self.token if answer["applied"] else int(answer["first_token"])
            emit(self.w.name, "stored", job=k, token=self.token, applied=answer["applied"], effect_token=effect_token)
        except StorageRefused as refusal:
            outcome, effect_token = "refused", None
            emit(self.w.name, "storage-refused", job=k, token=self.token, error=str(refusal))
        self.fenced_put(self.run_key(k), {"state": outcome, "effect_token": effect_token, **mine})
        if outcome != "done":
            raise Deposed(f"storage refused token {self.token}")
        emit(self.w.name, "done", job=k, token=self.token, effect_token=effect_token)


class Worker:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.prefix: str = args.prefix
        self.election_name = f"{args.prefix}/scheduler"
        self.ttl: int = args.ttl
        self.config = Config.load(Path(args.config))
        self.storage = Storage(args.storage)
        self.client = baton.Client(args.endpoints, timeout=CALL_TIMEOUT_S)
        self.stopping = threading.Event()

    def serve(self) -> None:
        """Campaigns, schedules while leading, and campaigns again after losing, until stopped."""
        while not self.stopping.is_set():
            try:
                self.term()
            except (errors.BatonError, OSError, ValueError) as error:
                emit(self.name, "error", error=str(error))
                self.stopping.wait(RETRY_PAUSE_S)

    def term(self) -> None:
        with self.client.session(ttl=self.ttl) as session:
            election = self.client.election(self.election_name, session=session)
            emit(self.name, "campaigning", lease=session.lease)
            token = election.campaign(self.name)
            emit(self.name, "leading", token=token, lease=session.lease)
            try:
                Scheduler(self, session, token).run()
            except (Deposed, errors.LeaseLost) as why:
                emit(self.name, "deposed", token=token, reason=str(why))
            finally:
                try:
                    election.resign()
                except errors.BatonError:
                    pass  # a lost lease took the candidacy with it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--endpoints", default="127.0.0.1:2379", help="comma-separated Baton members")
    parser.add_argument("--storage", default="http://127.0.0.1:8377")
    parser.add_argument("--config", default=str(HERE / "jobs.json"))
    parser.add_argument("--prefix", default="cron", help="the keys this cron owns in Baton")
    parser.add_argument("--ttl", type=int, default=3, help="session lease TTL in seconds")
    worker = Worker(parser.parse_args())
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        worker.serve()
    except (KeyboardInterrupt, SystemExit):
        pass  # leaving the session revokes the lease: another worker takes over at once
    return 0


if __name__ == "__main__":
    sys.exit(main())
