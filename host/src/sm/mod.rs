//! The only code that changes state when a committed log entry is applied.

pub mod alarm;
pub mod command;
pub mod guest_store;
pub mod kv;
pub mod lease;
pub mod module;
pub mod shared_write;
pub mod txn;

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod module_tests;
