"""A real 3-member Baton cluster for the tests, started the way the Rust e2e harness does.

The server binary is ``$BATON_BIN`` (CI exports the debug build's path), else
``target/debug/baton`` under the repository root. Ports are picked by binding port 0 and
releasing it. `Cluster.start` returns once a leader exists and the built-in modules are
deployed; `Cluster.stop` kills every member, also when a test failed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import grpc

from baton._pb.baton.v1 import modules_pb2, modules_pb2_grpc
from baton._pb.etcdserverpb import rpc_pb2, rpc_pb2_grpc

REPO = Path(__file__).resolve().parents[3]
MEMBERS = 3
#: Starting, electing and deploying the built-ins takes a second or two; a loaded CI box more.
READY_TIMEOUT_S = 120.0
POLL_S = 0.1
ELECTION_TIMEOUT_MS = 2000
#: Built-ins the recipe tests call; the cluster is ready once all are listed.
BUILTINS = {
    "counter", "lock", "election", "semaphore", "rwlock", "barrier",
    "double-barrier", "queue", "priority-queue", "registry",
}


def baton_bin() -> str:
    path = os.environ.get("BATON_BIN") or str(REPO / "target" / "debug" / "baton")
    if not Path(path).is_file():
        raise RuntimeError(f"no baton binary at {path}: build it or set BATON_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Member:
    def __init__(self, name: str, client_port: int, peer_port: int, data_dir: Path) -> None:
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class Cluster:
    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="baton-pyclient-")
        root = Path(self._tmp.name)
        self.members = [Member(f"m{i}", free_port(), free_port(), root / f"m{i}") for i in range(MEMBERS)]
        self._initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def launch(self, member: Member) -> None:
        log = open(Path(self._tmp.name) / f"{member.name}.log", "ab")
        member.process = subprocess.Popen(
            [
                baton_bin(), "serve",
                "--name", member.name,
                "--listen-client-urls", f"http://{member.endpoint}",
                "--listen-peer-urls", member.peer_url,
                "--initial-cluster", self._initial,
                "--data-dir", str(member.data_dir),
                # Twice the default: members share 2 loaded cores with builds and other suites,
                # and a missed heartbeat there should not cost an election.
                "--election-timeout", str(ELECTION_TIMEOUT_MS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start(self) -> Cluster:
        try:
            for member in self.members:
                self.launch(member)
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, members: list[Member] | None = None) -> None:
        """Until every running member sees a leader and lists the built-ins."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for member in members or self.members:
            with grpc.insecure_channel(member.endpoint) as channel:
                status = rpc_pb2_grpc.MaintenanceStub(channel).Status
                listing = modules_pb2_grpc.ModulesStub(channel).List
                while True:
                    if member.process is not None and member.process.poll() is not None:
                        raise RuntimeError(f"{member.name} exited: {self.log(member)[-2000:]}")
                    try:
                        if status(rpc_pb2.StatusRequest(), timeout=1).leader:
                            names = {m.name for m in listing(modules_pb2.ListRequest(), timeout=2).modules}
                            if BUILTINS <= names:
                                break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{member.name} not ready in {READY_TIMEOUT_S}s: {self.log(member)[-2000:]}")
                    time.sleep(POLL_S)

    def member_at(self, endpoint: str) -> Member:
        return next(m for m in self.members if m.endpoint == endpoint)

    def kill(self, member: Member) -> None:
        """SIGKILL, as a crash."""
        if member.process is not None and member.process.poll() is None:
            member.process.send_signal(signal.SIGKILL)
            member.process.wait()

    def log(self, member: Member) -> str:
        path = Path(self._tmp.name) / f"{member.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)
        self._tmp.cleanup()
