// The `election` module: leader election in etcd's layout. `campaign` waits server-side until
// the candidate leads and returns a `Leadership` whose token fences `proclaim`; `observe` is an
// async iterator over successive leaders, each step one read-only call that waits server-side.

import type { Client } from "../client.js";
import { NotFound, FailedPrecondition } from "../errors.js";
import type { Session } from "../session.js";
import { Recipe, keyOf, type WaitOptions } from "./base.js";

/** The leader, as `leader` and `observe` describe it. */
export interface LeaderInfo {
  key: string;
  value: string;
  /** The leadership's fencing token (the leader key's create revision). */
  token: number;
  modRevision: number;
  version: number;
  /** The leader's lease id. */
  lease: bigint;
}

interface RawLeader {
  key?: string;
  key_hex?: string;
  value?: string;
  value_hex?: string;
  token: number;
  mod_revision: number;
  version: number;
  lease: bigint;
}

function leaderInfo(raw: RawLeader): LeaderInfo {
  return {
    key: keyOf(raw),
    value: raw.value ?? raw.value_hex ?? "",
    token: raw.token,
    modRevision: raw.mod_revision,
    version: raw.version,
    lease: raw.lease,
  };
}

export class Election extends Recipe {
  readonly name: string;

  constructor(client: Client, name: string, session?: Session) {
    super(client, "election", session);
    this.name = name;
  }

  /** Waits until this session leads, announcing `value`. */
  async campaign(value: string, options: WaitOptions = {}): Promise<Leadership> {
    const session = await this.session();
    const reply = await this.client.call<{ key?: string; key_hex?: string; token: number }>(
      "election",
      "campaign",
      { name: this.name, value },
      { ...Recipe.waiting(options), lease: session },
    );
    return new Leadership(this.client, this.name, keyOf(reply), reply.token, session);
  }

  /** The current leader, or null when there is none (a read-only call). */
  async leader(): Promise<LeaderInfo | null> {
    try {
      return leaderInfo(await this.plain<RawLeader>("leader", { name: this.name }, { readOnly: true }));
    } catch (e) {
      if (e instanceof FailedPrecondition && e.details.includes("election: no leader")) {
        return null;
      }
      throw e;
    }
  }

  /**
   * Every leader from now on: the current one (waiting for one if there is none), then each
   * change of leader or of its value. Ends when `signal` aborts or the loop breaks.
   */
  async *observe(options: { signal?: AbortSignal } = {}): AsyncGenerator<LeaderInfo, void, undefined> {
    let last: RawLeader | undefined;
    for (;;) {
      const input =
        last === undefined
          ? { name: this.name }
          : { name: this.name, key: keyOf(last), mod_revision: last.mod_revision };
      let raw: RawLeader;
      try {
        raw = await this.plain<RawLeader>("observe", input, {
          readOnly: true,
          timeoutMs: Infinity,
          signal: options.signal,
        });
      } catch (e) {
        if (options.signal?.aborted) {
          return;
        }
        throw e;
      }
      last = raw;
      yield leaderInfo(raw);
    }
  }
}

/** This session's leadership. */
export class Leadership {
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

  /** Announces a new value; `StaleFencingToken` once this is no longer the leadership. */
  async proclaim(value: string): Promise<number> {
    const reply = await this.client.call<{ revision: number }>(
      "election",
      "proclaim",
      { name: this.name, token: this.token, value },
      { lease: this.session.lease },
    );
    return reply.revision;
  }

  /** Steps down (succeeds whether or not this still leads). */
  async resign(): Promise<void> {
    try {
      await this.client.call("election", "resign", { name: this.name, token: this.token }, { lease: this.session.lease });
    } catch (e) {
      // A lease already gone took the leader key with it.
      if (!(e instanceof NotFound)) {
        throw e;
      }
    }
  }
}
