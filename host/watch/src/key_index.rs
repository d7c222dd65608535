//! Which watchers cover a key: single-key watchers in a hash map, range watchers in an
//! interval treap (ordered by start, each node knowing the largest end below it), so finding
//! the watchers of one key costs about log(range watchers) plus the number found.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::{KeyRange, WatcherId};

/// Exclusive end of a range; `Unbounded` (from-key watches) is above every key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Arc<[u8]>),
    Unbounded,
}

impl End {
    fn is_above(&self, key: &[u8]) -> bool {
        match self {
            End::Key(end) => end.as_ref() > key,
            End::Unbounded => true,
        }
    }
}

type Link = Option<Box<Node>>;

struct Node {
    start: Arc<[u8]>,
    id: WatcherId,
    end: End,
    priority: u64,
    /// Largest `end` in this subtree.
    max_end: End,
    left: Link,
    right: Link,
}

impl Node {
    fn order(&self, start: &[u8], id: WatcherId) -> Ordering {
        (self.start.as_ref(), self.id).cmp(&(start, id))
    }

    fn refresh(&mut self) {
        let mut max = self.end.clone();
        for child in [&self.left, &self.right].into_iter().flatten() {
            if child.max_end > max {
                max = child.max_end.clone();
            }
        }
        self.max_end = max;
    }
}

/// A deterministic, well-mixed priority per id (splitmix64), so the treap stays balanced in
/// expectation without a random number generator.
fn priority(id: WatcherId) -> u64 {
    let mut z = id.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Splits into (nodes ordered before (start, id), the rest).
fn split(link: Link, start: &[u8], id: WatcherId) -> (Link, Link) {
    let Some(mut node) = link else {
        return (None, None);
    };
    if node.order(start, id) == Ordering::Less {
        let (l, r) = split(node.right.take(), start, id);
        node.right = l;
        node.refresh();
        (Some(node), r)
    } else {
        let (l, r) = split(node.left.take(), start, id);
        node.left = r;
        node.refresh();
        (l, Some(node))
    }
}

/// Joins two treaps where every node of `left` orders before every node of `right`.
fn merge(left: Link, right: Link) -> Link {
    match (left, right) {
        (None, r) => r,
        (l, None) => l,
        (Some(mut l), Some(mut r)) => {
            if l.priority >= r.priority {
                l.right = merge(l.right.take(), Some(r));
                l.refresh();
                Some(l)
            } else {
                r.left = merge(Some(l), r.left.take());
                r.refresh();
                Some(r)
            }
        }
    }
}

fn stab(link: &Link, key: &[u8], out: &mut Vec<WatcherId>) {
    let Some(node) = link else {
        return;
    };
    if !node.max_end.is_above(key) {
        return;
    }
    stab(&node.left, key, out);
    if node.start.as_ref() <= key {
        if node.end.is_above(key) {
            out.push(node.id);
        }
        stab(&node.right, key, out);
    }
}

#[derive(Default)]
pub(crate) struct KeyIndex {
    points: HashMap<Vec<u8>, Vec<WatcherId>>,
    ranges: Link,
}

impl KeyIndex {
    pub(crate) fn insert(&mut self, id: WatcherId, range: &KeyRange) {
        let (start, end) = match range {
            KeyRange::Single(key) => {
                self.points.entry(key.clone()).or_default().push(id);
                return;
            }
            KeyRange::From(start) => (start, End::Unbounded),
            KeyRange::Until(start, end) => (start, End::Key(end.as_slice().into())),
        };
        let node = Box::new(Node {
            start: start.as_slice().into(),
            id,
            max_end: end.clone(),
            end,
            priority: priority(id),
            left: None,
            right: None,
        });
        let (l, r) = split(self.ranges.take(), start, id);
        self.ranges = merge(merge(l, Some(node)), r);
    }

    pub(crate) fn remove(&mut self, id: WatcherId, range: &KeyRange) {
        let start = match range {
            KeyRange::Single(key) => {
                if let Some(ids) = self.points.get_mut(key) {
                    ids.retain(|&other| other != id);
                    if ids.is_empty() {
                        self.points.remove(key);
                    }
                }
                return;
            }
            KeyRange::From(start) | KeyRange::Until(start, _) => start,
        };
        let (before, rest) = split(self.ranges.take(), start, id);
        let (_found, after) = split(rest, start, id.saturating_add(1));
        self.ranges = merge(before, after);
    }

    /// Appends the id of every watcher whose range holds `key`.
    pub(crate) fn matches(&self, key: &[u8], out: &mut Vec<WatcherId>) {
        if let Some(ids) = self.points.get(key) {
            out.extend_from_slice(ids);
        }
        stab(&self.ranges, key, out);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        fn count(link: &Link) -> usize {
            link.as_ref()
                .map_or(0, |n| 1 + count(&n.left) + count(&n.right))
        }
        self.points.values().map(Vec::len).sum::<usize>() + count(&self.ranges)
    }
}
