//! What a learner serves, as in etcd 3.4: only Status and serializable Range. Every other call
//! of the etcd services (streams included) fails with UNAVAILABLE "rpc not supported for
//! learner", before the request is looked at; Range decides for itself (see `api::kv`), since
//! only its body says whether it is serializable. Baton's Modules service is gated the same
//! way: a learner refuses all its calls (its state may lag, and it cannot write).
//!
//! The gate also does the other check of etcd's interceptors: a call that requires a leader
//! (`api::require_leader`) on a member without one is refused with `etcdserver: no leader`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use crate::api::require_leader::{no_leader, requires_leader};
use crate::server::Server;

const NOT_SUPPORTED_FOR_LEARNER: &str = "etcdserver: rpc not supported for learner";

/// Methods a learner answers itself (Range only when serializable).
const LEARNER_METHODS: [&str; 2] = ["/etcdserverpb.Maintenance/Status", "/etcdserverpb.KV/Range"];

pub(crate) fn not_supported_for_learner() -> Status {
    Status::unavailable(NOT_SUPPORTED_FOR_LEARNER)
}

/// Wraps one gRPC service so its calls are refused while this member is a learner, and those
/// that require a leader while it has none.
#[derive(Clone)]
pub(crate) struct LearnerGate<S> {
    inner: S,
    server: Arc<Server>,
}

impl<S> LearnerGate<S> {
    pub(crate) fn new(inner: S, server: Arc<Server>) -> Self {
        Self { inner, server }
    }
}

impl<S: NamedService> NamedService for LearnerGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for LearnerGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Either<Ready<Result<http::Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !LEARNER_METHODS.contains(&request.uri().path()) && self.server.is_learner() {
            return Either::Left(ready(Ok(not_supported_for_learner().into_http())));
        }
        if requires_leader(request.headers()) && !self.server.sees_leader() {
            return Either::Left(ready(Ok(no_leader().into_http())));
        }
        Either::Right(self.inner.call(request))
    }
}
