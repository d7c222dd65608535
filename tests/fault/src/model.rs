//! Sequential specifications the checker linearizes histories against. A model is a pure
//! function from (state, operation, outcome) to the next state, or `None` when the outcome is
//! impossible in that state. Operations of unknown outcome must be modelled as "took effect
//! here": the checker also tries linearizing them last, which stands for "never took effect".
//! Two models: a KV register with compare-and-swap, and a counter incremented by one.

use std::hash::Hash;

use std::collections::HashSet;

use crate::history::{Entry, Op, Outcome, Reply, UNOBSERVED_VALUE, Value};

/// A sequential object: its states and which outcomes each operation may have in each state.
pub trait Model {
    type State: Clone + Eq + Hash + std::fmt::Debug;
    fn init() -> Self::State;
    fn step(state: &Self::State, op: &Op, outcome: &Outcome) -> Option<Self::State>;
    /// Rewrites one key's operations into an equivalent, cheaper-to-search form.
    fn prepare(entries: Vec<Entry>) -> Vec<Entry> {
        entries
    }
}

/// One register of a key-value store with compare-and-swap: the key's value, or `None` while
/// the key does not exist.
pub struct KvModel;

impl Model for KvModel {
    type State = Option<Value>;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Op, outcome: &Outcome) -> Option<Self::State> {
        let holds = |expected: Value| *state == Some(expected);
        match (op, outcome) {
            (Op::Put { value }, Outcome::Ok(Reply::Done) | Outcome::Unknown) => Some(Some(*value)),
            (Op::Get, Outcome::Ok(Reply::Read(seen))) => (seen == state).then_some(*state),
            (Op::Cas { expected, new }, Outcome::Ok(Reply::Swapped(true))) => {
                holds(*expected).then_some(Some(*new))
            }
            (Op::Cas { expected, .. }, Outcome::Ok(Reply::Swapped(false))) => {
                (!holds(*expected)).then_some(*state)
            }
            // Had it taken effect here, its compare decided whether it wrote.
            (Op::Cas { expected, new }, Outcome::Unknown) => {
                Some(if holds(*expected) { Some(*new) } else { *state })
            }
            // A read of unknown outcome, a failed op, or a reply of the wrong kind constrains
            // nothing; the checker drops the first two before searching.
            (Op::Get, Outcome::Unknown | Outcome::Failed) => Some(*state),
            _ => None,
        }
    }

    /// Values that no read returned and no CAS compares with cannot be told apart by any
    /// operation of the history, so they all become `UNOBSERVED_VALUE`: writes of unknown
    /// outcome then become identical, and the checker tries only one order of them.
    fn prepare(mut entries: Vec<Entry>) -> Vec<Entry> {
        let mut observed: HashSet<Value> = HashSet::new();
        for e in &entries {
            match (e.op, e.outcome) {
                (_, Outcome::Ok(Reply::Read(Some(value)))) => {
                    observed.insert(value);
                }
                (Op::Cas { expected, .. }, _) => {
                    observed.insert(expected);
                }
                _ => {}
            }
        }
        let merge = |value: &mut Value| {
            if !observed.contains(value) {
                *value = UNOBSERVED_VALUE;
            }
        };
        for e in &mut entries {
            match &mut e.op {
                Op::Put { value } => merge(value),
                Op::Cas { new, .. } => merge(new),
                Op::Get | Op::Incr | Op::ReadCounter => {}
            }
        }
        entries
    }
}

/// A counter that only grows by one: each acknowledged increment returns the total after it
/// (so two increments never return the same total), a read returns the current total, and an
/// increment lost by the store shows up as a later total that repeats or a read that goes back.
pub struct CounterModel;

impl Model for CounterModel {
    type State = u64;

    fn init() -> Self::State {
        0
    }

    fn step(state: &Self::State, op: &Op, outcome: &Outcome) -> Option<Self::State> {
        let next = state.checked_add(1)?;
        match (op, outcome) {
            (Op::Incr, Outcome::Ok(Reply::Count(total))) => (*total == next).then_some(next),
            (Op::Incr, Outcome::Unknown) => Some(next),
            (Op::ReadCounter, Outcome::Ok(Reply::Count(seen))) => (seen == state).then_some(*state),
            (Op::ReadCounter, Outcome::Unknown | Outcome::Failed) => Some(*state),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::{CHECK_STEPS_PER_KEY_MAX, KeyVerdict, check};

    fn counter_op(client: u32, op: Op, span: (u64, u64), outcome: Outcome) -> Entry {
        Entry {
            client,
            key: "fault/counter/0".into(),
            op,
            call_ns: span.0,
            return_ns: (outcome != Outcome::Unknown).then_some(span.1),
            outcome,
        }
    }
    fn incr(client: u32, total: u64, span: (u64, u64)) -> Entry {
        counter_op(client, Op::Incr, span, Outcome::Ok(Reply::Count(total)))
    }
    fn read(client: u32, seen: u64, span: (u64, u64)) -> Entry {
        counter_op(
            client,
            Op::ReadCounter,
            span,
            Outcome::Ok(Reply::Count(seen)),
        )
    }
    fn linearizable(entries: &[Entry]) -> bool {
        let report = check::<CounterModel>(entries, CHECK_STEPS_PER_KEY_MAX);
        assert!(
            report.undecided().next().is_none(),
            "the budget must suffice for a hand-made history"
        );
        report.keys.values().all(|v| *v == KeyVerdict::Linearizable)
    }

    #[test]
    fn concurrent_increments_with_distinct_totals_and_monotone_reads_pass() {
        let h = [
            read(2, 0, (0, 5)),
            incr(0, 2, (10, 40)),
            incr(1, 1, (15, 30)),
            read(2, 1, (20, 35)),
            counter_op(1, Op::Incr, (50, 0), Outcome::Unknown),
            incr(0, 4, (60, 70)),
            read(2, 4, (80, 90)),
        ];
        assert!(linearizable(&h));
    }

    #[test]
    fn duplicate_total_is_a_violation() {
        let h = [incr(0, 1, (0, 10)), incr(1, 1, (5, 15))];
        assert!(!linearizable(&h));
    }

    #[test]
    fn lost_increment_is_a_violation() {
        // Both increments were acknowledged, but the final read sees only one.
        let h = [
            incr(0, 1, (0, 10)),
            incr(1, 2, (20, 30)),
            read(2, 1, (40, 50)),
        ];
        assert!(!linearizable(&h));
        // A read going back is the same loss seen earlier.
        let h = [
            incr(0, 1, (0, 10)),
            read(1, 1, (20, 30)),
            read(1, 0, (40, 50)),
        ];
        assert!(!linearizable(&h));
    }

    #[test]
    fn unknown_increment_may_explain_a_jump_but_not_a_skip_without_one() {
        let unknown = counter_op(1, Op::Incr, (5, 0), Outcome::Unknown);
        assert!(linearizable(&[unknown.clone(), incr(0, 2, (10, 20))]));
        assert!(!linearizable(&[incr(0, 2, (10, 20))]));
        // Nor an increment called after the read it would have to precede.
        assert!(!linearizable(&[
            read(0, 1, (0, 10)),
            counter_op(1, Op::Incr, (20, 0), Outcome::Unknown)
        ]));
    }
}
