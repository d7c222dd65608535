//! Baton's guest SDK: write a module as a plain Rust type implementing [`Module`] and export it
//! with [`module!`]. Build it for `wasm32-unknown-unknown` (never a WASI target: WASI imports are
//! refused at deploy) and turn it into a component with `wit-component`; Baton's own build does
//! both for the modules under `guests/`. Link with `-Clink-arg=-zstack-size=65536` unless the
//! module needs a bigger stack: every call runs on a fresh instance whose linear memory is set
//! up, scanned for the pages the call wrote and reset, and rustc's default stack is 1 MiB of it.
//!
//! The SDK binds contract `baton:module@0.2.0` (`wit/baton.wit`). Layout:
//! - [`store`]: the call's transactional view of the keys, with [`store::Range`] for sorted and
//!   filtered ranges and [`store::lease`] for lease reads;
//! - [`context`]: facts about the call (revision, leader time, caller, lease);
//! - [`Reply`] and [`WaitFor`]: finish, or wait for keys, leases or a time and run again;
//! - [`functions!`]: declare the module's functions (name, reads or writes, waits, summary,
//!   input and an example) for `baton module describe` and `baton call NAME --help`;
//! - [`testing`] (native targets only): an in-memory host, so a module's logic is unit-tested
//!   with `cargo test` and no cluster. On native targets `store` and `context` read and write
//!   that harness's world instead of calling the host.
//!
//! ```
//! struct Echo;
//! impl baton_sdk::Module for Echo {
//!     fn invoke(function: &str, input: &[u8]) -> Result<baton_sdk::Reply, String> {
//!         Ok(baton_sdk::Reply::done(input))
//!     }
//! }
//! baton_sdk::module!(Echo);
//! ```

pub mod bytes;
pub mod context;
pub mod functions;
mod reply;
pub mod store;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use functions::Function;
pub use reply::{KeyRange, Reply, WaitFor};
/// JSON (de)serialization for inputs and outputs.
pub use serde_json as json;

/// What a module implements: one entry point dispatching on the function name, and the
/// clean-up for calls whose client left.
pub trait Module {
    /// Runs `function` on `input`. `Err` commits none of the call's writes and reaches the
    /// client as the call's error message.
    fn invoke(function: &str, input: &[u8]) -> Result<Reply, String>;

    /// Runs through the log after a writing call's client went away (deadline, cancel,
    /// disconnect) before it saw the result, with the call's function, input and caller lease:
    /// withdraw what the call left behind (a waiter's key, a grant nobody will use). Its writes
    /// commit as one revision when it returns `Ok`. The default has nothing to clean up.
    fn abandon(function: &str, input: &[u8]) -> Result<(), String> {
        let _ = (function, input);
        Ok(())
    }
}

/// Parses a JSON input, with an error message naming what was wrong.
pub fn from_json<'a, T: serde::Deserialize<'a>>(input: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(input).map_err(|e| format!("invalid JSON input: {e}"))
}

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "module",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "baton_sdk::bindings",
        // So tests can compare what the store returns.
        additional_derives: [PartialEq],
    });
}

/// Exports `$module` (a type implementing [`Module`]) as the component's `handler`. Only on
/// wasm32: a native build (tests through [`testing::Harness`]) exports nothing, since linkers
/// refuse the component model's export names in native libraries.
#[macro_export]
macro_rules! module {
    ($module:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_module<M: $crate::Module>() {}
            is_module::<$module>();
        };

        #[cfg(target_arch = "wasm32")]
        struct __BatonHandler;
        #[cfg(target_arch = "wasm32")]
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

            fn abandon(
                function: ::std::string::String,
                input: ::std::vec::Vec<u8>,
            ) -> ::core::result::Result<(), ::std::string::String> {
                <$module as $crate::Module>::abandon(&function, &input)
            }
        }
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_world!(__BatonHandler);
    };
}
