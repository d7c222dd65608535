//! Lease validation (the simple version): a client keeps a lease alive with a key attached and
//! keeps reading the key. A key may vanish only once its lease could have expired: not before
//! the lease's TTL has elapsed since the invocation of its last acknowledged grant or
//! keep-alive (the server extended the lease no earlier than that). The client records
//! (`run_lease_client`), the verdict is pure (`validate`).

use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::{REQUEST_TIMEOUT, connect};
use crate::workload::since;

/// Long enough to survive short faults, short enough to expire during a long one.
pub const LEASE_TTL_S: i64 = 6;
const KEEPALIVE_PERIOD: Duration = Duration::from_secs(1);
const CHECK_PERIOD: Duration = Duration::from_millis(300);
const KEY_PREFIX: &str = "fault/lease/";

/// What the lease client learnt, with its invocation and completion instants (ns since start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A grant or keep-alive acknowledged with this TTL: the lease lives until at least
    /// `call_ns + ttl_s`.
    Extended {
        lease: i64,
        ttl_s: i64,
        call_ns: u64,
    },
    /// A linearizable read found the lease's key absent.
    Vanished { lease: i64, return_ns: u64 },
}

/// Keeps leases alive and watches their keys until `stop`; a lease that ends (the key vanished
/// or a keep-alive says it is gone) is replaced by a new one.
pub async fn run_lease_client(
    endpoint: String,
    start: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<LeaseEvent> {
    let mut events = Vec::new();
    let mut generation = 0u32;
    while !*stop.borrow() {
        generation += 1;
        let round = one_lease(&endpoint, start, generation, &mut events);
        tokio::select! {
            _ = round => {}
            _ = stop.changed() => break,
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_PERIOD) => {}
            _ = stop.changed() => break,
        }
    }
    events
}

/// One lease's life: grant, attach a key, then keep-alives and reads until it ends.
async fn one_lease(endpoint: &str, start: Instant, generation: u32, events: &mut Vec<LeaseEvent>) {
    let Ok(mut client) = connect(endpoint).await else {
        return;
    };
    let call_ns = since(start);
    let granted =
        tokio::time::timeout(REQUEST_TIMEOUT, client.lease_grant(LEASE_TTL_S, None)).await;
    let Ok(Ok(granted)) = granted else { return };
    let lease = granted.id();
    events.push(LeaseEvent::Extended {
        lease,
        ttl_s: granted.ttl(),
        call_ns,
    });
    let key = format!("{KEY_PREFIX}{generation}");
    let options = etcd_client::PutOptions::new().with_lease(lease);
    let put = tokio::time::timeout(
        REQUEST_TIMEOUT,
        client.put(key.as_str(), "held", Some(options)),
    );
    if !matches!(put.await, Ok(Ok(_))) {
        let _ = client.lease_revoke(lease).await;
        return;
    }
    let mut last_renewal = Instant::now();
    loop {
        tokio::time::sleep(CHECK_PERIOD).await;
        if last_renewal.elapsed() >= KEEPALIVE_PERIOD {
            last_renewal = Instant::now();
            match renew(&mut client, lease, start).await {
                Some(event @ LeaseEvent::Extended { .. }) => events.push(event),
                Some(gone) => {
                    events.push(gone);
                    return;
                }
                None => {}
            }
        }
        let got = tokio::time::timeout(REQUEST_TIMEOUT, client.get(key.as_str(), None)).await;
        if let Ok(Ok(reply)) = got
            && reply.kvs().is_empty()
        {
            events.push(LeaseEvent::Vanished {
                lease,
                return_ns: since(start),
            });
            return;
        }
    }
}

/// One keep-alive: `Extended` when acknowledged with a TTL, `Vanished` when the server says the
/// lease is gone (TTL 0), `None` when no answer came.
async fn renew(client: &mut Client, lease: i64, start: Instant) -> Option<LeaseEvent> {
    let call_ns = since(start);
    let sent = async {
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
        keeper.keep_alive().await?;
        anyhow::Ok(stream.message().await?)
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
        Ok(Ok(Some(reply))) if reply.ttl() > 0 => Some(LeaseEvent::Extended {
            lease,
            ttl_s: reply.ttl(),
            call_ns,
        }),
        Ok(Ok(Some(_))) => Some(LeaseEvent::Vanished {
            lease,
            return_ns: since(start),
        }),
        _ => None,
    }
}

/// Every key that vanished before its lease could have expired, as messages.
pub fn validate(events: &[LeaseEvent]) -> Vec<String> {
    let mut problems = Vec::new();
    for event in events {
        let LeaseEvent::Vanished { lease, return_ns } = *event else {
            continue;
        };
        let earliest_expiry_ns = events
            .iter()
            .filter_map(|e| match *e {
                LeaseEvent::Extended {
                    lease: l,
                    ttl_s,
                    call_ns,
                } if l == lease && call_ns < return_ns => {
                    Some(call_ns.saturating_add(u64::try_from(ttl_s).unwrap_or(0) * 1_000_000_000))
                }
                _ => None,
            })
            .max();
        if let Some(expiry) = earliest_expiry_ns
            && return_ns < expiry
        {
            problems.push(format!(
                "lease {lease:x}: its key was gone {} ms before the lease could have expired",
                (expiry - return_ns) / 1_000_000
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn keys_may_vanish_only_after_the_ttl_since_the_last_renewal() {
        let extended = |call_ns| LeaseEvent::Extended {
            lease: 1,
            ttl_s: 6,
            call_ns,
        };
        let vanished = |return_ns| LeaseEvent::Vanished {
            lease: 1,
            return_ns,
        };
        assert!(validate(&[extended(0), extended(4 * S), vanished(11 * S)]).is_empty());
        assert_eq!(
            validate(&[extended(0), extended(4 * S), vanished(9 * S)]).len(),
            1
        );
        // Another lease's renewals do not count.
        let other = LeaseEvent::Extended {
            lease: 2,
            ttl_s: 6,
            call_ns: 8 * S,
        };
        assert!(validate(&[extended(0), other, vanished(7 * S)]).is_empty());
    }
}
