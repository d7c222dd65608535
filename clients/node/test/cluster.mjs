// Starts a real 3-member Baton cluster for a test file, as the Rust e2e harness does
// (tests/src/backend.rs): free ports, one data dir per member, then waits until a leader exists
// and the built-in modules are deployed. `stop()` kills every member; so does this process's
// exit, so a failing test leaves nothing running.

import { spawn } from "node:child_process";
import { mkdtempSync, openSync, rmSync, existsSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "../dist/index.js";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
/** The server under test: BATON_BIN, else the workspace's debug build. */
export const BATON_BIN = process.env.BATON_BIN ?? join(REPO_ROOT, "target", "debug", "baton");
/** Generous: members share two loaded cores with other test runs. */
const READY_TIMEOUT_MS = 120_000;
const POLL_MS = 100;
/** Every module the server deploys itself (docs/modules.md). */
export const BUILTIN_MODULES = [
  "barrier",
  "compare-and-move",
  "counter",
  "double-barrier",
  "election",
  "lock",
  "priority-queue",
  "queue",
  "registry",
  "rwlock",
  "semaphore",
];

const running = new Set();
function killAll() {
  for (const child of running) child.kill("SIGKILL");
}
process.on("exit", killAll);
// The test runner ends a file that overran with a signal: take the members along.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    killAll();
    process.exit(1);
  });
}

/** A port nothing listens on now (bound to 0, then released). */
function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe` until it returns a truthy value; throws with `what` after `timeoutMs`. */
export async function until(what, probe, timeoutMs = READY_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await sleep(POLL_MS);
  }
}

export class Cluster {
  constructor(dir, members) {
    this.dir = dir;
    this.members = members; // [{ name, endpoint, args, child }]
  }

  get endpoints() {
    return this.members.map((m) => m.endpoint);
  }

  static async start(size = 3) {
    if (!existsSync(BATON_BIN)) {
      throw new Error(`no server binary at ${BATON_BIN}: build it or set BATON_BIN`);
    }
    const dir = mkdtempSync(join(tmpdir(), "baton-node-"));
    const members = [];
    for (let i = 0; i < size; i++) {
      members.push({ name: `m${i}`, client: await freePort(), peer: await freePort() });
    }
    const initial = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(",");
    for (const m of members) {
      m.endpoint = `127.0.0.1:${m.client}`;
      m.args = [
        "serve",
        "--name", m.name,
        "--listen-client-urls", `http://127.0.0.1:${m.client}`,
        "--listen-peer-urls", `http://127.0.0.1:${m.peer}`,
        "--initial-cluster", initial,
        "--data-dir", join(dir, m.name),
      ];
    }
    const cluster = new Cluster(dir, members);
    for (let i = 0; i < size; i++) cluster.spawn(i);
    try {
      await cluster.ready();
    } catch (e) {
      const logs = members.map((m) => `--- ${m.name}\n${cluster.logTail(m.name)}`).join("\n");
      await cluster.stop();
      throw new Error(`${e.message}\n${logs}`);
    }
    return cluster;
  }

  spawn(i) {
    const m = this.members[i];
    const log = openSync(join(this.dir, `${m.name}.log`), "a");
    m.child = spawn(BATON_BIN, m.args, { stdio: ["ignore", log, log] });
    m.exited = new Promise((r) => m.child.once("exit", r));
    running.add(m.child);
    m.child.once("exit", () => running.delete(m.child));
  }

  logTail(name) {
    try {
      return readFileSync(join(this.dir, `${name}.log`), "utf8").split("\n").slice(-20).join("\n");
    } catch {
      return "(no log)";
    }
  }

  /** Waits until every live member sees a leader and the built-ins are deployed. */
  async ready() {
    const clients = this.members.filter((m) => m.child.exitCode === null).map((m) => new Client({ endpoints: [m.endpoint], timeoutMs: 2_000 }));
    try {
      for (const client of clients) {
        await until(`a leader seen by ${client.endpoint}`, async () => {
          const status = await client.rpc("maintenance", "Status", {}, { idempotent: true });
          return status.leader !== "0";
        });
      }
      await until("the built-in modules", async () => {
        const names = new Set((await clients[0].modules.list()).map((m) => m.name));
        return BUILTIN_MODULES.every((n) => names.has(n));
      });
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }

  /** The index of the member that leads now. */
  async leaderIndex() {
    const client = new Client({ endpoints: this.endpoints, timeoutMs: 2_000 });
    try {
      const status = await client.rpc("maintenance", "Status", {}, { idempotent: true });
      for (let i = 0; i < this.members.length; i++) {
        const one = new Client({ endpoints: [this.members[i].endpoint], timeoutMs: 2_000 });
        try {
          const own = await one.rpc("maintenance", "Status", {}, { idempotent: true }).catch(() => undefined);
          if (own && own.header.member_id === status.leader) return i;
        } finally {
          await one.close();
        }
      }
      throw new Error(`no member has id ${status.leader}`);
    } finally {
      await client.close();
    }
  }

  /** Kills member `i` (SIGKILL by default) and waits for it to exit. */
  async kill(i, signal = "SIGKILL") {
    const m = this.members[i];
    if (m.child.exitCode === null && m.child.signalCode === null) {
      m.child.kill(signal);
      await m.exited;
    }
  }

  /** The index of the member at `endpoint`. */
  indexOf(endpoint) {
    return this.members.findIndex((m) => m.endpoint === endpoint);
  }

  async stop() {
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
