// The `barrier` and `double-barrier` modules, in etcd's `recipe.Barrier` and
// `recipe.DoubleBarrier` layouts.

import type { Client } from "../client.js";
import type { Session } from "../session.js";
import { Recipe, keyOf, type WaitOptions } from "./base.js";

/** One key that blocks waiters while it exists. */
export class Barrier extends Recipe {
  readonly name: string;
  private readonly holderSession: Session | undefined;

  constructor(client: Client, name: string, session?: Session) {
    super(client, "barrier", session);
    this.name = name;
    this.holderSession = session;
  }

  /**
   * Closes the barrier. With a session (given to `client.barrier`), the barrier opens by itself
   * when the session's lease ends; without one it stays closed until `release`. Returns whether
   * this call created it.
   */
  async hold(): Promise<boolean> {
    const options = this.holderSession === undefined ? {} : { lease: this.holderSession };
    this.holderSession?.check();
    const reply = await this.plain<{ created: boolean }>("hold", { name: this.name }, options);
    return reply.created;
  }

  /** Opens the barrier. */
  async release(): Promise<void> {
    await this.plain("release", { name: this.name });
  }

  /** Waits until the barrier is open (a read-only call: no log entries while it waits). */
  async wait(options: WaitOptions = {}): Promise<void> {
    await this.plain("wait", { name: this.name }, { ...Recipe.waiting(options), readOnly: true });
  }
}

/** `enter` waits until `count` callers have entered; `leave` until all have left. */
export class DoubleBarrier extends Recipe {
  readonly name: string;
  readonly count: number;

  constructor(client: Client, name: string, count: number, session?: Session) {
    super(client, "double-barrier", session);
    this.name = name;
    this.count = count;
  }

  /** Waits until `count` callers have entered; returns this caller's key. */
  async enter(options: WaitOptions = {}): Promise<string> {
    const input = { name: this.name, count: this.count };
    return keyOf(await this.leased("enter", input, Recipe.waiting(options)));
  }

  /** Waits until every caller has left. */
  async leave(options: WaitOptions = {}): Promise<void> {
    await this.leased("leave", { name: this.name }, Recipe.waiting(options));
  }
}
