// The `queue` module (FIFO with delayed delivery and reservations) and the `priority-queue`
// module (etcd's `recipe.PriorityQueue` layout). `pop`, `reserve` and `dequeue` wait
// server-side while nothing is deliverable.

import type { Client } from "../client.js";
import type { Session } from "../session.js";
import { Recipe, type WaitOptions } from "./base.js";

export interface QueueItem {
  /** Where the item lived while ready. */
  key: string;
  value: string;
  /** How many times it was reserved before (absent for a first delivery). */
  deliveries?: number;
}

export interface PushOptions {
  /** Deliver no sooner than this long after the push (leader time). */
  delayMs?: number;
  /** Deliver no sooner than this Unix time in ms (leader time). */
  deliverAtMs?: number;
}

export interface ReserveOptions extends WaitOptions {
  /** The item is redelivered if not acked within this long (the module's default: 30 s). */
  visibilityMs?: number;
  /** Hold the item until the session's lease ends instead of a visibility timeout. */
  untilLeaseEnds?: boolean;
}

export interface QueueLength {
  ready: number;
  delayed: number;
  reserved: number;
}

export class Queue extends Recipe {
  readonly name: string;

  constructor(client: Client, name: string, session?: Session) {
    super(client, "queue", session);
    this.name = name;
  }

  /** Appends `value`; returns the item's key (and `deliverAtMs` for a delayed item). */
  async push(value: string, options: PushOptions = {}): Promise<{ key: string; deliverAtMs?: number }> {
    const input: Record<string, unknown> = { queue: this.name, value };
    if (options.delayMs !== undefined) input.delay_ms = options.delayMs;
    if (options.deliverAtMs !== undefined) input.deliver_at_ms = options.deliverAtMs;
    const reply = await this.plain<{ key: string; deliver_at_ms?: number }>("push", input);
    return reply.deliver_at_ms === undefined ? { key: reply.key } : { key: reply.key, deliverAtMs: reply.deliver_at_ms };
  }

  /** Takes the next item for good, waiting for one. */
  async pop(options: WaitOptions = {}): Promise<QueueItem> {
    return this.plain<QueueItem>("pop", { queue: this.name }, Recipe.waiting(options));
  }

  /** The item `pop` would take now, or null (read-only). */
  async peek(): Promise<QueueItem | null> {
    return this.plain<QueueItem | null>("peek", { queue: this.name }, { readOnly: true });
  }

  async length(): Promise<QueueLength> {
    return this.plain<QueueLength>("length", { queue: this.name }, { readOnly: true });
  }

  /** Takes the next item until it is acked, nacked or its reservation ends; waits for one. */
  async reserve(options: ReserveOptions = {}): Promise<Reservation> {
    const input: Record<string, unknown> = { queue: this.name };
    if (options.visibilityMs !== undefined) input.visibility_ms = options.visibilityMs;
    let reply: RawReservation;
    if (options.untilLeaseEnds) {
      input.until_lease_ends = true;
      reply = await this.leased<RawReservation>("reserve", input, Recipe.waiting(options));
    } else {
      reply = await this.plain<RawReservation>("reserve", input, Recipe.waiting(options));
    }
    return new Reservation(this, reply);
  }

  /** Deletes a reserved item for good; `StaleFencingToken` once the reservation is not the caller's. */
  async ack(token: number): Promise<void> {
    await this.plain("ack", { queue: this.name, token });
  }

  /** Hands a reserved item back (after `delayMs`, if given). */
  async nack(token: number, options: { delayMs?: number } = {}): Promise<void> {
    const input: Record<string, unknown> = { queue: this.name, token };
    if (options.delayMs !== undefined) input.delay_ms = options.delayMs;
    await this.plain("nack", input);
  }
}

interface RawReservation {
  key: string;
  value: string;
  token: number;
  deliveries: number;
  visible_at_ms?: number;
}

/** A reserved item: ack it once done, or nack it to hand it back. */
export class Reservation {
  readonly key: string;
  readonly value: string;
  readonly token: number;
  readonly deliveries: number;
  /** When it is redelivered unless acked (absent for a lease-bound reservation). */
  readonly visibleAtMs: number | undefined;
  private readonly queue: Queue;

  constructor(queue: Queue, raw: RawReservation) {
    this.queue = queue;
    this.key = raw.key;
    this.value = raw.value;
    this.token = raw.token;
    this.deliveries = raw.deliveries;
    this.visibleAtMs = raw.visible_at_ms;
  }

  ack(): Promise<void> {
    return this.queue.ack(this.token);
  }

  nack(options: { delayMs?: number } = {}): Promise<void> {
    return this.queue.nack(this.token, options);
  }
}

export interface PriorityItem {
  key: string;
  value: string;
  priority: number;
}

export class PriorityQueue extends Recipe {
  readonly name: string;

  constructor(client: Client, name: string) {
    super(client, "priority-queue", undefined);
    this.name = name;
  }

  /** Adds `value`; a lower `priority` (0..=65535) is served first, FIFO within one. */
  async enqueue(value: string, priority: number): Promise<PriorityItem> {
    return this.plain<PriorityItem>("enqueue", { queue: this.name, value, priority });
  }

  /** Removes the first item, waiting for one. */
  async dequeue(options: WaitOptions = {}): Promise<PriorityItem> {
    return this.plain<PriorityItem>("dequeue", { queue: this.name }, Recipe.waiting(options));
  }
}
