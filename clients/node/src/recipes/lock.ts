// The `lock` module: a fenced mutex in etcd's layout. `Lock.acquire` waits server-side for its
// turn and returns a `HeldLock` whose token fences writes: `fencedPut`/`fencedTxn` commit only
// while the token is still the holder's, else they fail with `StaleFencingToken`.

import type { Client } from "../client.js";
import type { Session } from "../session.js";
import { Recipe, keyOf, type WaitOptions } from "./base.js";

export interface LockOptions extends WaitOptions {
  /** The session whose lease holds the lock (default: the client's default session). */
  session?: Session;
  /** After a holder's lease ends, keep the lock free this long before granting it (see the module). */
  lockDelayMs?: number;
}

/** One write of a fenced transaction. */
export type FencedOp = { put: string; value: string } | { delete: string };

interface Grant {
  key?: string;
  key_hex?: string;
  token: number;
  acquired?: boolean;
  holder_token?: number;
}

export class Lock extends Recipe {
  readonly name: string;

  constructor(client: Client, name: string, session?: Session) {
    super(client, "lock", session);
    this.name = name;
  }

  /** Waits until the lock is this session's. */
  async acquire(options: LockOptions = {}): Promise<HeldLock> {
    const session = options.session ?? (await this.session());
    session.check();
    const grant = await this.client.call<Grant>("lock", "acquire", this.input(options), {
      ...Recipe.waiting(options),
      lease: session,
    });
    return new HeldLock(this.client, this.name, keyOf(grant), grant.token, session);
  }

  /** Takes the lock if it is free; null at once if someone holds it. */
  async tryAcquire(options: LockOptions = {}): Promise<HeldLock | null> {
    const session = options.session ?? (await this.session());
    session.check();
    const grant = await this.client.call<Grant>("lock", "try-acquire", this.input(options), {
      lease: session,
    });
    if (!grant.acquired) {
      return null;
    }
    return new HeldLock(this.client, this.name, keyOf(grant), grant.token, session);
  }

  private input(options: LockOptions): object {
    return options.lockDelayMs === undefined
      ? { name: this.name }
      : { name: this.name, lock_delay_ms: options.lockDelayMs };
  }
}

/** A granted lock. */
export class HeldLock {
  readonly name: string;
  /** The owner key, `<name>/<lease hex>`. */
  readonly key: string;
  /** The fencing token: the owner key's create revision; only grows. */
  readonly token: number;
  readonly session: Session;
  private readonly client: Client;

  constructor(client: Client, name: string, key: string, token: number, session: Session) {
    this.client = client;
    this.name = name;
    this.key = key;
    this.token = token;
    this.session = session;
  }

  /** Puts `key` = `value` only while this is still the holder; returns the write's revision. */
  async fencedPut(key: string, value: string): Promise<number> {
    const reply = await this.client.call<{ revision: number }>(
      "lock",
      "fenced-put",
      { name: this.name, token: this.token, key, value },
      { lease: this.session.lease },
    );
    return reply.revision;
  }

  /** Applies every op or none, only while this is still the holder. */
  async fencedTxn(ops: FencedOp[]): Promise<number> {
    const reply = await this.client.call<{ revision: number }>(
      "lock",
      "fenced-txn",
      { name: this.name, token: this.token, ops },
      { lease: this.session.lease },
    );
    return reply.revision;
  }

  /** Gives the lock up (the next waiter gets it). */
  async release(): Promise<void> {
    this.session.check();
    await this.client.call("lock", "release", { name: this.name }, { lease: this.session });
  }
}
