// The client against one real 3-member cluster: every module call and recipe helper (what each
// returns, that waiting helpers really wait and are released by the right event, that fencing
// refuses stale tokens, that errors arrive as the documented classes), a session's lease revoked
// from outside, then failover when the member in use is SIGKILLed.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  Client,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  LeaseLost,
  NotFound,
  ResourceExhausted,
  StaleFencingToken,
} from "../dist/index.js";
import { Cluster, REPO_ROOT, sleep, until } from "./cluster.mjs";

/** Long enough that a call which should wait has had every chance to return by mistake. */
const PARKED_PROOF_MS = 400;
/** Bounds a wake-up that should follow at once; generous for a loaded machine. */
const WAKE_MS = 20_000;
/** Prefixes every name, so the file can run again against the same cluster. */
const RUN = `n${Date.now().toString(36)}-`;
const n = (name) => RUN + name;
/** Sessions that outlive the test. */
const TTL_S = 30;

/** Asserts `promise` has not settled after PARKED_PROOF_MS. */
async function stillWaiting(promise, what) {
  const settled = await Promise.race([
    promise.then((v) => `resolved with ${JSON.stringify(v)}`, (e) => `rejected with ${e}`),
    new Promise((ok) => setTimeout(() => ok("waiting"), PARKED_PROOF_MS)),
  ]);
  assert.equal(settled, "waiting", `${what} should still be waiting`);
}

/** `promise`, failing the test if it takes longer than WAKE_MS. */
function soon(promise, what) {
  let timer;
  const limit = new Promise((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what} did not finish in ${WAKE_MS} ms`)), WAKE_MS);
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

let cluster;
let client;
const sessions = [];

async function session(ttl = TTL_S) {
  const s = await client.session({ ttl });
  sessions.push(s);
  return s;
}

before(async () => {
  // BATON_TEST_ENDPOINTS (comma-separated) runs these tests against a cluster already running.
  const given = process.env.BATON_TEST_ENDPOINTS;
  cluster = given ? { endpoints: given.split(","), stop() {} } : await Cluster.start();
  client = new Client({ endpoints: cluster.endpoints, timeoutMs: 10_000 });
});

after(async () => {
  await Promise.all(sessions.map((s) => s.close().catch(() => undefined)));
  await client?.close();
  await cluster?.stop();
});

describe("modules", () => {
  test("list and describe show the built-ins", async () => {
    const modules = await client.modules.list();
    const lock = modules.find((m) => m.name === "lock");
    assert.ok(lock, "lock is listed");
    assert.ok(lock.versions.at(-1).builtin);
    const described = await client.modules.describe("lock");
    assert.equal(described.name, "lock");
    assert.match(described.versions.at(-1).hash, /^[0-9a-f]{64}$/);
    await assert.rejects(client.modules.describe("no-such-module"), NotFound);
  });

  test("deploy, call by name and hash, delete", async () => {
    const component = readFileSync(join(REPO_ROOT, "host/wasm/fixtures/counter-v0.1.wasm"));
    const { hash, version } = await client.modules.deploy(n("node-counter"), component);
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.equal(version, 1n);
    assert.deepEqual(await client.call(n("node-counter"), "add", { keys: [n("nc")], by: 3 }), { [n("nc")]: 3 });
    assert.equal(await client.modules.delete(n("node-counter")), 1n);
    await assert.rejects(client.modules.describe(n("node-counter")), NotFound);
    await assert.rejects(client.call(n("node-counter"), "get", { keys: [n("nc")] }), NotFound);
    // A deleted name's versions stay callable by hash.
    const byHash = await client.call("", "get", { keys: [n("nc")] }, { hash });
    assert.deepEqual(byHash, { [n("nc")]: 3 });
    await assert.rejects(client.modules.deploy("garbage", Buffer.from("not wasm")), InvalidArgument);
  });

  test("call: JSON by default, bytes when raw, the whole answer with invoke", async () => {
    assert.deepEqual(await client.call("counter", "add", { keys: [n("raw")], by: 1 }), { [n("raw")]: 1 });
    const raw = await client.call("counter", "get", JSON.stringify({ keys: [n("raw")] }), { raw: true, readOnly: true });
    assert.ok(Buffer.isBuffer(raw));
    assert.deepEqual(JSON.parse(raw.toString()), { [n("raw")]: 1 });
    const whole = await client.invoke("counter", "add", JSON.stringify({ keys: [n("raw")], by: 1 }));
    assert.equal(whole.runs, 1);
    assert.ok(whole.revision > 0n);
    assert.ok(whole.fuelUsed > 0n);
  });

  test("errors arrive by kind", async () => {
    const readOnlyWrite = client.call("counter", "add", { keys: [n("ro")], by: 1 }, { readOnly: true });
    await assert.rejects(readOnlyWrite, (e) => e instanceof FailedPrecondition && /read-only call cannot write/.test(e.details));
    await assert.rejects(client.call("counter", "add", { keys: [n("fuel")], by: 1 }, { fuel: 1 }), ResourceExhausted);
    const wait = client.counter.get(n("never"), { atLeast: 1, timeoutMs: 500 });
    await assert.rejects(wait, DeadlineExceeded);
    await assert.rejects(client.call("lock", "release", { name: n("x") }), FailedPrecondition);
  });
});

test("counter: add several at once, get, and wait for a count", async () => {
  assert.deepEqual(await client.counter.add([n("c1"), n("c2")], 2), { [n("c1")]: 2, [n("c2")]: 2 });
  assert.deepEqual(await client.counter.get([n("c1"), n("c3")]), { [n("c1")]: 2, [n("c3")]: 0 });
  const latch = client.counter.get(n("c3"), { atLeast: 2 });
  await stillWaiting(latch, "a latch below its count");
  await client.counter.add(n("c3"), 2);
  assert.deepEqual(await soon(latch, "the latch"), { [n("c3")]: 2 });
});

test("lock: waiters in turn, growing tokens, stale tokens refused, tryLock, withLock", async () => {
  const [a, b] = [await session(), await session()];
  const first = await client.lock(n("db"), { session: a });
  assert.ok(first.key.startsWith(`${n("db")}/`), first.key);
  assert.equal(await client.tryLock(n("db"), { session: b }), null);
  const waiting = client.lock(n("db"), { session: b });
  await stillWaiting(waiting, "a second lock");
  await first.fencedPut(n("fenced"), "a");
  await first.release();
  const second = await soon(waiting, "the waiter's grant");
  assert.ok(second.token > first.token, "tokens grow");
  await assert.rejects(first.fencedPut(n("fenced"), "late"), StaleFencingToken);
  const revision = await second.fencedTxn([{ put: n("fenced"), value: "b" }, { delete: n("other") }]);
  assert.ok(revision > 0);
  await second.release();

  const ran = await client.withLock(n("db"), async (held) => {
    assert.equal(await client.tryLock(n("db"), { session: b }), null, "held inside withLock");
    return held.token;
  }, { session: a });
  assert.ok(ran > second.token);
  const after = await client.tryLock(n("db"), { session: b });
  assert.ok(after, "withLock released the lock");
  await after.release();
  // Without a session the client's default session holds the lock.
  const byDefault = await client.lock(n("default-db"));
  assert.equal(byDefault.session, await client.defaultSession());
  await byDefault.release();
});

test("election: campaign, proclaim, resign, leader, observe", async () => {
  const [a, b] = [await session(), await session()];
  const election = client.election(n("leader-e"), { session: a });
  const rival = client.election(n("leader-e"), { session: b });
  assert.equal(await election.leader(), null);
  const abort = new AbortController();
  const seen = election.observe({ signal: abort.signal })[Symbol.asyncIterator]();
  const firstSeen = seen.next();

  const lead = await election.campaign("a");
  assert.equal((await soon(firstSeen, "observe")).value.value, "a");
  await lead.proclaim("a2");
  assert.equal((await soon(seen.next(), "observe")).value.value, "a2");

  const challenger = rival.campaign("b");

  await stillWaiting(challenger, "a second candidate");
  await lead.resign();
  const next = await soon(challenger, "the rival's leadership");
  assert.ok(next.token > lead.token);
  assert.equal((await soon(seen.next(), "observe")).value.value, "b");
  const leader = await election.leader();
  assert.equal(leader.value, "b");
  assert.equal(leader.token, next.token);
  assert.equal(leader.lease, b.lease, "the leader's lease id, exact");
  await assert.rejects(lead.proclaim("usurp"), StaleFencingToken);
  abort.abort();
  assert.equal((await seen.next()).done, true, "observe ends when aborted");
  await next.resign();
});

test("semaphore: permits, waiting, holders, fencing", async () => {
  const [a, b, c] = [await session(), await session(), await session()];
  const sem = (s) => client.semaphore(n("pool"), 2, { session: s });
  const pa = await sem(a).acquire();
  const pb = await sem(b).acquire();
  assert.equal(await sem(c).tryAcquire(), null);
  const waiting = sem(c).acquire();
  await stillWaiting(waiting, "a third permit");
  const holders = await sem(a).holders();
  assert.equal(holders.permits, 2);
  assert.equal(holders.holders.length, 2);
  assert.equal(holders.waiting, 1);
  await pa.fencedPut(n("pool-k"), "a");
  await pa.release();
  const pc = await soon(waiting, "the third permit");
  assert.ok(pc.token > pb.token);
  await assert.rejects(pa.fencedPut(n("pool-k"), "late"), StaleFencingToken);
  await pb.release();
  await pc.release();
});

test("rwlock: readers share, a writer waits for them and excludes them", async () => {
  const [a, b, c] = [await session(), await session(), await session()];
  const rw = (s) => client.rwlock(n("rw"), { session: s });
  const r1 = await rw(a).readLock();
  const r2 = await rw(b).readLock();
  assert.ok(r1.key.startsWith(`${n("rw")}/read/`), r1.key);
  const writer = rw(c).writeLock();
  await stillWaiting(writer, "a writer behind readers");
  await r1.release();
  await r2.release();
  const w = await soon(writer, "the writer");
  assert.ok(w.key.startsWith(`${n("rw")}/write/`), w.key);
  const reader = rw(a).readLock();
  await stillWaiting(reader, "a reader behind a writer");
  await w.release();
  await (await soon(reader, "the reader")).release();
});

test("barrier: wait blocks while held", async () => {
  const barrier = client.barrier(n("gate"));
  assert.equal(await barrier.hold(), true);
  const waiting = barrier.wait();
  await stillWaiting(waiting, "a wait on a held barrier");
  await barrier.release();
  await soon(waiting, "the wait");
  await barrier.wait();
});

test("double barrier: enter waits for the count, leave for everyone", async () => {
  const [a, b] = [await session(), await session()];
  const first = client.doubleBarrier(n("dbar"), 2, { session: a }).enter();
  await stillWaiting(first, "a lone enter");
  const key = await client.doubleBarrier(n("dbar"), 2, { session: b }).enter();
  assert.ok(key.startsWith(`${n("dbar")}/waiters/`), key);
  await soon(first, "the first enter");
  const leaving = client.doubleBarrier(n("dbar"), 2, { session: a }).leave();
  await stillWaiting(leaving, "a lone leave");
  await client.doubleBarrier(n("dbar"), 2, { session: b }).leave();
  await soon(leaving, "the first leave");
});

test("queue: push, peek, length, pop, reserve, ack, nack, delayed items", async () => {
  const q = client.queue(n("jobs"));
  await q.push("a");
  await q.push("b");
  assert.equal((await q.peek()).value, "a");
  assert.equal((await q.length()).ready, 2);
  assert.equal((await q.pop()).value, "a");

  const r = await q.reserve({ visibilityMs: 60_000 });
  assert.equal(r.value, "b");
  assert.equal(r.deliveries, 1);
  await r.nack();
  const again = await q.reserve({ visibilityMs: 60_000 });
  assert.equal(again.value, "b");
  assert.equal(again.deliveries, 2);
  await assert.rejects(r.ack(), StaleFencingToken, "a nacked reservation's token is stale");
  await again.ack();
  assert.equal(await q.peek(), null);

  await assert.rejects(q.pop({ timeoutMs: 500 }), DeadlineExceeded);
  const popping = q.pop();
  await stillWaiting(popping, "a pop on an empty queue");
  await q.push("c");
  assert.equal((await soon(popping, "the pop")).value, "c");

  const delayed = await q.push("later", { delayMs: 1_000 });
  assert.ok(delayed.deliverAtMs > 0);
  assert.equal((await q.length()).delayed, 1);
  assert.equal((await soon(q.pop(), "a delayed pop")).value, "later");

  const s = await session();
  await q.push("leased");
  const held = await client.queue(n("jobs"), { session: s }).reserve({ untilLeaseEnds: true });
  assert.equal(held.value, "leased");
  assert.equal(held.visibleAtMs, undefined);
  await held.ack();
});

test("priority queue: lowest priority first, dequeue waits", async () => {
  const pq = client.priorityQueue(n("pjobs"));
  await pq.enqueue("low", 5);
  await pq.enqueue("high", 1);
  assert.equal((await pq.dequeue()).value, "high");
  assert.equal((await pq.dequeue()).value, "low");
  const waiting = pq.dequeue();
  await stillWaiting(waiting, "a dequeue on an empty queue");
  await pq.enqueue(n("x"), 3);
  const item = await soon(waiting, "the dequeue");
  assert.equal(item.value, n("x"));
  assert.equal(item.priority, 3);
});

test("registry: register, list, changes as an async iterator", async () => {
  const [a, b] = [await session(), await client.session({ ttl: TTL_S })];
  const web = (s) => client.registry(n("web"), { session: s });
  const registered = await web(a).register("10.0.0.1:80", { zone: "a" });
  assert.equal(registered.key, `${n("web")}/10.0.0.1:80`);
  const listing = await web(a).list();
  assert.deepEqual(listing.instances.map((i) => i.instance), ["10.0.0.1:80"]);
  assert.deepEqual(listing.instances[0].meta, { zone: "a" });

  const abort = new AbortController();
  const changes = web(a).changes({ sinceRevision: listing.revision, signal: abort.signal })[Symbol.asyncIterator]();
  // A change may be reported twice (the module's revisions are conservative): read until seen.
  const nextWhere = async (what, seen) => {
    for (;;) {
      const change = (await soon(changes.next(), what)).value;
      if (seen(change)) return change;
    }
  };
  const registering = nextWhere("a registration", (c) => c.came.some((i) => i.instance === "10.0.0.2:80"));
  await web(b).register("10.0.0.2:80", { zone: "b" });
  const came = await registering;
  assert.deepEqual(came.came.find((i) => i.instance === "10.0.0.2:80").meta, { zone: "b" });
  assert.equal(typeof came.came[0].lease, "bigint", "lease ids are exact");
  // Closing the session revokes its lease: the instance goes with it.
  await b.close();
  const went = await nextWhere("a departure", (c) => c.went.length > 0);
  assert.deepEqual(went.went, ["10.0.0.2:80"]);
  abort.abort();
  assert.equal((await changes.next()).done, true);
});

test("a session's lease revoked from outside surfaces as LeaseLost", async () => {
  const s = await session(5);
  const held = await client.lock(n("lost-db"), { session: s });
  let heard;
  s.onLost((e) => {
    heard = e;
  });
  const other = new Client({ endpoints: cluster.endpoints.slice().reverse(), timeoutMs: 10_000 });
  try {
    await other.revokeLease(s.lease);
  } finally {
    await other.close();
  }
  const reason = await soon(s.lost, "the session noticing its lease is gone");
  assert.ok(reason instanceof LeaseLost);
  assert.ok(s.isLost);
  await until("the onLost listener", () => heard === reason, WAKE_MS);
  await assert.rejects(client.lock(n("lost-db"), { session: s }), LeaseLost);
  await assert.rejects(client.election(n("lost-e"), { session: s }).campaign(n("x")), LeaseLost);
  // What the lease held went with it: the old holder's fenced writes are refused.
  await assert.rejects(held.fencedPut(n("lost-k"), "late"), StaleFencingToken);
  const ttl = await client.leaseTimeToLive(s.lease);
  assert.equal(ttl.ttlS, -1);
});

// Last: it kills a member. When the member a client uses is SIGKILLed, reads and writes continue
// on another endpoint, a dead endpoint first in the list is skipped for a write (nothing was
// sent, so the rule allows it), and a session's keep-alives move with the client, so its lease
// outlives its TTL across the failure.
describe("failover", { skip: process.env.BATON_TEST_ENDPOINTS ? "needs a cluster the tests started" : false }, () => {
  // Above an election on a loaded machine: when the killed member led, keep-alives go unanswered
  // until a new leader is elected, and a session counts itself lost after a TTL of silence.
  const SESSION_TTL_S = 8;
  /** Generous: after a kill the survivors may have to elect a leader on a loaded machine. */
  const TIMEOUT_MS = 20_000;
  test("killing the member in use moves calls and keep-alives to another", async () => {
    const session = await client.session({ ttl: SESSION_TTL_S });
    const held = await client.lock(n("failover-db"), { session });
    await client.counter.add(n("failover"), 1);
    const used = client.endpoint;
    const victim = cluster.indexOf(used);
    assert.ok(victim >= 0, `the client uses a cluster member (${used})`);

    await cluster.kill(victim);
    // A read moves on after any UNAVAILABLE; the write after it goes to the member it found.
    assert.ok((await client.modules.list()).length > 0);
    assert.notEqual(client.endpoint, used, "the client moved to another endpoint");
    assert.deepEqual(await client.counter.add(n("failover"), 1), { [n("failover")]: 2 });
    assert.ok(await held.fencedPut(n("failover-k"), "after the kill") > 0, "the lock outlived the kill");

    // Past the TTL, the lease is alive only if keep-alives reached another member.
    await sleep(SESSION_TTL_S * 1000 * 1.5);
    assert.equal(session.isLost, false, "the session survived its member's death");
    const ttl = await client.leaseTimeToLive(session.lease);
    assert.ok(ttl.ttlS > 0, `the lease is alive (TTL ${ttl.ttlS})`);
    await session.close();
    const gone = await client.leaseTimeToLive(session.lease);
    assert.equal(gone.ttlS, -1, "close() revoked the lease");
  });

  test("a write skips a dead endpoint listed first", async () => {
    const dead = cluster.members.find((m) => m.child.exitCode !== null || m.child.signalCode !== null);
    assert.ok(dead, "the previous test left one member dead");
    const live = cluster.endpoints.filter((e) => e !== dead.endpoint);
    const fresh = new Client({ endpoints: [dead.endpoint, ...live], timeoutMs: TIMEOUT_MS });
    try {
      assert.deepEqual(await fresh.counter.add(n("skip"), 5), { [n("skip")]: 5 });
      assert.notEqual(fresh.endpoint, dead.endpoint);
    } finally {
      await fresh.close();
    }
  });
});
