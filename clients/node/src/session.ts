// A session: a lease granted once and kept alive in the background over etcd's LeaseKeepAlive
// stream, moving to the next endpoint when the stream breaks. The session is lost when the
// server answers a keep-alive with TTL 0 (revoked or expired) or when no keep-alive has been
// answered for the whole TTL; then `lost` resolves, `onLost` listeners run, and every recipe
// call made with the session fails with `LeaseLost` before it is sent.

import type * as grpc from "@grpc/grpc-js";

import { LeaseLost, Status, toBatonError } from "./errors.js";
import type { Transport } from "./transport.js";
import { ROUND_PAUSE_MS } from "./transport.js";

/** Keep-alives per TTL: a third of the TTL apart, as etcd's client sends them. */
const KEEPALIVES_PER_TTL = 3;

interface KeepAliveReply {
  ID: string;
  TTL: string;
}

export class Session {
  /** The session's lease id: pass it as `lease` to calls that should end with the session. */
  readonly lease: bigint;
  /** The TTL the server granted, in seconds. */
  readonly ttlS: number;
  /** Resolves (never rejects) with the reason once the lease is lost or the session closed. */
  readonly lost: Promise<LeaseLost>;

  private readonly transport: Transport;
  private resolveLost!: (error: LeaseLost) => void;
  private lostError: LeaseLost | undefined;
  private closed = false;
  private expiresAt: number;
  private stream: grpc.ClientDuplexStream<object, KeepAliveReply> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reopenTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<(error: LeaseLost) => void>();

  /** Use `client.session({ ttl })`. */
  constructor(transport: Transport, lease: bigint, ttlS: number) {
    this.transport = transport;
    this.lease = lease;
    this.ttlS = ttlS;
    this.expiresAt = Date.now() + ttlS * 1000;
    this.lost = new Promise((resolve) => {
      this.resolveLost = resolve;
    });
    this.open();
    const interval = Math.max(1, Math.floor((ttlS * 1000) / KEEPALIVES_PER_TTL));
    this.timer = setInterval(() => this.tick(), interval);
    this.timer.unref();
  }

  /** Whether the lease is gone (or the session closed). */
  get isLost(): boolean {
    return this.lostError !== undefined;
  }

  /** Throws `LeaseLost` if the session is lost; recipes call it before each call. */
  check(): void {
    if (this.lostError !== undefined) {
      throw this.lostError;
    }
  }

  /** Runs `listener` once when the lease is lost (at once if it already is). Returns an unsubscribe. */
  onLost(listener: (error: LeaseLost) => void): () => void {
    if (this.lostError !== undefined) {
      const error = this.lostError;
      queueMicrotask(() => listener(error));
      return () => {};
    }
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Stops the keep-alives and revokes the lease, releasing everything attached to it. */
  async close(): Promise<void> {
    if (this.closed) {
      return;
    }
    const wasLost = this.isLost;
    this.stop(new LeaseLost(Status.CANCELLED, `session ${this.lease} closed`));
    if (wasLost) {
      return;
    }
    try {
      await this.transport.unary("lease", "LeaseRevoke", { ID: this.lease.toString() }, {
        deadline: Date.now() + this.transport.connectBudgetMs,
        idempotent: true,
      });
    } catch (e) {
      // Already gone is what closing wanted.
      if (!(e instanceof LeaseLost)) {
        throw e;
      }
    }
  }

  private open(): void {
    if (this.closed) {
      return;
    }
    const index = this.transport.currentIndex;
    const stream = this.transport.clientNow("lease").LeaseKeepAlive!() as grpc.ClientDuplexStream<
      object,
      KeepAliveReply
    >;
    this.stream = stream;
    stream.on("data", (reply: KeepAliveReply) => this.answered(reply));
    stream.on("error", (error: grpc.ServiceError) => this.broken(stream, index, error));
    stream.on("end", () => this.broken(stream, index, undefined));
    this.send();
  }

  private send(): void {
    this.stream?.write({ ID: this.lease.toString() });
  }

  private answered(reply: KeepAliveReply): void {
    const ttl = Number(reply.TTL);
    if (ttl <= 0) {
      this.stop(
        new LeaseLost(Status.NOT_FOUND, `lease ${this.lease} is gone (revoked or expired)`),
      );
      return;
    }
    this.expiresAt = Date.now() + ttl * 1000;
  }

  /** The stream ended or failed: try the next endpoint shortly, unless the lease is gone. */
  private broken(stream: object, index: number, error: grpc.ServiceError | undefined): void {
    if (this.closed || stream !== this.stream) {
      return;
    }
    this.stream = undefined;
    if (error !== undefined) {
      const failure = toBatonError(error);
      if (failure instanceof LeaseLost) {
        this.stop(failure);
        return;
      }
    }
    this.transport.moveOn(index);
    this.reopenTimer = setTimeout(() => this.open(), ROUND_PAUSE_MS);
    this.reopenTimer.unref();
  }

  private tick(): void {
    if (Date.now() >= this.expiresAt) {
      this.stop(
        new LeaseLost(
          Status.DEADLINE_EXCEEDED,
          `lease ${this.lease} expired: no keep-alive answered within its ${this.ttlS}s TTL`,
        ),
      );
      return;
    }
    this.send();
  }

  private stop(reason: LeaseLost): void {
    if (this.closed) {
      return;
    }
    this.closed = true;
    this.lostError = reason;
    clearInterval(this.timer);
    clearTimeout(this.reopenTimer);
    const stream = this.stream;
    this.stream = undefined;
    stream?.cancel();
    this.resolveLost(reason);
    for (const listener of this.listeners) {
      listener(reason);
    }
    this.listeners.clear();
  }
}
