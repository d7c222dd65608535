//! Sequential specifications the checker linearizes histories against. A model is a pure
//! function from (state, operation, outcome) to the next state, or `None` when the outcome is
//! impossible in that state. Operations of unknown outcome must be modelled as "took effect
//! here": the checker also tries linearizing them last, which stands for "never took effect".

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
                Op::Get => {}
            }
        }
        entries
    }
}
