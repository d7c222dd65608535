//! One MVCC write context kept open across the KV requests and module calls of an applied log
//! entry.
//!
//! redb does real work for every `open_table` (a lookup in its table tree, and writing the root
//! back when the handle drops): a call opened META to learn its revision, KV_LATEST for each
//! guest read, then META and the three KV tables again to commit, which was ~7% of a follower's
//! CPU under contended Invokes. A guest's store view must be `'static` (wasmtime's store data),
//! so the context lives in a cell that owns a handle to the transaction it borrows from.
//!
//! redb refuses to open a table twice in one transaction, so whoever applies a command that is
//! neither a KV request nor a module call must drop the shared context first (see
//! `sm::command`).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use redb::WriteTransaction;

use crate::mvcc::error::StorageError;
use crate::mvcc::key_index::KeyIndex;
use crate::mvcc::write::WriteCtx;

self_cell::self_cell!(
    struct OpenCtx {
        owner: Arc<WriteTransaction>,
        #[not_covariant]
        dependent: WriteCtx,
    }
);

/// A [`WriteCtx`] shared by the KV requests and module calls of one entry and by the guests'
/// store views.
#[derive(Clone)]
pub struct SharedWriteCtx(Rc<RefCell<OpenCtx>>);

impl SharedWriteCtx {
    pub fn open(txn: &Arc<WriteTransaction>, index: &Arc<KeyIndex>) -> Result<Self, StorageError> {
        let ctx = OpenCtx::try_new(txn.clone(), |txn| WriteCtx::open(txn, index))?;
        Ok(SharedWriteCtx(Rc::new(RefCell::new(ctx))))
    }

    /// Runs `f` on the context. Not reentrant: `f` must not call back into this handle.
    pub fn with<R>(&self, f: impl FnOnce(&mut WriteCtx<'_>) -> R) -> R {
        self.0.borrow_mut().with_dependent_mut(|_, ctx| f(ctx))
    }
}
