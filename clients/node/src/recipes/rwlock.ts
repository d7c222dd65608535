// The `rwlock` module: many readers or one writer, in etcd's `recipe.RWMutex` layout; a writer
// is never starved by readers that arrive after it.

import type { Client } from "../client.js";
import type { Session } from "../session.js";
import { Recipe, keyOf, type WaitOptions } from "./base.js";

/** A held read or write lock. */
export interface HeldRWLock {
  /** `<name>/read/<lease hex>` or `<name>/write/<lease hex>`. */
  key: string;
  release(): Promise<void>;
}

export class RWLock extends Recipe {
  readonly name: string;

  constructor(client: Client, name: string, session?: Session) {
    super(client, "rwlock", session);
    this.name = name;
  }

  /** Waits until no writer holds or waits ahead of this reader. */
  readLock(options: WaitOptions = {}): Promise<HeldRWLock> {
    return this.take("rlock", "runlock", options);
  }

  /** Waits until nobody else holds or waits ahead. */
  writeLock(options: WaitOptions = {}): Promise<HeldRWLock> {
    return this.take("lock", "unlock", options);
  }

  private async take(fn: string, undo: string, options: WaitOptions): Promise<HeldRWLock> {
    const session = await this.session();
    const reply = await this.client.call<{ key?: string; key_hex?: string }>(
      "rwlock",
      fn,
      { name: this.name },
      { ...Recipe.waiting(options), lease: session },
    );
    const name = this.name;
    const client = this.client;
    return {
      key: keyOf(reply),
      async release(): Promise<void> {
        await client.call("rwlock", undo, { name }, { lease: session });
      },
    };
  }
}
