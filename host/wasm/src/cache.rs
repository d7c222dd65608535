//! A map keyed by module hash, shared by a runtime's clones. Bounded crudely: past
//! `COMPILED_MODULES_CACHED_MAX` entries it starts over (everything in it can be recomputed
//! from the module's bytes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ModuleHash;
use baton_limits::COMPILED_MODULES_CACHED_MAX;

pub(crate) struct HashCache<V>(Arc<Mutex<HashMap<ModuleHash, V>>>);

impl<V> Default for HashCache<V> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<V> Clone for HashCache<V> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<V: Clone> HashCache<V> {
    /// A poisoned lock only means a panic elsewhere mid-insert; the map itself stays valid.
    fn map(&self) -> MutexGuard<'_, HashMap<ModuleHash, V>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn get(&self, hash: &ModuleHash) -> Option<V> {
        self.map().get(hash).cloned()
    }

    pub(crate) fn insert(&self, hash: ModuleHash, value: V) {
        let mut map = self.map();
        if map.len() >= COMPILED_MODULES_CACHED_MAX {
            map.clear();
        }
        map.insert(hash, value);
    }
}
