// The `counter` module: several counters added to in one atomic call; values are decimal strings
// any etcd client reads.

import type { Client } from "../client.js";
import { Recipe, type WaitOptions } from "./base.js";

export interface CounterGetOptions extends WaitOptions {
  /** Wait until every listed counter reaches this value (a countdown latch). */
  atLeast?: number;
}

export class Counter extends Recipe {
  constructor(client: Client) {
    super(client, "counter", undefined);
  }

  /** Adds `by` (default 1) to each key; returns their new values. */
  async add(keys: string | string[], by = 1): Promise<Record<string, number>> {
    return this.plain("add", { keys: typeof keys === "string" ? [keys] : keys, by });
  }

  /** The counters' values (0 for a missing one), read-only; with `atLeast`, waits for them. */
  async get(keys: string | string[], options: CounterGetOptions = {}): Promise<Record<string, number>> {
    const input: Record<string, unknown> = { keys: typeof keys === "string" ? [keys] : keys };
    const callOptions = options.atLeast === undefined ? { signal: options.signal, timeoutMs: options.timeoutMs } : Recipe.waiting(options);
    if (options.atLeast !== undefined) input.at_least = options.atLeast;
    return this.plain("get", input, { ...callOptions, readOnly: true });
  }
}
