//! What a call produced, as data every replica agrees on.

use crate::ModuleHash;

/// What a waiting call waits for (see `wit/baton.wit`); ranges in etcd's convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitCondition {
    pub keys: Vec<(Vec<u8>, Vec<u8>)>,
    pub leases: Vec<i64>,
    /// Run again once this much leader time (Unix ms) has passed (contract 0.2).
    pub until_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The call finished: commit its writes and answer with `output`.
    Done { output: Vec<u8>, fuel_used: u64 },
    /// Commit the writes and run the call again when `condition` holds.
    Wait {
        condition: WaitCondition,
        fuel_used: u64,
    },
    /// Commit nothing; every replica fails the call the same way.
    Failed(GuestFailure),
}

/// A deterministic failure of a call: a property of the module, its input and the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestFailure {
    #[error("fuel exhausted after {fuel} units")]
    FuelExhausted { fuel: u64 },
    #[error("guest hit its memory cap of {bytes_max} bytes")]
    MemoryCap { bytes_max: usize },
    /// `code` is a stable name (e.g. `unreachable`), never the engine's message, which may
    /// change between versions.
    #[error("guest trapped: {code}")]
    Trapped { code: String },
    /// The guest returned an error; the message is the guest's own.
    #[error("{0}")]
    GuestError(String),
    /// The store refused an operation (e.g. a put with an unknown lease).
    #[error("{0}")]
    Refused(String),
    #[error("unknown module {0}")]
    UnknownModule(String),
    #[error("input of {bytes} bytes exceeds the limit of {bytes_max}")]
    InputTooLarge { bytes: usize, bytes_max: usize },
    #[error("output of {bytes} bytes exceeds the limit of {bytes_max}")]
    OutputTooLarge { bytes: usize, bytes_max: usize },
    /// A put, or a run's puts together, went past a size bound.
    #[error("{0}")]
    WriteLimit(String),
}

/// A failure that is not a property of the call (the database or the host failed, or a module
/// that validated at deploy no longer compiles): the node must stop rather than commit an
/// outcome its peers may not share.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeFatal {
    #[error("storage failed during a guest call: {0}")]
    Storage(String),
    #[error("module {} failed to compile at call time: {reason}", crate::hash_hex(.hash))]
    Compile { hash: ModuleHash, reason: String },
    #[error("guest runtime failed: {0}")]
    Host(String),
}

/// Stable names for the engine's trap kinds: what a failed call commits as its reason.
pub(crate) fn trap_code(trap: wasmtime::Trap) -> String {
    use wasmtime::Trap;
    let name = match trap {
        Trap::UnreachableCodeReached => "unreachable",
        Trap::StackOverflow => "stack overflow",
        Trap::MemoryOutOfBounds => "out of bounds memory access",
        Trap::HeapMisaligned => "unaligned memory access",
        Trap::TableOutOfBounds => "out of bounds table access",
        Trap::IndirectCallToNull => "uninitialized table element",
        Trap::BadSignature => "indirect call type mismatch",
        Trap::IntegerOverflow => "integer overflow",
        Trap::IntegerDivisionByZero => "integer divide by zero",
        Trap::BadConversionToInteger => "invalid conversion to integer",
        Trap::NullReference => "null reference",
        Trap::AllocationTooLarge => "allocation too large",
        Trap::CastFailure => "cast failure",
        // Rarer kinds keep the variant's name, stable while the engine version is pinned.
        other => return format!("{other:?}"),
    };
    name.to_string()
}
