pub mod kv_checks;
pub mod status;
