// What every recipe helper shares: which session's lease a call carries (the one given, else
// the client's default session) and the deadline rule (calls that wait server-side have none
// unless the caller gives `timeoutMs`; the rest use the client's).

import type { Client, JsonCallOptions } from "../client.js";
import type { Session } from "../session.js";

/** Options of a call that may wait server-side. */
export interface WaitOptions {
  /** Give up (DeadlineExceeded) after this long; by default the call waits as long as it takes. */
  timeoutMs?: number;
  /** Cancels the wait (the call fails with code CANCELLED; the server cleans up after it). */
  signal?: AbortSignal;
}

export abstract class Recipe {
  protected readonly client: Client;
  protected readonly module: string;
  private readonly explicitSession: Session | undefined;

  protected constructor(client: Client, module: string, session: Session | undefined) {
    this.client = client;
    this.module = module;
    this.explicitSession = session;
  }

  /** The session whose lease this recipe's calls carry. */
  protected async session(): Promise<Session> {
    const session = this.explicitSession ?? (await this.client.defaultSession());
    session.check();
    return session;
  }

  /** A call with the session's lease. */
  protected async leased<T>(fn: string, input: object, options: JsonCallOptions = {}): Promise<T> {
    const session = await this.session();
    return this.client.call<T>(this.module, fn, input, { ...options, lease: session });
  }

  /** A call without a lease. */
  protected plain<T>(fn: string, input: object, options: JsonCallOptions = {}): Promise<T> {
    return this.client.call<T>(this.module, fn, input, options);
  }

  /** Call options for a call that waits. */
  protected static waiting(options: WaitOptions): JsonCallOptions {
    return { timeoutMs: options.timeoutMs ?? Infinity, signal: options.signal };
  }
}

/** A key as the modules answer it: text when UTF-8, else hex. */
export function keyOf(reply: { key?: string; key_hex?: string }): string {
  return reply.key ?? reply.key_hex ?? "";
}
