// Errors a caller can catch by kind. Every failure the client reports is a `BatonError` carrying
// the gRPC status code and the server's message; `toBatonError` is the one table that decides
// the class, first by what the message says (a stale fencing token, a lease that is gone), then
// by the code. The messages matched are the built-in modules' and etcd's (see README.md).

import { status as Status } from "@grpc/grpc-js";

export { Status };

/** Base class of every error the client throws. */
export class BatonError extends Error {
  /** The gRPC status code (`Status.OK` never appears). */
  readonly code: Status;
  /** The server's message, or the client's own when it failed before asking. */
  readonly details: string;

  constructor(code: Status, details: string, options?: { cause?: unknown }) {
    super(`${Status[code] ?? code}: ${details}`, options);
    this.name = new.target.name;
    this.code = code;
    this.details = details;
  }
}

/** INVALID_ARGUMENT: the request was malformed (a bad module, a bad name, a bad hash). */
export class InvalidArgument extends BatonError {}

/** NOT_FOUND: no such module (or, from etcd's API, no such key or lease). */
export class NotFound extends BatonError {}

/** RESOURCE_EXHAUSTED: a call ran out of fuel, hit its memory cap or answered too much. */
export class ResourceExhausted extends BatonError {}

/** FAILED_PRECONDITION: the module refused the call (its own error message is `details`). */
export class FailedPrecondition extends BatonError {}

/**
 * A fenced write or queue acknowledgement whose token is no longer the holder's: another
 * holder has the lock, permit or reservation now. Do not retry with the same token.
 */
export class StaleFencingToken extends FailedPrecondition {}

/** The lease the call or session relied on no longer exists (revoked, or expired). */
export class LeaseLost extends BatonError {}

/** The call's deadline passed before it finished (a wait that ran out, a slow cluster). */
export class DeadlineExceeded extends BatonError {}

/**
 * No endpoint could serve the call. `mayHaveApplied` tells whether a writing call reached a
 * member before the failure, so its effect is unknown (the client does not retry those).
 */
export class Unavailable extends BatonError {
  readonly mayHaveApplied: boolean;

  constructor(details: string, mayHaveApplied: boolean, options?: { cause?: unknown }) {
    super(Status.UNAVAILABLE, details, options);
    this.mayHaveApplied = mayHaveApplied;
  }
}

// Messages, as the server and the built-in modules word them, that name a kind the code alone
// does not: etcd's `ErrLeaseNotFound` (guests repeat it for a waiter whose lease ended), the
// lock's and semaphore's "stale fencing token", the queue's "is not held" (an ack or nack
// whose reservation someone else now has), the election's "not leader" (a proclaim with a token
// that no longer leads).
const LEASE_NOT_FOUND = "requested lease not found";
const STALE_MESSAGES = ["stale fencing token", "is not held", "election: not leader"];
// The server's side of a call's deadline: when its timer fires before the client's, the call
// ends CANCELLED with this message (tonic's wording) instead of DEADLINE_EXCEEDED.
const SERVER_TIMEOUT = "Timeout expired";

/** A status as grpc-js reports it. */
export interface StatusLike {
  code: number;
  details?: string;
  message?: string;
}

/** The class a failed call's status maps to. */
export function toBatonError(e: StatusLike | BatonError): BatonError {
  if (e instanceof BatonError) {
    return e;
  }
  const code = e.code as Status;
  const details = e.details ?? e.message ?? "";
  const options = { cause: e };
  if (details.includes(LEASE_NOT_FOUND)) {
    return new LeaseLost(code, details, options);
  }
  switch (code) {
    case Status.FAILED_PRECONDITION:
      if (STALE_MESSAGES.some((m) => details.includes(m))) {
        return new StaleFencingToken(code, details, options);
      }
      return new FailedPrecondition(code, details, options);
    case Status.INVALID_ARGUMENT:
      return new InvalidArgument(code, details, options);
    case Status.NOT_FOUND:
      return new NotFound(code, details, options);
    case Status.RESOURCE_EXHAUSTED:
      return new ResourceExhausted(code, details, options);
    case Status.DEADLINE_EXCEEDED:
      return new DeadlineExceeded(code, details, options);
    case Status.CANCELLED:
      if (details === SERVER_TIMEOUT) {
        return new DeadlineExceeded(code, details, options);
      }
      return new BatonError(code, details, options);
    case Status.UNAVAILABLE:
      return new Unavailable(details, true, options);
    default:
      return new BatonError(code, details, options);
  }
}
