// The README's example, type-checked against the built package's declarations by
// test/offline.test.mjs (`npm run typecheck-example`); never run.

import { Client, LeaseLost, StaleFencingToken, type HeldLock, type LeaderInfo } from "@baton/client";

export async function example(): Promise<void> {
  const client = new Client({ endpoints: ["127.0.0.1:2379", "127.0.0.1:22379"], timeoutMs: 5_000 });
  const totals: Record<string, number> = await client.counter.add(["c1", "c2"], 2);
  const raw: Buffer = await client.call("counter", "get", '{"keys":["c1"]}', { raw: true, readOnly: true });
  const json = await client.call<{ c1: number }>("counter", "get", { keys: ["c1"] }, { readOnly: true });

  const session = await client.session({ ttl: 10 });
  session.onLost((e: LeaseLost) => console.error("lease lost:", e.details));
  const held: HeldLock = await client.lock("db", { session, timeoutMs: 30_000 });
  try {
    await held.fencedPut("config", "v2");
  } catch (e) {
    if (e instanceof StaleFencingToken) console.error("no longer the holder");
  } finally {
    await held.release();
  }
  const token: number = await client.withLock("db", async (h) => h.token);

  const election = client.election("leader", { session });
  const leadership = await election.campaign("me");
  await leadership.proclaim("still me");
  for await (const leader of election.observe()) {
    const seen: LeaderInfo = leader;
    if (seen.value === "done") break;
  }
  await leadership.resign();

  const queue = client.queue("jobs");
  await queue.push("job-1", { delayMs: 1_000 });
  const reservation = await queue.reserve({ visibilityMs: 30_000 });
  await reservation.ack();

  for await (const change of client.registry("web", { session }).changes()) {
    console.log(change.revision, change.came.map((i) => i.instance), change.went);
  }
  await session.close();
  await client.close();
  console.log(totals, raw, json, token);
}
