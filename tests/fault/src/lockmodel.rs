//! The lock model with fencing tokens: what a run's lock history (`LockOp`s, recorded by
//! `locks.rs`) and the protected keys' final history (`Stored`) must satisfy. Pure.
//!
//! A lock is etcd's layout (Baton's `lock` module uses the same): each contender's key under
//! `<name>/`, the lowest create revision holds, and the token is that create revision. Keys are
//! only ever created with higher revisions, so a grant of token t' means every key below t' is
//! gone: the holder of any t < t' lost the lock before t' was granted, for good. A lock CAN be
//! lost at any time (its lease ends under a pause or a partition), so nothing here assumes a
//! holder still holds; safety is asserted only where the server vouched for it:
//! - **tokens**: per lock, grants to different clients carry different tokens, and a grant
//!   acknowledged before another was asked for has the lower token;
//! - **mutual exclusion**: a holder certainly held from its acquire's reply to the invocation
//!   of its last accepted fenced write (or module release that found its key); two such spans
//!   of different holds never overlap in real time. A grant with no such proof after it gives
//!   no span: the lease may end between the grant and its reply reaching the client;
//! - **fencing**: a fenced write is never accepted once a higher token was granted before the
//!   write was invoked; the protected key's writes, in revision order, carry non-decreasing
//!   tokens (among the acknowledged ones and in the key's full history alike);
//! - **no lost or phantom write**: every accepted write is in the key's history at the revision
//!   it was acknowledged with; every write in the history is one some holder sent with its
//!   token, and none that was refused.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// One step of a lock client on lock number `lock`, with its invocation and completion instants
/// (ns since the run's start; `return_ns` is `None` when no answer came).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOp {
    pub client: u32,
    pub lock: u32,
    pub call_ns: u64,
    pub return_ns: Option<u64>,
    pub step: Step,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// The lock was granted with this fencing token.
    Acquired { token: i64 },
    /// Not granted as far as the client knows (refused, timed out, token unreadable); the client
    /// gives up its lease, so whatever it may hold dies with it.
    AcquireFailed,
    /// A write of `value` to the lock's protected key, fenced with `token`.
    Write {
        token: i64,
        value: String,
        outcome: WriteOutcome,
    },
    /// An acknowledged release; `was_holder` is the module's `released` (etcd's Unlock does not
    /// say whether the key was still there).
    Released {
        token: i64,
        was_holder: Option<bool>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Accepted; the store's revision of the write.
    Accepted { revision: i64 },
    /// The fence refused it (the token is not the holder's any more).
    Refused,
    /// No answer: it may or may not have been applied.
    Unknown,
}

/// One write in a protected key's final history (revision order is the store's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub lock: u32,
    pub revision: i64,
    pub value: String,
}

/// The value a fenced write carries: its token first, so the stored history names it.
pub fn fenced_value(token: i64, client: u32, n: u32) -> String {
    format!("{token}:{client}:{n}")
}

/// The token a stored value was written with; `None` for a value no lock client wrote.
pub fn token_of(value: &str) -> Option<i64> {
    value.split(':').next()?.parse().ok()
}

/// Every violation of the lock model, as messages (empty: the history is valid).
pub fn check(ops: &[LockOp], stored: &[Stored]) -> Vec<String> {
    let mut problems = Vec::new();
    let locks: HashSet<u32> = ops
        .iter()
        .map(|o| o.lock)
        .chain(stored.iter().map(|s| s.lock))
        .collect();
    let mut locks: Vec<u32> = locks.into_iter().collect();
    locks.sort_unstable();
    for lock in locks {
        let ops: Vec<&LockOp> = ops.iter().filter(|o| o.lock == lock).collect();
        let mut stored: Vec<&Stored> = stored.iter().filter(|s| s.lock == lock).collect();
        stored.sort_by_key(|s| s.revision);
        let mut found = Vec::new();
        check_tokens(&ops, &mut found);
        check_exclusion(&ops, &mut found);
        check_fencing(&ops, &mut found);
        check_stored(&ops, &stored, &mut found);
        problems.extend(found.into_iter().map(|p| format!("lock {lock}: {p}")));
    }
    problems
}

/// Acknowledged grants: (op, token).
fn grants<'a>(ops: &[&'a LockOp]) -> Vec<(&'a LockOp, i64)> {
    ops.iter()
        .filter_map(|o| match o.step {
            Step::Acquired { token } => Some((*o, token)),
            _ => None,
        })
        .collect()
}

fn accepted<'a>(ops: &[&'a LockOp]) -> Vec<(&'a LockOp, i64, &'a str, i64)> {
    ops.iter()
        .filter_map(|o| match &o.step {
            Step::Write {
                token,
                value,
                outcome: WriteOutcome::Accepted { revision },
            } => Some((*o, *token, value.as_str(), *revision)),
            _ => None,
        })
        .collect()
}

fn returned(op: &LockOp) -> u64 {
    op.return_ns.unwrap_or(u64::MAX)
}

fn check_tokens(ops: &[&LockOp], problems: &mut Vec<String>) {
    let grants = grants(ops);
    for (a, ta) in &grants {
        for (b, tb) in &grants {
            if a.client != b.client && ta == tb && a.call_ns <= b.call_ns {
                problems.push(format!(
                    "token {ta} granted to clients {} and {}",
                    a.client, b.client
                ));
            }
            if returned(a) < b.call_ns && ta >= tb {
                problems.push(format!(
                    "token {tb} (client {}, asked at {} ns) was granted after token {ta} \
                     (client {}, granted by {} ns): tokens must grow",
                    b.client,
                    b.call_ns,
                    a.client,
                    returned(a)
                ));
            }
        }
    }
}

/// Per hold (client, token) that the server vouched for after its grant's reply: the real-time
/// span it certainly held the lock. It held at its grant (before the reply) and at its proof
/// (after the proof's invocation), and a hold once lost never comes back.
fn certain_spans(ops: &[&LockOp]) -> BTreeMap<(u32, i64), (u64, u64)> {
    let mut spans = BTreeMap::new();
    for (grant, token) in grants(ops) {
        spans.insert((grant.client, token), (returned(grant), None));
    }
    for o in ops {
        let token = match o.step {
            Step::Write {
                token,
                outcome: WriteOutcome::Accepted { .. },
                ..
            }
            | Step::Released {
                token,
                was_holder: Some(true),
            } => token,
            _ => continue,
        };
        if let Some((from, to)) = spans.get_mut(&(o.client, token))
            && o.call_ns >= *from
        {
            *to = Some(to.map_or(o.call_ns, |t: u64| t.max(o.call_ns)));
        }
    }
    spans
        .into_iter()
        .filter_map(|(hold, (from, to))| Some((hold, (from, to?))))
        .collect()
}

fn check_exclusion(ops: &[&LockOp], problems: &mut Vec<String>) {
    let spans: Vec<_> = certain_spans(ops).into_iter().collect();
    for (i, ((ca, ta), (a0, a1))) in spans.iter().enumerate() {
        for ((cb, tb), (b0, b1)) in &spans[i + 1..] {
            if a0 < b1 && b0 < a1 {
                problems.push(format!(
                    "two holders at once: client {ca} (token {ta}) held over [{a0}, {a1}] ns and \
                     client {cb} (token {tb}) over [{b0}, {b1}] ns"
                ));
            }
        }
    }
}

fn check_fencing(ops: &[&LockOp], problems: &mut Vec<String>) {
    let grants = grants(ops);
    let mut writes = accepted(ops);
    for (write, token, value, revision) in &writes {
        let newer = grants
            .iter()
            .find(|(g, t)| t > token && returned(g) < write.call_ns);
        if let Some((grant, newer_token)) = newer {
            problems.push(format!(
                "stale fenced write accepted: client {} wrote {value:?} with token {token} at \
                 revision {revision}, invoked at {} ns, after token {newer_token} was granted to \
                 client {} by {} ns",
                write.client,
                write.call_ns,
                grant.client,
                returned(grant)
            ));
        }
    }
    writes.sort_by_key(|w| w.3);
    for pair in writes.windows(2) {
        let ((_, t0, v0, r0), (_, t1, v1, r1)) = (pair[0], pair[1]);
        if r0 == r1 {
            problems.push(format!(
                "two accepted writes at revision {r0}: {v0:?} and {v1:?}"
            ));
        } else if t1 < t0 {
            problems.push(format!(
                "accepted write {v1:?} (token {t1}) at revision {r1} follows {v0:?} (token {t0}) \
                 at revision {r0}: tokens went back"
            ));
        }
    }
}

fn check_stored(ops: &[&LockOp], stored: &[&Stored], problems: &mut Vec<String>) {
    let at: HashMap<i64, &str> = stored
        .iter()
        .map(|s| (s.revision, s.value.as_str()))
        .collect();
    for (write, _, value, revision) in accepted(ops) {
        if at.get(&revision) != Some(&value) {
            problems.push(format!(
                "accepted write lost: client {} wrote {value:?} at revision {revision}, the key \
                 holds {:?} there",
                write.client,
                at.get(&revision)
            ));
        }
    }
    let sent: HashMap<&str, &WriteOutcome> = ops
        .iter()
        .filter_map(|o| match &o.step {
            Step::Write { value, outcome, .. } => Some((value.as_str(), outcome)),
            _ => None,
        })
        .collect();
    for s in stored {
        match sent.get(s.value.as_str()) {
            None => problems.push(format!(
                "the key holds {:?} at revision {}, which no holder wrote",
                s.value, s.revision
            )),
            Some(WriteOutcome::Refused) => problems.push(format!(
                "a refused write took effect: {:?} at revision {}",
                s.value, s.revision
            )),
            Some(_) => {}
        }
    }
    for pair in stored.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if let (Some(ta), Some(tb)) = (token_of(&a.value), token_of(&b.value))
            && tb < ta
        {
            problems.push(format!(
                "the key's history goes back in tokens: {:?} at revision {} after {:?} at \
                 revision {}",
                b.value, b.revision, a.value, a.revision
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u32, span: (u64, u64), step: Step) -> LockOp {
        LockOp {
            client,
            lock: 0,
            call_ns: span.0,
            return_ns: Some(span.1),
            step,
        }
    }
    fn acquired(client: u32, token: i64, span: (u64, u64)) -> LockOp {
        op(client, span, Step::Acquired { token })
    }
    fn write(client: u32, token: i64, n: u32, span: (u64, u64), outcome: WriteOutcome) -> LockOp {
        let value = fenced_value(token, client, n);
        op(
            client,
            span,
            Step::Write {
                token,
                value,
                outcome,
            },
        )
    }
    fn ok(revision: i64) -> WriteOutcome {
        WriteOutcome::Accepted { revision }
    }
    fn stored(revision: i64, token: i64, client: u32, n: u32) -> Stored {
        Stored {
            lock: 0,
            revision,
            value: fenced_value(token, client, n),
        }
    }

    /// Client 0 holds token 10 and writes twice; its lease ends (a pause), client 1 is granted
    /// 20 and writes; client 0's late write is refused, and one of client 1's has no answer.
    fn valid() -> (Vec<LockOp>, Vec<Stored>) {
        let ops = vec![
            acquired(0, 10, (0, 10)),
            write(0, 10, 1, (20, 30), ok(11)),
            write(0, 10, 2, (40, 50), ok(12)),
            acquired(1, 20, (45, 100)),
            write(1, 20, 1, (110, 120), ok(21)),
            write(0, 10, 3, (60, 130), WriteOutcome::Refused),
            write(1, 20, 2, (140, 0), WriteOutcome::Unknown),
            op(
                1,
                (150, 160),
                Step::Released {
                    token: 20,
                    was_holder: Some(true),
                },
            ),
            op(2, (170, 180), Step::AcquireFailed),
            acquired(2, 30, (175, 190)),
        ];
        let stored = vec![
            stored(11, 10, 0, 1),
            stored(12, 10, 0, 2),
            stored(21, 20, 1, 1),
            stored(22, 20, 1, 2),
        ];
        (ops, stored)
    }

    #[test]
    fn a_valid_history_with_a_lost_lock_passes() {
        let (ops, stored) = valid();
        assert_eq!(check(&ops, &stored), Vec::<String>::new());
    }

    #[test]
    fn overlapping_holders_are_caught() {
        let (mut ops, stored) = valid();
        // Client 1's grant came back before client 0's last accepted write was invoked.
        ops[3] = acquired(1, 20, (15, 35));
        let problems = check(&ops, &stored);
        assert!(
            problems.iter().any(|p| p.contains("two holders at once")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_grant_whose_reply_comes_after_the_hold_ended_is_not_an_overlap() {
        // Client 1 queued early (token 5); it was granted, lost its lease while the reply was on
        // its way (its member paused), and client 0 got token 9 and wrote before that reply
        // arrived. Nothing vouches that client 1 held past its grant: valid.
        let ops = [
            acquired(1, 5, (0, 60)),
            acquired(0, 9, (10, 40)),
            write(0, 9, 1, (50, 70), ok(12)),
        ];
        assert_eq!(check(&ops, &[stored(12, 9, 0, 1)]), Vec::<String>::new());
    }

    #[test]
    fn stale_token_write_accepted_is_caught() {
        let (mut ops, mut stored) = valid();
        // The paused ex-holder's write, sent after token 20 was granted, went through.
        ops[5] = write(0, 10, 3, (105, 130), ok(23));
        stored.push(super::tests::stored(23, 10, 0, 3));
        let problems = check(&ops, &stored);
        assert!(
            problems.iter().any(|p| p.contains("stale fenced write")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("tokens went back")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("goes back in tokens")),
            "{problems:?}"
        );
        // Caught even when the new holder never writes: its grant alone fences token 10 off.
        let ops = [
            acquired(0, 10, (0, 10)),
            acquired(1, 20, (20, 30)),
            write(0, 10, 1, (40, 50), ok(31)),
        ];
        let problems = check(&ops, &[super::tests::stored(31, 10, 0, 1)]);
        assert!(
            problems.iter().any(|p| p.contains("stale fenced write")),
            "{problems:?}"
        );
    }

    #[test]
    fn lost_refused_and_phantom_writes_are_caught() {
        let (ops, mut stored) = valid();
        let lost = stored.remove(2);
        let problems = check(&ops, &stored);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("accepted write lost"), "{problems:?}");

        stored.insert(2, lost);
        stored.push(super::tests::stored(25, 10, 0, 3));
        let problems = check(&ops, &stored);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("refused write took effect")),
            "{problems:?}"
        );
        stored.pop();
        stored.push(super::tests::stored(26, 40, 9, 1));
        let problems = check(&ops, &stored);
        assert!(
            problems.iter().any(|p| p.contains("no holder wrote")),
            "{problems:?}"
        );
    }

    #[test]
    fn tokens_must_be_unique_and_grow_with_grant_order() {
        let (mut ops, stored) = valid();
        ops[9] = acquired(2, 20, (175, 190));
        let problems = check(&ops, &stored);
        assert!(
            problems.iter().any(|p| p.contains("granted to clients")),
            "{problems:?}"
        );
        ops[9] = acquired(2, 15, (175, 190));
        let problems = check(&ops, &stored);
        assert!(
            problems.iter().any(|p| p.contains("tokens must grow")),
            "{problems:?}"
        );
    }
}
