//! What a call answers: output bytes, or a request to run again once keys change, a lease ends
//! or the leader's clock passes a time.

use crate::bindings::exports::baton::module::handler as wit;

/// Keys a waiting call watches: [start, end) in etcd's convention (see [`crate::store::delete_range`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
}

impl KeyRange {
    /// Just `key`.
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

    /// Whether `key` is inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self.end.as_slice() {
            [] => key == self.start.as_slice(),
            [0] => key >= self.start.as_slice(),
            end => key >= self.start.as_slice() && key < end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The call finished with this output.
    Done(Vec<u8>),
    /// Commit the call's writes, then run the call again with the same input once a key in
    /// `keys` changes, one of `leases` ends, or the leader's clock passes `until_ms`, whichever
    /// comes first. The re-run decides again: a wake-up may be early or spurious.
    Wait {
        keys: Vec<KeyRange>,
        leases: Vec<i64>,
        /// Leader time in Unix milliseconds, as [`crate::context::proposal_time_ms`].
        until_ms: Option<u64>,
    },
}

/// A wait condition built one piece at a time, so a call can say "wait on this key, my lease,
/// or until T" in one expression:
///
/// ```ignore
/// Ok(Reply::wait_for().key(&ahead).lease(mine).until_ms(deadline).into())
/// ```
///
/// The host refuses (and fails the call) a condition naming nothing, an empty key range, or
/// more than 64 key ranges or leases.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitFor {
    pub keys: Vec<KeyRange>,
    pub leases: Vec<i64>,
    pub until_ms: Option<u64>,
}

impl WaitFor {
    /// Also wake on a change to `key`.
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.keys.push(KeyRange::key(key));
        self
    }

    /// Also wake on a change to any key starting with `prefix`.
    pub fn prefix(mut self, prefix: impl AsRef<[u8]>) -> Self {
        self.keys.push(KeyRange::prefix(prefix));
        self
    }

    /// Also wake on a change to any key in `range`.
    pub fn range(mut self, range: KeyRange) -> Self {
        self.keys.push(range);
        self
    }

    /// Also wake when `lease` ends (revoked or expired).
    pub fn lease(mut self, lease: i64) -> Self {
        self.leases.push(lease);
        self
    }

    /// Also wake once the leader's clock passes `ms` (Unix milliseconds); the earliest such
    /// time wins when set twice.
    pub fn until_ms(mut self, ms: u64) -> Self {
        self.until_ms = Some(self.until_ms.map_or(ms, |t| t.min(ms)));
        self
    }

    /// The reply that waits for this.
    pub fn reply(self) -> Reply {
        Reply::Wait {
            keys: self.keys,
            leases: self.leases,
            until_ms: self.until_ms,
        }
    }
}

impl From<WaitFor> for Reply {
    fn from(wait: WaitFor) -> Self {
        wait.reply()
    }
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

    /// Starts a wait condition; see [`WaitFor`].
    pub fn wait_for() -> WaitFor {
        WaitFor::default()
    }

    /// Waits for a change to any of `keys`.
    pub fn wait_on(keys: impl IntoIterator<Item = KeyRange>) -> Self {
        WaitFor {
            keys: keys.into_iter().collect(),
            ..WaitFor::default()
        }
        .reply()
    }

    /// Waits for the end (revocation or expiry) of any of `leases`.
    pub fn wait_on_leases(leases: impl IntoIterator<Item = i64>) -> Self {
        WaitFor {
            leases: leases.into_iter().collect(),
            ..WaitFor::default()
        }
        .reply()
    }

    /// Waits until the leader's clock passes `ms` (Unix milliseconds).
    pub fn wait_until(ms: u64) -> Self {
        Reply::wait_for().until_ms(ms).reply()
    }

    /// The wait condition, when this reply waits.
    pub fn wait_condition(&self) -> Option<WaitFor> {
        match self {
            Reply::Done(_) => None,
            Reply::Wait {
                keys,
                leases,
                until_ms,
            } => Some(WaitFor {
                keys: keys.clone(),
                leases: leases.clone(),
                until_ms: *until_ms,
            }),
        }
    }

    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Reply {
        match self {
            Reply::Done(output) => wit::Reply::Done(output),
            Reply::Wait {
                keys,
                leases,
                until_ms,
            } => wit::Reply::Wait(wit::WaitCondition {
                keys: keys
                    .into_iter()
                    .map(|k| wit::KeyRange {
                        start: k.start,
                        end: k.end,
                    })
                    .collect(),
                leases,
                until_ms,
            }),
        }
    }
}
