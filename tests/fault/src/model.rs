//! Sequential specifications the checker linearizes histories against. A model is a pure
//! function from (state, operation, outcome) to the next state, or `None` when the outcome is
//! impossible in that state. Operations of unknown outcome must be modelled as "took effect
//! here": the checker also tries linearizing them last, which stands for "never took effect".

use std::hash::Hash;

use crate::history::{Op, Outcome, Reply, Value};

/// A sequential object: its states and which outcomes each operation may have in each state.
pub trait Model {
    type State: Clone + Eq + Hash + std::fmt::Debug;
    fn init() -> Self::State;
    fn step(state: &Self::State, op: &Op, outcome: &Outcome) -> Option<Self::State>;
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
            (Op::Cas { expected, new }, Outcome::Unknown) => Some(if holds(*expected) {
                Some(*new)
            } else {
                *state
            }),
            // A read of unknown outcome, a failed op, or a reply of the wrong kind constrains
            // nothing; the checker drops the first two before searching.
            (Op::Get, Outcome::Unknown | Outcome::Failed) => Some(*state),
            _ => None,
        }
    }
}
