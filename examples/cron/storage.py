"""storage.py: the cron's external side effect, a tiny HTTP store that checks fencing tokens.

It stands for any resource outside Baton a job writes to (a database, a bucket, a mailer). It
keeps the highest fencing token it has seen and refuses any request carrying a lower one, so a
scheduler that lost its leadership without noticing (paused, partitioned) cannot write after
its successor has. It also keeps each job's effect once: a second write for a job that already
has one changes nothing and answers which token wrote it (the retry of a crashed scheduler).

    POST /fence      {"token": T, "worker": W}          a new scheduler announces its token
    PUT  /jobs/<k>   {"token": T, "worker": W, "output": S}   job k's effect
    GET  /state      {"highest": T, "effects": {k: ...}, "log": [...]}
    POST /faults     {"reply_delay_s": S}   fault injection: answer each job write S seconds
                     after applying it (a slow reply path), so a scheduler can be killed
                     between a job's effect and its record

Answers are JSON: 200 with ``{"applied": true}`` (or ``false`` and ``first_token`` for a job
that already had its effect), 409 with ``{"error": "stale token ..."}`` for a lower token.
Every request is printed to stdout as one JSON line: that is the log of tokens to watch.
State is in memory: restarting the storage starts it empty.

    python storage.py --port 8377
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: Largest request body accepted, in bytes (a job's output is a short line).
BODY_BYTES_MAX = 64 * 1024
JOB_PATH = "/jobs/"


class Store:
    """The state behind the server, under one lock: every request is checked and applied whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.highest = 0
        #: Job number -> its one effect: token, worker, output, wall-clock time written.
        self.effects: dict[int, dict[str, Any]] = {}
        #: Every request and its outcome, in order.
        self.log: list[dict[str, Any]] = []
        self.reply_delay_s = 0.0

    def _note(self, entry: dict[str, Any]) -> None:
        entry["at"] = time.time()
        entry["highest"] = self.highest
        self.log.append(entry)
        print(json.dumps(entry), flush=True)

    def _stale(self, op: str, token: int, worker: str, job: int | None) -> str | None:
        if token >= self.highest:
            self.highest = token
            return None
        error = f"stale token {token} < {self.highest}"
        self._note({"op": op, "job": job, "token": token, "worker": worker, "outcome": "refused", "error": error})
        return error

    def fence(self, token: int, worker: str) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            if error := self._stale("fence", token, worker, None):
                return HTTPStatus.CONFLICT, {"error": error, "highest": self.highest}
            self._note({"op": "fence", "job": None, "token": token, "worker": worker, "outcome": "ok"})
            return HTTPStatus.OK, {"highest": self.highest}

    def write(self, job: int, token: int, worker: str, output: str) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            if error := self._stale("write", token, worker, job):
                return HTTPStatus.CONFLICT, {"error": error, "highest": self.highest}
            first = self.effects.get(job)
            if first is not None:
                self._note({"op": "write", "job": job, "token": token, "worker": worker, "outcome": "duplicate"})
                return HTTPStatus.OK, {"applied": False, "first_token": first["token"]}
            self.effects[job] = {"token": token, "worker": worker, "output": output, "at": time.time()}
            self._note({"op": "write", "job": job, "token": token, "worker": worker, "outcome": "applied"})
            return HTTPStatus.OK, {"applied": True}

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"highest": self.highest, "effects": dict(self.effects), "log": list(self.log)}


class Handler(BaseHTTPRequestHandler):
    store: Store  # set on the class by `serve`

    def _reply(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller died waiting (a test killed it): the request was applied all the same

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= BODY_BYTES_MAX:
            return None
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError:
            return None
        ok = isinstance(body, dict) and isinstance(body.get("token"), int) and isinstance(body.get("worker"), str)
        return body if ok else None

    def do_GET(self) -> None:
        if self.path == "/state":
            return self._reply(HTTPStatus.OK, self.store.state())
        self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}"})

    def do_POST(self) -> None:
        if self.path == "/faults":
            return self._faults()
        if self.path != "/fence":
            return self._reply(HTTPStatus.NOT_FOUND, {"error": f"no {self.path}"})
        body = self._body()
        if body is None:
            return self._reply(HTTPStatus.BAD_REQUEST, {"error": "want {token, worker}"})
        self._reply(*self.store.fence(body["token"], body["worker"]))

    def _faults(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            delay = float(json.loads(self.rfile.read(min(length, BODY_BYTES_MAX)))["reply_delay_s"])
        except (ValueError, KeyError, TypeError):
            return self._reply(HTTPStatus.BAD_REQUEST, {"error": "want {reply_delay_s}"})
        self.store.reply_delay_s = max(delay, 0.0)
        self._reply(HTTPStatus.OK, {"reply_delay_s": self.store.reply_delay_s})

    def do_PUT(self) -> None:
        job = self.path.removeprefix(JOB_PATH)
        body = self._body()
        if not self.path.startswith(JOB_PATH) or not job.isdigit() or body is None:
            return self._reply(HTTPStatus.BAD_REQUEST, {"error": "want PUT /jobs/<k> {token, worker, output}"})
        answer = self.store.write(int(job), body["token"], body["worker"], str(body.get("output", "")))
        time.sleep(self.store.reply_delay_s)
        self._reply(*answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the store prints its own log, one JSON line per request


def serve(host: str, port: int) -> None:
    Handler.store = Store()
    server = ThreadingHTTPServer((host, port), Handler)
    print(json.dumps({"op": "listening", "url": f"http://{host}:{server.server_address[1]}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8377, help="0 picks a free port (printed first)")
    args = parser.parse_args()
    serve(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
