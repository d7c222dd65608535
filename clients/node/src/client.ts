// The client: modules (deploy, list, describe, delete, call), leases and sessions, and the typed
// recipe helpers over the built-in modules (one file each under recipes/). Calls go through
// `Transport`, which owns failover; this file owns deadlines, JSON and lease plumbing.

import { Status, toBatonError, InvalidArgument } from "./errors.js";
import { Session } from "./session.js";
import { Transport } from "./transport.js";
import { Barrier, DoubleBarrier } from "./recipes/barrier.js";
import { Counter } from "./recipes/counter.js";
import { Election } from "./recipes/election.js";
import { HeldLock, Lock, type LockOptions } from "./recipes/lock.js";
import { PriorityQueue, Queue } from "./recipes/queue.js";
import { Registry } from "./recipes/registry.js";
import { RWLock } from "./recipes/rwlock.js";
import { Semaphore } from "./recipes/semaphore.js";

/** A client's default per-call deadline. */
export const DEFAULT_TIMEOUT_MS = 5_000;
/** The TTL of the session recipes use when given none: etcd's concurrency default. */
export const DEFAULT_SESSION_TTL_S = 60;

export interface ClientOptions {
  /** `host:port` (or `http://host:port`) of one or more members. */
  endpoints: string[];
  /** Deadline of each call that does not wait (default 5 s); also bounds looking for a live endpoint. */
  timeoutMs?: number;
}

/** A lease id, or a session whose lease to use. */
export type LeaseLike = bigint | number | string | Session;

export interface CallOptions {
  /** Lease the call may attach keys to (recipes: the caller's session). */
  lease?: LeaseLike;
  /** Run without a log entry on the member serving the call; the module must only read. */
  readOnly?: boolean;
  /** Deadline for this call; `Infinity` waits as long as the module does. */
  timeoutMs?: number;
  /** Input and output are bytes (Buffer) instead of JSON. */
  raw?: boolean;
  /** Call this version (lowercase hex SHA-256) instead of the name's latest. */
  hash?: string;
  /** Fuel budget; the server's default when unset. */
  fuel?: number;
  /** Cancels the call (it fails with code CANCELLED). */
  signal?: AbortSignal;
}

/** Options of a call whose input and output are JSON. */
export type JsonCallOptions = Omit<CallOptions, "raw"> & { raw?: false };

/** What a call returned, whole. */
export interface InvokeResult {
  output: Buffer;
  /** The store's revision after the call's last run. */
  revision: bigint;
  fuelUsed: bigint;
  /** 1, plus one per wait the call ended. */
  runs: number;
}

export interface ModuleVersion {
  version: bigint;
  hash: string;
  sizeBytes: bigint;
  exports: string[];
  builtin: boolean;
  builtinSet: number;
}

export interface ModuleInfo {
  name: string;
  /** Oldest first; the last is what a call by name runs. */
  versions: ModuleVersion[];
}

export interface LeaseInfo {
  id: bigint;
  /** Seconds left; -1 once the lease is gone. */
  ttlS: number;
  grantedTtlS: number;
}

interface RawVersion {
  version: string;
  hash: string;
  size_bytes: string;
  exports: string[];
  builtin: boolean;
  builtin_set: number;
}

interface RawModuleInfo {
  name: string;
  versions: RawVersion[];
}

function moduleInfo(raw: RawModuleInfo): ModuleInfo {
  return {
    name: raw.name,
    versions: raw.versions.map((v) => ({
      version: BigInt(v.version),
      hash: v.hash,
      sizeBytes: BigInt(v.size_bytes),
      exports: v.exports,
      builtin: v.builtin,
      builtinSet: v.builtin_set,
    })),
  };
}

/** Module management: `client.modules`. */
export class Modules {
  private readonly client: Client;

  constructor(client: Client) {
    this.client = client;
  }

  /** Stores a component as the next version of `name`; returns its hash and version. */
  async deploy(name: string, component: Uint8Array): Promise<{ hash: string; version: bigint }> {
    const reply = await this.client.rpc<{ hash: string; version: string }>(
      "modules",
      "Deploy",
      { name, component: Buffer.from(component) },
      { idempotent: false },
    );
    return { hash: reply.hash, version: BigInt(reply.version) };
  }

  async list(): Promise<ModuleInfo[]> {
    const reply = await this.client.rpc<{ modules: RawModuleInfo[] }>("modules", "List", {}, {
      idempotent: true,
    });
    return reply.modules.map(moduleInfo);
  }

  /** Throws `NotFound` for an unknown name. */
  async describe(name: string): Promise<ModuleInfo> {
    return moduleInfo(
      await this.client.rpc<RawModuleInfo>("modules", "Describe", { name }, { idempotent: true }),
    );
  }

  /** Removes a name (its versions stay callable by hash); returns how many versions it had. */
  async delete(name: string): Promise<bigint> {
    const reply = await this.client.rpc<{ versions: string }>("modules", "Delete", { name }, {
      idempotent: false,
    });
    return BigInt(reply.versions);
  }
}

export class Client {
  readonly timeoutMs: number;
  readonly modules: Modules;
  /** The `counter` module. */
  readonly counter: Counter;
  private readonly transport: Transport;
  private defaultSessionPromise: Promise<Session> | undefined;

  constructor(options: ClientOptions) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.transport = new Transport(options.endpoints, this.timeoutMs);
    this.modules = new Modules(this);
    this.counter = new Counter(this);
  }

  /** The endpoint calls go to now (it changes on failover). */
  get endpoint(): string {
    return this.transport.endpoint;
  }

  /** One unary call with the failover rule; `timeoutMs` defaults to the client's. */
  async rpc<T>(
    service: "modules" | "kv" | "lease" | "maintenance",
    method: string,
    request: object,
    options: { idempotent: boolean; timeoutMs?: number; signal?: AbortSignal },
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    return this.transport.unary<T>(service, method, request, {
      deadline: Date.now() + timeoutMs,
      idempotent: options.idempotent,
      signal: options.signal,
    });
  }

  /** Calls `fn` of `module` and returns its whole answer (output as bytes). */
  async invoke(
    module: string,
    fn: string,
    input: Uint8Array | string,
    options: Omit<CallOptions, "raw"> = {},
  ): Promise<InvokeResult> {
    if (options.lease instanceof Session) {
      options.lease.check();
    }
    const request = {
      name: options.hash === undefined ? module : "",
      hash: options.hash ?? "",
      function: fn,
      input: Buffer.from(input),
      lease: leaseId(options.lease).toString(),
      fuel: String(options.fuel ?? 0),
      read_only: options.readOnly ?? false,
    };
    const reply = await this.rpc<{ output: Buffer; revision: string; fuel_used: string; runs: number }>(
      "modules",
      "Invoke",
      request,
      { idempotent: options.readOnly ?? false, timeoutMs: options.timeoutMs, signal: options.signal },
    );
    return {
      output: reply.output,
      revision: BigInt(reply.revision),
      fuelUsed: BigInt(reply.fuel_used),
      runs: reply.runs,
    };
  }

  /**
   * Calls `fn` of `module`: `input` is sent as JSON and the output parsed as JSON (`null` for an
   * empty output), or both are bytes with `raw: true`.
   */
  async call<T = any>(module: string, fn: string, input?: unknown, options?: JsonCallOptions): Promise<T>;
  async call(module: string, fn: string, input: Uint8Array | string, options: CallOptions & { raw: true }): Promise<Buffer>;
  async call(module: string, fn: string, input: unknown = {}, options: CallOptions = {}): Promise<unknown> {
    if (options.raw) {
      if (typeof input !== "string" && !(input instanceof Uint8Array)) {
        throw new InvalidArgument(Status.INVALID_ARGUMENT, "a raw call takes a string or bytes");
      }
      return (await this.invoke(module, fn, input, options)).output;
    }
    const result = await this.invoke(module, fn, JSON.stringify(input), options);
    if (result.output.length === 0) {
      return null;
    }
    try {
      return parseJson(result.output.toString("utf8"));
    } catch (e) {
      throw toBatonError({ code: Status.INTERNAL, details: `${module} ${fn} answered non-JSON: ${String(e)}` });
    }
  }

  /** Grants a lease of `ttlS` seconds (not kept alive: see `session`). */
  async grantLease(ttlS: number): Promise<LeaseInfo> {
    const reply = await this.rpc<{ ID: string; TTL: string; error: string }>(
      "lease",
      "LeaseGrant",
      { TTL: String(ttlS), ID: "0" },
      { idempotent: false },
    );
    if (reply.error) {
      throw toBatonError({ code: Status.UNKNOWN, details: reply.error });
    }
    return { id: BigInt(reply.ID), ttlS: Number(reply.TTL), grantedTtlS: Number(reply.TTL) };
  }

  /** Revokes a lease, deleting every key attached to it. Throws `LeaseLost` if it is already gone. */
  async revokeLease(lease: LeaseLike): Promise<void> {
    await this.rpc("lease", "LeaseRevoke", { ID: leaseId(lease).toString() }, { idempotent: true });
  }

  /** A lease's remaining TTL (-1 when it is gone). */
  async leaseTimeToLive(lease: LeaseLike): Promise<LeaseInfo> {
    const reply = await this.rpc<{ ID: string; TTL: string; grantedTTL: string }>(
      "lease",
      "LeaseTimeToLive",
      { ID: leaseId(lease).toString(), keys: false },
      { idempotent: true },
    );
    return { id: BigInt(reply.ID), ttlS: Number(reply.TTL), grantedTtlS: Number(reply.grantedTTL) };
  }

  /** Grants a lease of `ttl` seconds and keeps it alive until `close()` or until it is lost. */
  async session(options: { ttl?: number } = {}): Promise<Session> {
    const granted = await this.grantLease(options.ttl ?? DEFAULT_SESSION_TTL_S);
    return new Session(this.transport, granted.id, granted.grantedTtlS);
  }

  /**
   * The session recipes use when given none: created on first use, replaced once lost (what
   * it held is gone with it), revoked by `close()`.
   */
  async defaultSession(): Promise<Session> {
    const current = this.defaultSessionPromise;
    if (current !== undefined) {
      const session = await current.catch(() => undefined);
      if (session !== undefined && !session.isLost) {
        return session;
      }
      if (this.defaultSessionPromise !== current) {
        return this.defaultSession();
      }
    }
    const fresh = this.session();
    this.defaultSessionPromise = fresh;
    return fresh;
  }

  /** Waits for the lock `name` (with the session's lease) and returns it held. */
  async lock(name: string, options: LockOptions = {}): Promise<HeldLock> {
    return new Lock(this, name).acquire(options);
  }

  /** Takes the lock `name` if it is free, or returns null at once. */
  async tryLock(name: string, options: LockOptions = {}): Promise<HeldLock | null> {
    return new Lock(this, name).tryAcquire(options);
  }

  /** Runs `fn` holding the lock `name`, releasing it however `fn` ends. */
  async withLock<T>(name: string, fn: (held: HeldLock) => Promise<T> | T, options: LockOptions = {}): Promise<T> {
    const held = await this.lock(name, options);
    try {
      return await fn(held);
    } finally {
      await held.release().catch(() => undefined);
    }
  }

  election(name: string, options: { session?: Session } = {}): Election {
    return new Election(this, name, options.session);
  }

  semaphore(name: string, permits: number, options: { session?: Session } = {}): Semaphore {
    return new Semaphore(this, name, permits, options.session);
  }

  rwlock(name: string, options: { session?: Session } = {}): RWLock {
    return new RWLock(this, name, options.session);
  }

  barrier(name: string, options: { session?: Session } = {}): Barrier {
    return new Barrier(this, name, options.session);
  }

  doubleBarrier(name: string, count: number, options: { session?: Session } = {}): DoubleBarrier {
    return new DoubleBarrier(this, name, count, options.session);
  }

  queue(name: string, options: { session?: Session } = {}): Queue {
    return new Queue(this, name, options.session);
  }

  priorityQueue(name: string): PriorityQueue {
    return new PriorityQueue(this, name);
  }

  registry(service: string, options: { session?: Session } = {}): Registry {
    return new Registry(this, service, options.session);
  }

  /** Revokes the default session (if any) and closes every connection. */
  async close(): Promise<void> {
    const session = this.defaultSessionPromise;
    this.defaultSessionPromise = undefined;
    if (session !== undefined) {
      await session.then((s) => s.close()).catch(() => undefined);
    }
    this.transport.close();
  }
}

/** A lease field's integer, kept exact: lease ids go past 2^53. */
const LEASE_FIELD = /"lease":(-?\d+)/g;

/**
 * JSON.parse, except that every `"lease"` field holding an integer becomes a bigint (the
 * pattern cannot match inside a string, where quotes are escaped).
 */
export function parseJson(text: string): unknown {
  const quoted = text.replace(LEASE_FIELD, '"lease":"$1"');
  return JSON.parse(quoted, (key, value) =>
    key === "lease" && typeof value === "string" && /^-?\d+$/.test(value) ? BigInt(value) : value,
  );
}

export function leaseId(lease: LeaseLike | undefined): bigint {
  if (lease === undefined) {
    return 0n;
  }
  if (lease instanceof Session) {
    return lease.lease;
  }
  return BigInt(lease);
}
