"""python-etcd3 against one endpoint: put/get, prefix reads, txn, watch, lease and lock.

Usage: etcd3_client.py HOST PORT. Exits non-zero (with a traceback) on the first failed check.
Needs `pip install etcd3 'protobuf<4' 'tenacity<7'` (etcd3 0.12's lock breaks with tenacity 7+).
"""

import sys
import threading
import time

import etcd3

TIMEOUT_S = 10


def kv(c):
    c.put("py/a", "1")
    value, meta = c.get("py/a")
    assert value == b"1" and meta.key == b"py/a" and meta.version == 1, (value, meta)
    c.put("py/b", "2")
    assert sorted(v for v, _ in c.get_prefix("py/")) == [b"1", b"2"]
    swapped, _ = c.transaction(
        compare=[c.transactions.value("py/a") == "1"],
        success=[c.transactions.put("py/a", "3")],
        failure=[],
    )
    assert swapped and c.get("py/a")[0] == b"3"
    refused, _ = c.transaction(
        compare=[c.transactions.value("py/a") == "1"],
        success=[c.transactions.put("py/a", "4")],
        failure=[],
    )
    assert not refused and c.get("py/a")[0] == b"3"
    assert c.delete("py/b") and c.get("py/b")[0] is None


def watch(c):
    events, cancel = c.watch("py/w")

    def writer():
        time.sleep(0.3)
        c.put("py/w", "x")
        c.delete("py/w")

    threading.Thread(target=writer).start()
    seen = []
    for event in events:
        seen.append((type(event).__name__, event.key))
        if len(seen) == 2:
            cancel()
            break
    assert seen == [("PutEvent", b"py/w"), ("DeleteEvent", b"py/w")], seen


def lease(c):
    granted = c.lease(ttl=60)
    c.put("py/leased", "v", lease=granted)
    assert c.get("py/leased")[1].lease_id == granted.id
    granted.refresh()
    assert 0 < granted.remaining_ttl <= 60, granted.remaining_ttl
    granted.revoke()
    assert c.get("py/leased")[0] is None


def lock(c):
    first = c.lock("res", ttl=10)
    assert first.acquire(timeout=5)
    second = c.lock("res", ttl=10)
    assert not second.acquire(timeout=1), "a held lock was acquired twice"
    first.release()
    assert second.acquire(timeout=5)
    assert second.is_acquired()
    second.release()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    c = etcd3.client(host=host, port=port, timeout=TIMEOUT_S)
    for check in (kv, watch, lease, lock):
        check(c)
        print(f"{check.__name__}: ok", flush=True)


if __name__ == "__main__":
    main()
