//! Baton's guest SDK: write a module as a plain Rust type implementing [`Module`] and export it
//! with [`module!`]. Build it for `wasm32-unknown-unknown` (never a WASI target: WASI imports are
//! refused at deploy) and turn it into a component with `wit-component`; Baton's own build does
//! both for the modules under `guests/`. Link with `-Clink-arg=-zstack-size=65536` unless the
//! module needs a bigger stack: every call runs on a fresh instance whose linear memory is set
//! up, scanned for the pages the call wrote and reset, and rustc's default stack is 1 MiB of it.
//!
//! ```ignore
//! struct Echo;
//! impl baton_sdk::Module for Echo {
//!     fn invoke(function: &str, input: &[u8]) -> Result<baton_sdk::Reply, String> {
//!         Ok(baton_sdk::Reply::done(input))
//!     }
//! }
//! baton_sdk::module!(Echo);
//! ```

pub mod context;
mod reply;
pub mod store;

pub use reply::{KeyRange, Reply};
/// JSON (de)serialization for inputs and outputs.
pub use serde_json as json;

/// What a module implements: one entry point dispatching on the function name.
pub trait Module {
    /// Runs `function` on `input`. `Err` commits none of the call's writes and reaches the
    /// client as the call's error message.
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String>;
}

/// Parses a JSON input, with an error message naming what was wrong.
pub fn from_json<'a, T: serde::Deserialize<'a>>(input: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(input).map_err(|e| format!("invalid JSON input: {e}"))
}

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.1",
        world: "module",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "baton_sdk::bindings",
    });
}

/// Exports `$module` (a type implementing [`Module`]) as the component's `handler`.
#[macro_export]
macro_rules! module {
    ($module:ty) => {
        struct __BatonHandler;
        impl $crate::bindings::exports::baton::module::handler::Guest for __BatonHandler {
            fn invoke(
                function: ::std::string::String,
                input: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<
                $crate::bindings::exports::baton::module::handler::Reply,
                ::std::string::String,
            > {
                <$module as $crate::Module>::invoke(&function, &input).map($crate::Reply::into_wit)
            }
        }
        $crate::bindings::__export_world!(__BatonHandler);
    };
}
