//! A port of etcd 3.4's `pkg/adt` red-black interval tree over "affine" byte strings (the
//! empty string sorts above everything), used only by the txn duplicate-key check.
//!
//! etcd's check gives surprising answers for intervals whose end is below their begin (for
//! instance a delete with range_end "\0", which the check does not treat as "to the end"),
//! and those answers depend on the tree's shape. Baton must accept and refuse exactly the
//! same txns, so this mirrors etcd's insert, rotations, max bookkeeping and search step for
//! step instead of using a simpler correct structure.

use std::cmp::Ordering;

/// Index of the shared black sentinel node.
const NIL: usize = 0;

/// Orders affine strings: the empty string is +infinity.
fn affine_cmp(a: &[u8], b: &[u8]) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.cmp(b),
    }
}

/// A half-open interval [begin, end) of affine strings.
#[derive(Clone, Debug)]
pub(crate) struct Interval {
    pub(crate) begin: Vec<u8>,
    pub(crate) end: Vec<u8>,
}

impl Interval {
    /// The interval holding exactly `key`: [key, key + "\0").
    pub(crate) fn point(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Interval {
            begin: key.to_vec(),
            end,
        }
    }

    /// etcd's `Interval.Compare`: -1 left of, 1 right of, 0 overlapping `other`.
    fn compare(&self, other: &Interval) -> i32 {
        compare_bounds(&self.begin, &self.end, &other.begin, &other.end)
    }
}

fn compare_bounds(begin: &[u8], end: &[u8], other_begin: &[u8], other_end: &[u8]) -> i32 {
    let begin_vs_begin = affine_cmp(begin, other_begin);
    let begin_vs_end = affine_cmp(begin, other_end);
    let end_vs_begin = affine_cmp(end, other_begin);
    if begin_vs_begin == Ordering::Less && end_vs_begin != Ordering::Greater {
        return -1;
    }
    if begin_vs_end != Ordering::Less {
        return 1;
    }
    0
}

struct Node {
    ivl: Interval,
    /// Largest end among this node's subtree, as etcd maintains it.
    max: Vec<u8>,
    left: usize,
    right: usize,
    parent: usize,
    red: bool,
}

/// etcd's `IntervalTree`, insert-only.
pub(crate) struct IntervalTree {
    nodes: Vec<Node>,
    root: usize,
}

impl Default for IntervalTree {
    fn default() -> Self {
        let sentinel = Node {
            ivl: Interval {
                begin: Vec::new(),
                end: Vec::new(),
            },
            max: Vec::new(),
            left: NIL,
            right: NIL,
            parent: NIL,
            red: false,
        };
        IntervalTree {
            nodes: vec![sentinel],
            root: NIL,
        }
    }
}

impl IntervalTree {
    fn is_red(&self, x: usize) -> bool {
        x != NIL && self.nodes[x].red
    }

    /// Adds `ivl` (duplicates allowed).
    pub(crate) fn insert(&mut self, ivl: Interval) {
        let z = self.nodes.len();
        let max = ivl.end.clone();
        self.nodes.push(Node {
            ivl,
            max,
            left: NIL,
            right: NIL,
            parent: NIL,
            red: true,
        });
        let mut y = NIL;
        let mut x = self.root;
        while x != NIL {
            y = x;
            x = if self.begin_less(z, x) {
                self.nodes[x].left
            } else {
                self.nodes[x].right
            };
        }
        self.nodes[z].parent = y;
        if y == NIL {
            self.root = z;
        } else {
            if self.begin_less(z, y) {
                self.nodes[y].left = z;
            } else {
                self.nodes[y].right = z;
            }
            self.update_max(y);
        }
        self.insert_fixup(z);
    }

    fn begin_less(&self, a: usize, b: usize) -> bool {
        affine_cmp(&self.nodes[a].ivl.begin, &self.nodes[b].ivl.begin) == Ordering::Less
    }

    fn insert_fixup(&mut self, mut z: usize) {
        while self.is_red(self.nodes[z].parent) {
            let parent = self.nodes[z].parent;
            let grand = self.nodes[parent].parent;
            let parent_is_left = parent == self.nodes[grand].left;
            let uncle = if parent_is_left {
                self.nodes[grand].right
            } else {
                self.nodes[grand].left
            };
            if self.is_red(uncle) {
                self.nodes[uncle].red = false;
                self.nodes[parent].red = false;
                self.nodes[grand].red = true;
                z = grand;
                continue;
            }
            let inner = if parent_is_left {
                self.nodes[parent].right
            } else {
                self.nodes[parent].left
            };
            if z == inner {
                z = parent;
                if parent_is_left {
                    self.rotate_left(z)
                } else {
                    self.rotate_right(z)
                }
            }
            let parent = self.nodes[z].parent;
            let grand = self.nodes[parent].parent;
            self.nodes[parent].red = false;
            self.nodes[grand].red = true;
            if parent_is_left {
                self.rotate_right(grand)
            } else {
                self.rotate_left(grand)
            }
        }
        let root = self.root;
        self.nodes[root].red = false;
    }

    fn update_max(&mut self, mut x: usize) {
        while x != NIL {
            let node = &self.nodes[x];
            let mut max = &node.ivl.end;
            if node.left != NIL && affine_cmp(&self.nodes[node.left].max, max) == Ordering::Greater
            {
                max = &self.nodes[node.left].max;
            }
            if node.right != NIL
                && affine_cmp(&self.nodes[node.right].max, max) == Ordering::Greater
            {
                max = &self.nodes[node.right].max;
            }
            if affine_cmp(&node.max, max) == Ordering::Equal {
                break;
            }
            let max = max.clone();
            self.nodes[x].max = max;
            x = self.nodes[x].parent;
        }
    }

    fn rotate_left(&mut self, x: usize) {
        let y = self.nodes[x].right;
        if y == NIL {
            return;
        }
        let y_left = self.nodes[y].left;
        self.nodes[x].right = y_left;
        if y_left != NIL {
            self.nodes[y_left].parent = x;
        }
        self.update_max(x);
        self.replace_parent(x, y);
        self.nodes[y].left = x;
        self.update_max(y);
    }

    fn rotate_right(&mut self, x: usize) {
        let y = self.nodes[x].left;
        if y == NIL {
            return;
        }
        let y_right = self.nodes[y].right;
        self.nodes[x].left = y_right;
        if y_right != NIL {
            self.nodes[y_right].parent = x;
        }
        self.update_max(x);
        self.replace_parent(x, y);
        self.nodes[y].right = x;
        self.update_max(y);
    }

    /// Puts `y` where `x` hangs from its parent, then makes `y` the parent of `x`.
    fn replace_parent(&mut self, x: usize, y: usize) {
        let parent = self.nodes[x].parent;
        self.nodes[y].parent = parent;
        if parent == NIL {
            self.root = y;
        } else {
            if x == self.nodes[parent].left {
                self.nodes[parent].left = y;
            } else {
                self.nodes[parent].right = y;
            }
            self.update_max(parent);
        }
        self.nodes[x].parent = y;
    }

    /// etcd's `Intersects`: a search that follows a single path down the tree.
    pub(crate) fn intersects(&self, iv: &Interval) -> bool {
        let mut x = self.root;
        while x != NIL && iv.compare(&self.nodes[x].ivl) != 0 {
            let left = self.nodes[x].left;
            x = if left != NIL && affine_cmp(&self.nodes[left].max, &iv.begin) == Ordering::Greater
            {
                left
            } else {
                self.nodes[x].right
            };
        }
        x != NIL
    }

    /// The intervals etcd's `Visit(iv)` reaches, in its visiting order.
    fn visit(&self, x: usize, iv: &Interval, out: &mut Vec<Interval>) {
        if x == NIL {
            return;
        }
        let node = &self.nodes[x];
        match iv.compare(&node.ivl) {
            v if v < 0 => self.visit(node.left, iv, out),
            v if v > 0 => {
                if compare_bounds(&node.ivl.begin, &node.max, &iv.begin, &iv.end) == 0 {
                    self.visit(node.left, iv, out);
                    self.visit(node.right, iv, out);
                }
            }
            _ => {
                self.visit(node.left, iv, out);
                out.push(node.ivl.clone());
                self.visit(node.right, iv, out);
            }
        }
    }

    /// etcd's `Union`: inserts every interval of `other` that `Visit(within)` reaches.
    pub(crate) fn union(&mut self, other: &IntervalTree, within: &Interval) {
        let mut found = Vec::new();
        other.visit(other.root, within, &mut found);
        for ivl in found {
            self.insert(ivl);
        }
    }
}
