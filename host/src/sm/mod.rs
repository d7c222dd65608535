pub mod kv;
pub mod txn;
