// The connection to a cluster: one gRPC channel per endpoint, the services Baton serves on each,
// and the failover rule. Every unary call goes through `Transport.unary`.
//
// Failover rule: a call moves to the next endpoint only when it cannot have changed anything:
// - the endpoint could not be connected to (the channel did not become READY): nothing was
//   sent; or grpc-js failed the call before opening a stream ("No connection established") or
//   the server refused the stream unprocessed (REFUSED_STREAM);
// - or the call is idempotent (reads, read-only module calls, keep-alives) and failed with
//   UNAVAILABLE in any way.
// A writing call that fails with UNAVAILABLE after it was sent may have been applied: it is not
// retried, and surfaces as `Unavailable` with `mayHaveApplied` set. Leader changes need no
// client retry: a member forwards writes to the leader and waits out elections itself.

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fileURLToPath } from "node:url";

import { DeadlineExceeded, Unavailable, toBatonError } from "./errors.js";

/** Where the package keeps its copy of the protos (`npm run sync-protos`). */
const PROTO_DIR = fileURLToPath(new URL("../proto", import.meta.url));
const PROTO_FILES = ["baton/v1/modules.proto", "etcdserverpb/rpc.proto"];

/** How long one endpoint gets to connect before the next is tried. */
export const CONNECT_TIMEOUT_MS = 2_000;
/** Pause after every endpoint failed to connect, before trying them all again. */
export const ROUND_PAUSE_MS = 200;
/** grpc-js reconnect backoff: short, since failover already spreads the load. */
const RECONNECT_BACKOFF_INITIAL_MS = 100;
const RECONNECT_BACKOFF_MAX_MS = 1_000;
/** Matches the server's largest answers (module bytes, range replies). */
const MESSAGE_BYTES_MAX = 16 * 1024 * 1024;

/** A grpc-js client of one service, with methods looked up by name. */
type ServiceClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;
type ServiceCtor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => ServiceClient;

export type ServiceName = "modules" | "kv" | "lease" | "maintenance";

function loadServices(): Record<ServiceName, ServiceCtor> {
  const definition = protoLoader.loadSync(PROTO_FILES, {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as Record<string, any>;
  return {
    modules: loaded.baton.v1.Modules,
    kv: loaded.etcdserverpb.KV,
    lease: loaded.etcdserverpb.Lease,
    maintenance: loaded.etcdserverpb.Maintenance,
  };
}

let services: Record<ServiceName, ServiceCtor> | undefined;

/** One endpoint: its channel and a client per service, all sharing the channel. */
class Endpoint {
  readonly address: string;
  readonly channel: grpc.Channel;
  private readonly clients = new Map<ServiceName, ServiceClient>();

  constructor(address: string) {
    this.address = address;
    this.channel = new grpc.Channel(address, grpc.credentials.createInsecure(), {
      "grpc.initial_reconnect_backoff_ms": RECONNECT_BACKOFF_INITIAL_MS,
      "grpc.max_reconnect_backoff_ms": RECONNECT_BACKOFF_MAX_MS,
      "grpc.max_receive_message_length": MESSAGE_BYTES_MAX,
      "grpc.max_send_message_length": MESSAGE_BYTES_MAX,
    });
  }

  client(service: ServiceName): ServiceClient {
    let client = this.clients.get(service);
    if (client === undefined) {
      services ??= loadServices();
      const channel = this.channel;
      client = new services[service](this.address, grpc.credentials.createInsecure(), {
        channelOverride: channel,
      });
      this.clients.set(service, client);
    }
    return client;
  }

  /** Resolves true once the channel is READY, false if it fails to connect by `deadline`. */
  connect(deadline: number): Promise<boolean> {
    return new Promise((resolve) => {
      const look = (): void => {
        const state = this.channel.getConnectivityState(true);
        if (state === grpc.connectivityState.READY) {
          resolve(true);
          return;
        }
        if (
          state === grpc.connectivityState.TRANSIENT_FAILURE ||
          state === grpc.connectivityState.SHUTDOWN ||
          Date.now() >= deadline
        ) {
          resolve(false);
          return;
        }
        this.channel.watchConnectivityState(state, deadline, (error) => {
          if (error) {
            resolve(false);
          } else {
            look();
          }
        });
      };
      look();
    });
  }

  close(): void {
    for (const client of this.clients.values()) {
      client.close();
    }
    this.channel.close();
  }
}

/** Whether grpc-js failed the call before any byte of it reached a server. */
export function neverSent(e: grpc.ServiceError): boolean {
  if (e.code !== grpc.status.UNAVAILABLE) {
    return false;
  }
  const details = e.details ?? "";
  return details.startsWith("No connection established") || details === "Stream refused by server";
}

export interface CallOptions {
  /** Absolute deadline (ms since the epoch); Infinity for none. */
  deadline: number;
  /** The call changes nothing, so it may be retried after any UNAVAILABLE. */
  idempotent: boolean;
  /** Cancels the call. */
  signal?: AbortSignal;
}

/** Endpoints with failover; the one in use is `current`. */
export class Transport {
  private readonly endpoints: Endpoint[];
  private current = 0;
  private closed = false;
  /** Upper bound on looking for a reachable endpoint, whatever the call's own deadline. */
  readonly connectBudgetMs: number;

  constructor(addresses: string[], connectBudgetMs: number) {
    if (addresses.length === 0) {
      throw new TypeError("Client needs at least one endpoint");
    }
    this.endpoints = addresses.map((a) => new Endpoint(stripScheme(a)));
    this.connectBudgetMs = connectBudgetMs;
  }

  /** The address calls go to now. */
  get endpoint(): string {
    return this.endpoints[this.current]!.address;
  }

  /**
   * Finds a connected endpoint, starting with the one in use, and runs `attempt` on it, moving
   * on as the failover rule allows. Throws a `BatonError`.
   */
  async run<T>(
    options: CallOptions,
    attempt: (endpoint: Endpoint) => Promise<T>,
  ): Promise<T> {
    const connectBy = Math.min(options.deadline, Date.now() + this.connectBudgetMs);
    let failures = 0;
    let last: string | undefined;
    for (;;) {
      if (this.closed) {
        throw new Unavailable("the client is closed", false);
      }
      options.signal?.throwIfAborted();
      const now = Date.now();
      if (now >= connectBy) {
        if (now >= options.deadline) {
          throw new DeadlineExceeded(grpc.status.DEADLINE_EXCEEDED, last ?? "deadline passed");
        }
        throw new Unavailable(`no endpoint reachable (${last ?? "none tried"})`, false);
      }
      const index = this.current;
      const endpoint = this.endpoints[index]!;
      const up = await endpoint.connect(Math.min(connectBy, now + CONNECT_TIMEOUT_MS));
      if (up) {
        try {
          return await attempt(endpoint);
        } catch (e) {
          const error = e as grpc.ServiceError;
          const retry = error.code === grpc.status.UNAVAILABLE && (options.idempotent || neverSent(error));
          if (!retry) {
            if (error.code === grpc.status.UNAVAILABLE) {
              throw new Unavailable(`${endpoint.address}: ${error.details}`, true, { cause: e });
            }
            throw toBatonError(error);
          }
          last = `${endpoint.address}: ${error.details}`;
        }
      } else {
        last = `${endpoint.address}: cannot connect`;
      }
      this.moveOn(index);
      failures += 1;
      if (failures % this.endpoints.length === 0) {
        await sleep(ROUND_PAUSE_MS);
      }
    }
  }

  /** One unary call of `method` on `service`. */
  unary<T>(service: ServiceName, method: string, request: object, options: CallOptions): Promise<T> {
    return this.run(options, (endpoint) => unaryOn<T>(endpoint.client(service), method, request, options));
  }

  /** Moves past endpoint `failed`, unless another caller already has. */
  moveOn(failed: number): void {
    if (this.current === failed) {
      this.current = (failed + 1) % this.endpoints.length;
    }
  }

  /** The index of the endpoint in use (for `moveOn`). */
  get currentIndex(): number {
    return this.current;
  }

  /** A client of `service` on the endpoint in use, connected or not. */
  clientNow(service: ServiceName): ServiceClient {
    return this.endpoints[this.current]!.client(service);
  }

  close(): void {
    this.closed = true;
    for (const endpoint of this.endpoints) {
      endpoint.close();
    }
  }
}

function unaryOn<T>(
  client: ServiceClient,
  method: string,
  request: object,
  options: CallOptions,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const callOptions: grpc.CallOptions = {};
    if (Number.isFinite(options.deadline)) {
      callOptions.deadline = new Date(options.deadline);
    }
    const call = client[method]!(request, callOptions, (error: grpc.ServiceError | null, reply: T) => {
      options.signal?.removeEventListener("abort", cancel);
      if (error) {
        reject(error);
      } else {
        resolve(reply);
      }
    }) as grpc.ClientUnaryCall;
    const cancel = (): void => call.cancel();
    options.signal?.addEventListener("abort", cancel, { once: true });
  });
}

/** `host:port` from `host:port` or `http://host:port`. */
function stripScheme(address: string): string {
  return address.replace(/^https?:\/\//, "").replace(/\/+$/, "");
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
