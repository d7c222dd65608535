// Checks that need no cluster: the package's proto copy matches host/proto, the error table maps
// codes and messages to the documented classes, and grpc-js still words a call that never left
// the client the way the failover rule recognises.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";

import { COPY_DIR, PROTOS, SOURCE_DIR } from "../scripts/sync-protos.mjs";
import {
  BatonError,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  LeaseLost,
  NotFound,
  ResourceExhausted,
  StaleFencingToken,
  Status,
  Unavailable,
  toBatonError,
} from "../dist/index.js";
import { neverSent } from "../dist/transport.js";

test("the package's protos are identical to host/proto (run `npm run sync-protos`)", () => {
  for (const proto of PROTOS) {
    const source = readFileSync(join(SOURCE_DIR, proto), "utf8");
    const copy = readFileSync(join(COPY_DIR, proto), "utf8");
    assert.equal(copy, source, `clients/node/proto/${proto} differs from host/proto/${proto}`);
  }
});

test("statuses map to the documented error classes", () => {
  const cases = [
    [Status.FAILED_PRECONDITION, "lock db: stale fencing token 3 (the holder's is 5)", StaleFencingToken],
    [Status.FAILED_PRECONDITION, "semaphore s: stale fencing token 4 (no holder has it)", StaleFencingToken],
    [Status.FAILED_PRECONDITION, "queue jobs: reservation 7 is not held (acked, nacked or redelivered)", StaleFencingToken],
    [Status.FAILED_PRECONDITION, "election: not leader", StaleFencingToken],
    [Status.FAILED_PRECONDITION, "etcdserver: requested lease not found", LeaseLost],
    [Status.NOT_FOUND, "etcdserver: requested lease not found", LeaseLost],
    [Status.FAILED_PRECONDITION, "read-only call cannot write", FailedPrecondition],
    [Status.NOT_FOUND, "module not found: nope", NotFound],
    [Status.RESOURCE_EXHAUSTED, "fuel exhausted", ResourceExhausted],
    [Status.DEADLINE_EXCEEDED, "Deadline exceeded", DeadlineExceeded],
    [Status.CANCELLED, "Timeout expired", DeadlineExceeded],
    [Status.CANCELLED, "Cancelled on client", BatonError],
    [Status.UNAVAILABLE, "etcdserver: request timed out", Unavailable],
    [Status.INVALID_ARGUMENT, "module imports wasi", InvalidArgument],
    [Status.INTERNAL, "boom", BatonError],
  ];
  for (const [code, details, kind] of cases) {
    const error = toBatonError({ code, details });
    assert.equal(error.constructor, kind, `${Status[code]} ${details}`);
    assert.ok(error instanceof BatonError);
    assert.equal(error.code, code);
    assert.equal(error.details, details);
  }
  assert.ok(toBatonError({ code: Status.FAILED_PRECONDITION, details: "stale fencing token" }) instanceof FailedPrecondition);
});

test("grpc-js reports a call to a dead endpoint as never sent", async () => {
  // A port that was free a moment ago: nothing listens there.
  const { createServer } = await import("node:net");
  const port = await new Promise((ok) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
  const Ctor = grpc.makeGenericClientConstructor({}, "Probe");
  const client = new Ctor(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const error = await new Promise((ok) => {
    client.makeUnaryRequest(
      "/probe.Probe/Call",
      (x) => x,
      (x) => x,
      Buffer.alloc(0),
      { deadline: Date.now() + 10_000 },
      (e) => ok(e),
    );
  });
  client.close();
  assert.equal(error.code, grpc.status.UNAVAILABLE, String(error));
  assert.ok(neverSent(error), `not recognised as never sent: ${error.details}`);
});

test("the README's example type-checks against the package's declarations", () => {
  const tsc = join(COPY_DIR, "..", "node_modules", "typescript", "bin", "tsc");
  const project = join(COPY_DIR, "..", "test", "example", "tsconfig.json");
  const run = spawnSync(process.execPath, [tsc, "-p", project], { encoding: "utf8" });
  assert.equal(run.status, 0, `tsc failed:\n${run.stdout}${run.stderr}`);
});
