// The `registry` module: service registration (an instance lives as long as its session's
// lease) and discovery (`list`, then `changes` as an async iterator of what came and went).

import type { Client } from "../client.js";
import { FailedPrecondition } from "../errors.js";
import type { Session } from "../session.js";
import { Recipe } from "./base.js";

export interface Instance {
  instance: string;
  addr: string;
  meta: unknown;
  lease: bigint;
  mod_revision: number;
}

export interface Listing {
  revision: number;
  instances: Instance[];
}

export interface Change {
  /** Resume from here. */
  revision: number;
  /** Instances added or updated. */
  came: Instance[];
  /** Instances gone. */
  went: string[];
  /** The registry forgot departures past the revision asked for: `came` is the whole list; replace the view. */
  reset?: true;
}

export class Registry extends Recipe {
  readonly service: string;

  constructor(client: Client, service: string, session?: Session) {
    super(client, "registry", session);
    this.service = service;
  }

  /** Registers (or updates) `instance` with the session's lease, so it goes when the session does. */
  async register(instance: string, meta: unknown = {}): Promise<{ key: string; revision: number }> {
    return this.leased("register", { service: this.service, instance, meta });
  }

  async deregister(instance: string): Promise<void> {
    await this.plain("deregister", { service: this.service, instance });
  }

  /** Every live instance (a read-only call). */
  async list(): Promise<Listing> {
    return this.plain<Listing>("list", { service: this.service }, { readOnly: true });
  }

  /**
   * What came and went after `sinceRevision` (default: now), change after change, each step one
   * call that waits server-side. Ends when `signal` aborts or the loop breaks.
   */
  async *changes(
    options: { sinceRevision?: number; signal?: AbortSignal } = {},
  ): AsyncGenerator<Change, void, undefined> {
    let since = options.sinceRevision ?? (await this.list()).revision;
    for (;;) {
      let change: Change;
      try {
        change = await this.plain<Change>(
          "changes",
          { service: this.service, since_revision: since },
          { timeoutMs: Infinity, signal: options.signal },
        );
      } catch (e) {
        if (options.signal?.aborted) {
          return;
        }
        if (!(e instanceof FailedPrecondition && e.details.includes("is compacted"))) {
          throw e;
        }
        const listing = await this.list();
        change = { revision: listing.revision, came: listing.instances, went: [], reset: true };
      }
      since = change.revision;
      yield change;
    }
  }
}
