// @baton/client: a Node client for Baton. `Client` is the entry point; see README.md.

export { Client, Modules, DEFAULT_SESSION_TTL_S, DEFAULT_TIMEOUT_MS } from "./client.js";
export type { CallOptions, ClientOptions, JsonCallOptions, InvokeResult, LeaseInfo, LeaseLike, ModuleInfo, ModuleVersion } from "./client.js";
export { Session } from "./session.js";
export {
  BatonError,
  DeadlineExceeded,
  FailedPrecondition,
  InvalidArgument,
  LeaseLost,
  NotFound,
  ResourceExhausted,
  StaleFencingToken,
  Status,
  Unavailable,
  toBatonError,
} from "./errors.js";
export { Barrier, DoubleBarrier } from "./recipes/barrier.js";
export type { WaitOptions } from "./recipes/base.js";
export { Counter } from "./recipes/counter.js";
export type { CounterGetOptions } from "./recipes/counter.js";
export { Election, Leadership } from "./recipes/election.js";
export type { LeaderInfo } from "./recipes/election.js";
export { HeldLock, Lock } from "./recipes/lock.js";
export type { FencedOp, LockOptions } from "./recipes/lock.js";
export { PriorityQueue, Queue, Reservation } from "./recipes/queue.js";
export type { PriorityItem, PushOptions, QueueItem, QueueLength, ReserveOptions } from "./recipes/queue.js";
export { Registry } from "./recipes/registry.js";
export type { Change, Instance, Listing } from "./recipes/registry.js";
export { RWLock } from "./recipes/rwlock.js";
export type { HeldRWLock } from "./recipes/rwlock.js";
export { Permit, Semaphore } from "./recipes/semaphore.js";
export type { SemaphoreHolders } from "./recipes/semaphore.js";
