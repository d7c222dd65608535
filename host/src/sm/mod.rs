//! The only code that changes state when a committed log entry is applied.

pub mod alarm;
pub mod command;
pub mod kv;
pub mod lease;
pub mod txn;
