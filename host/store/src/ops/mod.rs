//! The deterministic writes of committed commands to the state database. Each takes the batch's
//! write transaction and the request and returns the response and the events it produced;
//! nothing here reads a clock or commits.

pub mod alarm;
pub mod kv;
pub mod lease;
pub mod shared_write;
pub mod txn;
