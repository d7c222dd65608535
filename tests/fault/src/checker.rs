//! Linearizability checker: Wing & Gong's search with Lowe's memoization, as porcupine does it,
//! run per key (linearizability is compositional, so a history is linearizable iff each key's
//! sub-history is). Pure and deterministic: the search is bounded by a step budget rather than a
//! wall-clock timeout, so the same history always gets the same verdict.
//!
//! The search walks the history's call/return events in time order. At a call it tries to
//! linearize that operation now (the model accepts it and the (linearized set, state) pair was
//! not explored before); at a return whose operation is not yet linearized it backtracks. All
//! operations linearized means success; backtracking past the start means a violation.

use std::collections::{BTreeMap, HashSet};

use crate::history::{Entry, Op, Outcome};
use crate::model::{CounterModel, KvModel, Model};

/// Search steps per key before the checker gives up and reports `Undecided`.
pub const CHECK_STEPS_PER_KEY_MAX: u64 = 20_000_000;

/// The checker's verdict on one key's sub-history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    /// No order of the operations satisfies the model. `deepest` is the longest prefix the
    /// search managed to linearize, `stuck` the operations (indices into the key's entries in
    /// call order) that were candidates right after it, for the report.
    Violation {
        deepest: usize,
        stuck: Vec<usize>,
    },
    /// The step budget ran out first.
    Undecided,
}

/// Verdicts per key, in key order.
#[derive(Debug, Default)]
pub struct Report {
    pub keys: BTreeMap<String, KeyVerdict>,
}

impl Report {
    pub fn violations(&self) -> impl Iterator<Item = (&String, &KeyVerdict)> {
        self.keys
            .iter()
            .filter(|(_, v)| matches!(v, KeyVerdict::Violation { .. }))
    }

    pub fn undecided(&self) -> impl Iterator<Item = &String> {
        self.keys
            .iter()
            .filter(|(_, v)| **v == KeyVerdict::Undecided)
            .map(|(k, _)| k)
    }

    pub fn is_linearizable(&self) -> bool {
        self.violations().next().is_none()
    }
}

/// Checks every key of `entries` against model `M`.
pub fn check<M: Model>(entries: &[Entry], steps_per_key_max: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_key.entry(entry.key.as_str()).or_default().push(entry);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| (key.to_owned(), check_key::<M>(&ops, steps_per_key_max)))
        .collect();
    Report { keys }
}

/// Checks a whole run's history: counter keys against the counter model, every other key
/// against the KV model (a key's operations are all of one kind).
pub fn check_history(entries: &[Entry], steps_per_key_max: u64) -> Report {
    let (counters, kv): (Vec<Entry>, Vec<Entry>) =
        entries.iter().cloned().partition(|e| e.op.is_counter());
    let mut report = check::<KvModel>(&kv, steps_per_key_max);
    report
        .keys
        .extend(check::<CounterModel>(&counters, steps_per_key_max).keys);
    report
}

/// The operations of one key the search must place: failed ops had no effect, and a read of
/// unknown outcome returned nothing to check. Sorted by call time.
pub fn relevant<'a>(ops: &[&'a Entry]) -> Vec<&'a Entry> {
    let mut kept: Vec<&Entry> = ops
        .iter()
        .copied()
        .filter(|e| match e.outcome {
            Outcome::Failed => false,
            Outcome::Unknown => !matches!(e.op, Op::Get | Op::ReadCounter),
            Outcome::Ok(_) => true,
        })
        .collect();
    kept.sort_by_key(|e| (e.call_ns, e.return_ns_or_max()));
    kept
}

const NONE: usize = usize::MAX;
/// The list's head sentinel; event `i` is node `i + 1`.
const HEAD: usize = 0;

/// The time-ordered call and return events as a doubly linked list that operations are lifted
/// out of when linearized and put back (in reverse order) when the search backtracks.
struct Events {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per node: the operation it belongs to and whether it is the call.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// Per operation: its call node and its return node.
    call_node: Vec<usize>,
    return_node: Vec<usize>,
}

impl Events {
    fn new(ops: &[&Entry]) -> Self {
        // At equal instants calls sort before returns: touching operations count as concurrent,
        // which can only hide a violation, never invent one.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, e) in ops.iter().enumerate() {
            events.push((e.call_ns, false, i));
            events.push((e.return_ns_or_max(), true, i));
        }
        events.sort_unstable();
        let nodes = events.len() + 1;
        let mut this = Events {
            next: (1..=nodes)
                .map(|n| if n == nodes { NONE } else { n })
                .collect(),
            prev: (0..nodes)
                .map(|n| if n == 0 { NONE } else { n - 1 })
                .collect(),
            op: vec![NONE; nodes],
            is_call: vec![false; nodes],
            call_node: vec![NONE; ops.len()],
            return_node: vec![NONE; ops.len()],
        };
        for (index, (_, is_return, op)) in events.into_iter().enumerate() {
            let node = index + 1;
            this.op[node] = op;
            this.is_call[node] = !is_return;
            if is_return {
                this.return_node[op] = node;
            } else {
                this.call_node[op] = node;
            }
        }
        this
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NONE {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        self.unlink(self.return_node[op]);
    }

    fn unlift(&mut self, op: usize) {
        self.relink(self.return_node[op]);
        self.relink(self.call_node[op]);
    }
}

fn check_key<M: Model>(ops: &[&Entry], steps_max: u64) -> KeyVerdict {
    let prepared = M::prepare(relevant(ops).into_iter().cloned().collect());
    let ops: Vec<&Entry> = prepared.iter().collect();
    let mut events = Events::new(&ops);
    let unknown: Vec<bool> = ops.iter().map(|e| e.outcome == Outcome::Unknown).collect();
    let twin = earlier_twins(&ops);
    let completed_total = unknown.iter().filter(|u| !**u).count();
    let mut completed_done = 0;
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let is_set = |bits: &[u64], op: usize| bits[op / 64] & (1 << (op % 64)) != 0;
    let mut seen: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    // The operations linearized so far, each with the state before it.
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut state = M::init();
    let mut deepest = 0;
    let mut stuck_at_deepest = Vec::new();
    let mut node = events.next[HEAD];
    let mut steps: u64 = 0;
    // Operations of unknown outcome can always go last, where they change nothing anyone
    // observes: once every completed operation is placed, the rest fit after them.
    while completed_done < completed_total {
        steps += 1;
        if steps > steps_max {
            return KeyVerdict::Undecided;
        }
        if node == NONE {
            // Unreachable: a completed, unplaced operation's return is still in the list.
            return KeyVerdict::Undecided;
        }
        let op = events.op[node];
        if events.is_call[node] {
            let entry = ops[op];
            // An unknown op is only worth placing where it changes the state (a no-op can move
            // to the end), and of identical unknown ops the earliest-called goes first (any
            // later twin could take its place).
            let worth_trying = !unknown[op] || twin[op].is_none_or(|t| is_set(&linearized, t));
            let next_state = M::step(&state, &entry.op, &entry.outcome)
                .filter(|next| worth_trying && !(unknown[op] && *next == state));
            if let Some(next_state) = next_state {
                let mut with_op = linearized.clone();
                with_op[op / 64] |= 1 << (op % 64);
                if seen.insert((with_op.clone(), next_state.clone())) {
                    stack.push((op, std::mem::replace(&mut state, next_state)));
                    linearized = with_op;
                    completed_done += usize::from(!unknown[op]);
                    events.lift(op);
                    node = events.next[HEAD];
                    continue;
                }
            }
            node = events.next[node];
        } else {
            // An operation returned without being linearized: undo the last choice.
            if stack.len() >= deepest {
                deepest = stack.len();
                stuck_at_deepest = pending_calls(&events);
            }
            let Some((undone, before)) = stack.pop() else {
                return KeyVerdict::Violation {
                    deepest,
                    stuck: stuck_at_deepest,
                };
            };
            state = before;
            linearized[undone / 64] &= !(1 << (undone % 64));
            completed_done -= usize::from(!unknown[undone]);
            events.unlift(undone);
            node = events.next[events.call_node[undone]];
        }
    }
    KeyVerdict::Linearizable
}

/// For each operation of unknown outcome, the closest earlier-called operation identical to it
/// (same request, also unknown), if any.
fn earlier_twins(ops: &[&Entry]) -> Vec<Option<usize>> {
    let mut last_of: std::collections::HashMap<crate::history::Op, usize> = Default::default();
    ops.iter()
        .enumerate()
        .map(|(i, e)| {
            if e.outcome != Outcome::Unknown {
                return None;
            }
            last_of.insert(e.op, i)
        })
        .collect()
}

/// The operations whose calls precede the first pending return: the candidates the search
/// could not fit.
fn pending_calls(events: &Events) -> Vec<usize> {
    let mut calls = Vec::new();
    let mut node = events.next[HEAD];
    while node != NONE && events.is_call[node] {
        calls.push(events.op[node]);
        node = events.next[node];
    }
    if node != NONE && !calls.contains(&events.op[node]) {
        calls.push(events.op[node]);
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Reply;

    fn op(client: u32, op: Op, call: u64, ret: Option<u64>, outcome: Outcome) -> Entry {
        Entry {
            client,
            key: "k".into(),
            op,
            call_ns: call,
            return_ns: ret,
            outcome,
        }
    }
    fn put(c: u32, v: u64, call: u64, ret: u64) -> Entry {
        op(
            c,
            Op::Put { value: v },
            call,
            Some(ret),
            Outcome::Ok(Reply::Done),
        )
    }
    fn get(c: u32, seen: Option<u64>, call: u64, ret: u64) -> Entry {
        op(c, Op::Get, call, Some(ret), Outcome::Ok(Reply::Read(seen)))
    }
    fn cas(c: u32, expected: u64, new: u64, ok: bool, call: u64, ret: u64) -> Entry {
        let outcome = Outcome::Ok(Reply::Swapped(ok));
        op(c, Op::Cas { expected, new }, call, Some(ret), outcome)
    }
    fn verdict(entries: &[Entry]) -> KeyVerdict {
        check::<KvModel>(entries, CHECK_STEPS_PER_KEY_MAX).keys["k"].clone()
    }
    fn violated(entries: &[Entry]) -> bool {
        matches!(verdict(entries), KeyVerdict::Violation { .. })
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            put(0, 1, 0, 10),
            get(1, Some(1), 20, 30),
            cas(0, 1, 2, true, 40, 50),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_a_violation() {
        let h = [put(0, 1, 0, 10), put(0, 2, 20, 30), get(1, Some(1), 40, 50)];
        assert!(violated(&h));
    }

    #[test]
    fn concurrent_read_may_see_old_or_new() {
        for seen in [Some(1), Some(2)] {
            let h = [put(0, 1, 0, 10), put(0, 2, 20, 60), get(1, seen, 30, 50)];
            assert_eq!(verdict(&h), KeyVerdict::Linearizable, "{seen:?}");
        }
    }

    #[test]
    fn read_of_absent_key_before_any_write_and_not_after() {
        assert_eq!(
            verdict(&[get(0, None, 0, 5), put(1, 1, 10, 20)]),
            KeyVerdict::Linearizable
        );
        assert!(violated(&[put(1, 1, 0, 5), get(0, None, 10, 20)]));
    }

    #[test]
    fn lost_cas_is_a_violation() {
        // Two CASes from the same value both claim success: one of them was lost.
        let h = [
            put(0, 1, 0, 10),
            cas(1, 1, 2, true, 20, 40),
            cas(2, 1, 3, true, 25, 45),
            get(0, Some(3), 50, 60),
        ];
        assert!(violated(&h));
        // An acknowledged CAS whose write later vanishes.
        let h = [
            put(0, 1, 0, 10),
            cas(1, 1, 2, true, 20, 30),
            get(0, Some(1), 40, 50),
        ];
        assert!(violated(&h));
    }

    #[test]
    fn failed_cas_must_see_a_different_value() {
        let h = [put(0, 1, 0, 10), cas(1, 1, 2, false, 20, 30)];
        assert!(violated(&h));
        let h = [
            put(0, 1, 0, 10),
            cas(1, 7, 2, false, 20, 30),
            get(0, Some(1), 40, 50),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn unknown_write_may_take_effect_late_or_never() {
        let unknown = op(0, Op::Put { value: 9 }, 0, None, Outcome::Unknown);
        let late = [
            unknown.clone(),
            get(1, None, 10, 20),
            get(1, Some(9), 100, 110),
        ];
        assert_eq!(verdict(&late), KeyVerdict::Linearizable);
        let never = [
            unknown.clone(),
            put(1, 1, 10, 20),
            get(1, Some(1), 100, 110),
        ];
        assert_eq!(verdict(&never), KeyVerdict::Linearizable);
        // But it cannot un-happen once a read saw it.
        let flip = [unknown, get(1, Some(9), 10, 20), get(1, None, 30, 40)];
        assert!(violated(&flip));
    }

    #[test]
    fn unknown_cas_respects_its_compare() {
        let unknown = op(
            2,
            Op::Cas {
                expected: 5,
                new: 6,
            },
            0,
            None,
            Outcome::Unknown,
        );
        // The compare never held, so the CAS cannot explain value 6.
        assert!(violated(&[
            put(0, 1, 0, 10),
            unknown.clone(),
            get(1, Some(6), 20, 30)
        ]));
        let h = [put(0, 5, 0, 10), unknown, get(1, Some(6), 20, 30)];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn failed_ops_are_ignored_and_foreign_reads_are_violations() {
        let failed = op(0, Op::Put { value: 3 }, 0, Some(5), Outcome::Failed);
        assert!(violated(&[failed, get(1, Some(3), 10, 20)]));
        let h = [
            put(0, 1, 0, 5),
            get(1, Some(crate::history::FOREIGN_VALUE), 10, 20),
        ];
        assert!(violated(&h));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = put(0, 1, 0, 10);
        other.key = "other".into();
        let h = [other, get(1, None, 20, 30)];
        let report = check::<KvModel>(&h, CHECK_STEPS_PER_KEY_MAX);
        assert!(report.is_linearizable());
        assert_eq!(report.keys.len(), 2);
    }

    #[test]
    fn budget_exhaustion_is_undecided_not_a_verdict() {
        let h = [put(0, 1, 0, 10), put(1, 2, 0, 10), get(2, Some(2), 20, 30)];
        assert_eq!(check::<KvModel>(&h, 1).keys["k"], KeyVerdict::Undecided);
    }

    #[test]
    fn many_concurrent_unknown_writes_stay_fast() {
        // 40 writes of unknown outcome overlapping 200 reads that each see the previous write.
        let mut h = Vec::new();
        for i in 0..40u64 {
            h.push(op(
                9,
                Op::Put { value: 1000 + i },
                i,
                None,
                Outcome::Unknown,
            ));
        }
        for i in 0..200u64 {
            h.push(put(0, i + 1, 100 + i * 20, 105 + i * 20));
            h.push(get(1, Some(i + 1), 110 + i * 20, 115 + i * 20));
        }
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn unknown_write_can_explain_a_failed_cas_but_not_a_return_of_the_old_value() {
        let unknown = op(2, Op::Put { value: 9 }, 15, None, Outcome::Unknown);
        let h = [
            put(0, 1, 0, 10),
            unknown.clone(),
            cas(1, 1, 2, false, 20, 30),
        ];
        assert_eq!(verdict(&h), KeyVerdict::Linearizable);
        let h = [
            put(0, 1, 0, 10),
            unknown,
            cas(1, 1, 2, false, 20, 30),
            get(0, Some(1), 40, 50),
        ];
        assert!(violated(&h));
    }

    /// Every order of the operations that respects real time, with operations of unknown
    /// outcome free to be left out: the definition, searched exhaustively.
    fn brute_force(entries: &[Entry]) -> bool {
        let refs: Vec<&Entry> = entries.iter().collect();
        let ops = relevant(&refs);
        fn place(ops: &[&Entry], placed: &mut Vec<bool>, state: Option<u64>) -> bool {
            let all_done = ops
                .iter()
                .zip(placed.iter())
                .all(|(e, p)| *p || e.outcome == Outcome::Unknown);
            if all_done {
                return true;
            }
            for i in 0..ops.len() {
                // `i` may go next if no unplaced completed op returned before it was called.
                let blocked = (0..ops.len()).any(|j| {
                    !placed[j]
                        && j != i
                        && ops[j].outcome != Outcome::Unknown
                        && ops[j].return_ns_or_max() < ops[i].call_ns
                });
                if placed[i] || blocked {
                    continue;
                }
                if let Some(next) = KvModel::step(&state, &ops[i].op, &ops[i].outcome) {
                    placed[i] = true;
                    let ok = place(ops, placed, next);
                    placed[i] = false;
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        place(&ops, &mut vec![false; ops.len()], None)
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(19);
        let (mut linearizable, mut not) = (0, 0);
        for case in 0..4000 {
            let n = rng.random_range(1..=6);
            let mut h = Vec::new();
            let mut written: Vec<u64> = Vec::new();
            for i in 0..n {
                let call = rng.random_range(0..40);
                let ret = call + rng.random_range(1..20);
                let outcome_roll = rng.random_range(0..10);
                let pick = |rng: &mut StdRng, written: &[u64]| {
                    if written.is_empty() || rng.random_bool(0.2) {
                        rng.random_range(1..4)
                    } else {
                        written[rng.random_range(0..written.len())]
                    }
                };
                let entry = match rng.random_range(0..3) {
                    0 => {
                        let value = 10 + i;
                        written.push(value);
                        let outcome = match outcome_roll {
                            0..3 => Outcome::Unknown,
                            3 => Outcome::Failed,
                            _ => Outcome::Ok(Reply::Done),
                        };
                        op(i as u32, Op::Put { value }, call, Some(ret), outcome)
                    }
                    1 => {
                        let seen = rng.random_bool(0.8).then(|| pick(&mut rng, &written));
                        get(i as u32, seen, call, ret)
                    }
                    _ => {
                        let (expected, new) = (pick(&mut rng, &written), 10 + i);
                        written.push(new);
                        let outcome = match outcome_roll {
                            0..3 => Outcome::Unknown,
                            _ => Outcome::Ok(Reply::Swapped(rng.random_bool(0.5))),
                        };
                        op(
                            i as u32,
                            Op::Cas { expected, new },
                            call,
                            Some(ret),
                            outcome,
                        )
                    }
                };
                h.push(entry);
            }
            for e in &mut h {
                if e.outcome == Outcome::Unknown {
                    e.return_ns = None;
                }
            }
            let expected = brute_force(&h);
            let got = verdict(&h);
            assert_eq!(
                got == KeyVerdict::Linearizable,
                expected,
                "case {case}: {h:#?}"
            );
            if expected {
                linearizable += 1
            } else {
                not += 1
            }
        }
        // Both verdicts must be well represented for the comparison to mean something.
        assert!(linearizable > 500 && not > 500, "{linearizable} vs {not}");
    }
}
