//! The state-machine database: table definitions and snapshots.

pub mod schema;
pub mod snapshot;

pub use schema::init_schema;
