//! What a call answers: output bytes, or a request to run again when keys change.

use crate::bindings::exports::baton::module::handler as wit;

/// Keys a waiting call watches: [start, end) in etcd's convention (see [`crate::store::delete_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    pub fn key(key: impl AsRef<[u8]>) -> Self {
        KeyRange {
            start: key.as_ref().to_vec(),
            end: Vec::new(),
        }
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> Self {
        KeyRange {
            start: prefix.as_ref().to_vec(),
            end: crate::store::prefix_end(prefix.as_ref()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The call finished with this output.
    Done(Vec<u8>),
    /// Commit the call's writes, then run it again once a key in `keys` changes or one of
    /// `leases` ends.
    Wait {
        keys: Vec<KeyRange>,
        leases: Vec<i64>,
    },
}

impl Reply {
    pub fn done(output: impl AsRef<[u8]>) -> Self {
        Reply::Done(output.as_ref().to_vec())
    }

    /// Finishes with `value` encoded as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Self, String> {
        serde_json::to_vec(value)
            .map(Reply::Done)
            .map_err(|e| format!("encoding output: {e}"))
    }

    /// Waits for a change to any of `keys`.
    pub fn wait_on(keys: impl IntoIterator<Item = KeyRange>) -> Self {
        Reply::Wait {
            keys: keys.into_iter().collect(),
            leases: Vec::new(),
        }
    }

    /// Waits for the end (revocation or expiry) of any of `leases`.
    pub fn wait_on_leases(leases: impl IntoIterator<Item = i64>) -> Self {
        Reply::Wait {
            keys: Vec::new(),
            leases: leases.into_iter().collect(),
        }
    }

    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Reply {
        match self {
            Reply::Done(output) => wit::Reply::Done(output),
            Reply::Wait { keys, leases } => wit::Reply::Wait(wit::WaitCondition {
                keys: keys
                    .into_iter()
                    .map(|k| wit::KeyRange {
                        start: k.start,
                        end: k.end,
                    })
                    .collect(),
                leases,
            }),
        }
    }
}
