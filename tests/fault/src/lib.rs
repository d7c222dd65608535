//! Baton's fault harness. Placeholder map, filled in below.

pub mod checker;
pub mod history;
pub mod model;
