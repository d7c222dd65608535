// Failover against a real 3-member cluster: when the member a client uses is SIGKILLed, reads
// and writes continue on another endpoint, a dead endpoint first in the list is skipped for a
// write (nothing was sent, so the rule allows it), and a session's keep-alives move with the
// client, so its lease outlives its TTL across the failure.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Client } from "../dist/index.js";
import { Cluster, sleep } from "./cluster.mjs";

/** Generous: after a kill the survivors may have to elect a leader on a loaded machine. */
const TIMEOUT_MS = 20_000;
const SESSION_TTL_S = 3;

let cluster;
let client;

before(async () => {
  cluster = await Cluster.start();
  client = new Client({ endpoints: cluster.endpoints, timeoutMs: TIMEOUT_MS });
});

after(async () => {
  await client?.close();
  await cluster?.stop();
});

test("killing the member in use moves calls and keep-alives to another", async () => {
  const session = await client.session({ ttl: SESSION_TTL_S });
  const held = await client.lock("failover-db", { session });
  await client.counter.add("failover", 1);
  const used = client.endpoint;
  const victim = cluster.indexOf(used);
  assert.ok(victim >= 0, `the client uses a cluster member (${used})`);

  await cluster.kill(victim);
  // A read moves on after any UNAVAILABLE; the write after it goes to the member it found.
  assert.ok((await client.modules.list()).length > 0);
  assert.notEqual(client.endpoint, used, "the client moved to another endpoint");
  assert.deepEqual(await client.counter.add("failover", 1), { failover: 2 });
  assert.ok(await held.fencedPut("failover-k", "after the kill") > 0, "the lock outlived the kill");

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
    assert.deepEqual(await fresh.counter.add("skip", 5), { skip: 5 });
    assert.notEqual(fresh.endpoint, dead.endpoint);
  } finally {
    await fresh.close();
  }
});
