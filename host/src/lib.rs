pub mod api;
pub mod limits;
pub mod mvcc;
pub mod proto;
pub mod sm;
pub mod storage;
