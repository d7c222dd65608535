// The `semaphore` module: `permits` holders at once, first come first served, each grant with
// its own fencing token. Every caller must name the same permit count.

import type { Client } from "../client.js";
import type { Session } from "../session.js";
import { Recipe, keyOf, type WaitOptions } from "./base.js";

interface Grant {
  key?: string;
  key_hex?: string;
  token: number;
  acquired?: boolean;
}

export interface SemaphoreHolders {
  permits: number;
  holders: { key: string; lease: bigint; token: number }[];
  waiting: number;
}

export class Semaphore extends Recipe {
  readonly name: string;
  readonly permits: number;

  constructor(client: Client, name: string, permits: number, session?: Session) {
    super(client, "semaphore", session);
    this.name = name;
    this.permits = permits;
  }

  /** Waits for a permit. */
  async acquire(options: WaitOptions = {}): Promise<Permit> {
    const session = await this.session();
    const grant = await this.client.call<Grant>("semaphore", "acquire", this.input(), {
      ...Recipe.waiting(options),
      lease: session,
    });
    return new Permit(this.client, this.name, keyOf(grant), grant.token, session);
  }

  /** A permit if one is free, else null at once (without queueing). */
  async tryAcquire(): Promise<Permit | null> {
    const session = await this.session();
    const grant = await this.client.call<Grant>("semaphore", "try-acquire", this.input(), {
      lease: session,
    });
    return grant.acquired ? new Permit(this.client, this.name, keyOf(grant), grant.token, session) : null;
  }

  /** Who holds a permit now, and how many wait (a read-only call). */
  async holders(): Promise<SemaphoreHolders> {
    return this.plain<SemaphoreHolders>("holders", { name: this.name }, { readOnly: true });
  }

  private input(): object {
    return { name: this.name, permits: this.permits };
  }
}

/** A granted permit. */
export class Permit {
  readonly name: string;
  readonly key: string;
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

  /** Puts `key` = `value` only while this permit is still held; returns the write's revision. */
  async fencedPut(key: string, value: string): Promise<number> {
    const input = { name: this.name, token: this.token, key, value };
    const reply = await this.client.call<{ revision: number }>("semaphore", "fenced-put", input, {
      lease: this.session.lease,
    });
    return reply.revision;
  }

  async release(): Promise<void> {
    await this.client.call("semaphore", "release", { name: this.name }, { lease: this.session });
  }
}
