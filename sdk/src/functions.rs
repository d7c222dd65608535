//! What a module tells its users about its functions: `baton module describe NAME` and
//! `baton call NAME --help` list them. A module states them once, beside its code, with
//! [`functions!`](crate::functions!); the macro writes them as JSON into the Wasm custom section
//! [`SECTION`], which `wit-component` keeps in the component's core module and the host reads
//! from the stored bytes (checked at deploy: a malformed or oversized section is refused).
//!
//! The JSON, one object per function, unknown fields ignored by the host so later SDKs may add
//! some: `{"functions":[{"name":"add","writes":true,"waits":false,"summary":"…","input":"…",
//! "input_example":"…","output_example":"…"}]}`.

/// Name of the custom section holding the declaration.
pub const SECTION: &str = "baton:functions";

/// One function as its module declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Function {
    /// What a caller passes as `function`.
    pub name: &'static str,
    /// Whether it may write; one that only reads may be called read-only (no log entry).
    pub writes: bool,
    /// Whether it may wait server-side (for keys, leases or a time) before answering.
    pub waits: bool,
    /// One line saying what it does.
    pub summary: &'static str,
    /// What the input holds (its fields and their meaning).
    pub input: &'static str,
    /// An input as a caller would type it.
    pub input_example: &'static str,
    /// What that input may return.
    pub output_example: &'static str,
}

/// Length of [`encode`]'s JSON for `functions`: the custom section's size, known at compile
/// time so the section can be a static array.
pub const fn encoded_len(functions: &[Function]) -> usize {
    let mut out = Json {
        bytes: None,
        len: 0,
    };
    write_all(&mut out, functions);
    out.len
}

/// The custom section's JSON for `functions`; `N` must be [`encoded_len`] of them (a const
/// evaluation error says so otherwise).
pub const fn encode<const N: usize>(functions: &[Function]) -> [u8; N] {
    let mut bytes = [0u8; N];
    let mut out = Json {
        bytes: Some(&mut bytes),
        len: 0,
    };
    write_all(&mut out, functions);
    assert!(out.len == N, "encode: N is not encoded_len(functions)");
    bytes
}

/// A JSON writer usable in const code: counts when `bytes` is None, fills it otherwise.
struct Json<'a> {
    bytes: Option<&'a mut [u8]>,
    len: usize,
}

const fn push(out: &mut Json<'_>, byte: u8) {
    if let Some(bytes) = &mut out.bytes {
        bytes[out.len] = byte;
    }
    out.len += 1;
}

const fn raw(out: &mut Json<'_>, text: &str) {
    let text = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        push(out, text[i]);
        i += 1;
    }
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped, other UTF-8
/// kept as it is.
const fn string(out: &mut Json<'_>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    push(out, b'"');
    let text = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let byte = text[i];
        match byte {
            b'"' | b'\\' => {
                push(out, b'\\');
                push(out, byte);
            }
            b'\n' => raw(out, "\\n"),
            0..0x20 => {
                raw(out, "\\u00");
                push(out, HEX[(byte >> 4) as usize]);
                push(out, HEX[(byte & 0xf) as usize]);
            }
            _ => push(out, byte),
        }
        i += 1;
    }
    push(out, b'"');
}

const fn field(out: &mut Json<'_>, name: &str, value: &str) {
    push(out, b',');
    string(out, name);
    push(out, b':');
    string(out, value);
}

const fn flag(out: &mut Json<'_>, name: &str, value: bool) {
    push(out, b',');
    string(out, name);
    push(out, b':');
    raw(out, if value { "true" } else { "false" });
}

const fn write_all(out: &mut Json<'_>, functions: &[Function]) {
    raw(out, "{\"functions\":[");
    let mut i = 0;
    while i < functions.len() {
        let f = &functions[i];
        if i > 0 {
            push(out, b',');
        }
        raw(out, "{\"name\":");
        string(out, f.name);
        flag(out, "writes", f.writes);
        flag(out, "waits", f.waits);
        field(out, "summary", f.summary);
        field(out, "input", f.input);
        field(out, "input_example", f.input_example);
        field(out, "output_example", f.output_example);
        push(out, b'}');
        i += 1;
    }
    raw(out, "]}");
}

/// Declares the module's functions: defines `const FUNCTIONS: &[baton_sdk::Function]` and, in
/// a wasm32 build, the custom section that carries them into the component. Use it once per
/// module (two would concatenate into one malformed section, which deploy refuses). Each
/// function is its name, `writes` or `reads`, optionally `waits`, then its texts:
///
/// ```
/// baton_sdk::functions! {
///     "add" writes {
///         summary: "Adds `by` to every counter in `keys`, in one revision.",
///         input: "keys: counter keys; by: amount (negative subtracts)",
///         example: r#"{"keys":["c1"],"by":2}"# => r#"{"c1":2}"#,
///     }
///     "get" reads waits {
///         summary: "Reads counters; with at_least, waits until every one reaches it.",
///         input: "keys: counter keys; at_least (optional): value to wait for",
///         example: r#"{"keys":["c1"]}"# => r#"{"c1":2}"#,
///     }
/// }
/// assert_eq!(FUNCTIONS[1].name, "get");
/// assert!(FUNCTIONS[1].waits && !FUNCTIONS[1].writes);
/// ```
#[macro_export]
macro_rules! functions {
    ($(
        $name:literal $access:ident $($waits:ident)? {
            summary: $summary:expr,
            input: $input:expr,
            example: $input_example:expr => $output_example:expr $(,)?
        }
    )*) => {
        /// This module's functions, as `baton module describe` lists them.
        const FUNCTIONS: &[$crate::Function] = &[$(
            $crate::Function {
                name: $name,
                writes: $crate::functions!(@access $access),
                waits: $crate::functions!(@waits $($waits)?),
                summary: $summary,
                input: $input,
                input_example: $input_example,
                output_example: $output_example,
            },
        )*];

        // In the module's own data on native targets too (unused there), so `FUNCTIONS` is
        // always used and the encoding is checked by every build.
        #[cfg_attr(target_arch = "wasm32", unsafe(link_section = "baton:functions"))]
        #[used]
        static __BATON_FUNCTIONS_SECTION: [u8; $crate::functions::encoded_len(FUNCTIONS)] =
            $crate::functions::encode(FUNCTIONS);
    };
    (@access writes) => { true };
    (@access reads) => { false };
    (@access $other:ident) => {
        ::core::compile_error!(concat!(
            "expected `writes` or `reads`, found `", stringify!($other), "`"
        ))
    };
    (@waits) => { false };
    (@waits waits) => { true };
    (@waits $other:ident) => {
        ::core::compile_error!(concat!("expected `waits` or `{`, found `", stringify!($other), "`"))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &[Function] = &[
        Function {
            name: "a-b",
            writes: true,
            waits: false,
            summary: "quotes \" and \\ and\ttab",
            input: "line\nbreak, é",
            input_example: r#"{"k":"v"}"#,
            output_example: "",
        },
        Function {
            name: "c",
            writes: false,
            waits: true,
            summary: "",
            input: "",
            input_example: "",
            output_example: "{}",
        },
    ];

    #[test]
    fn the_section_is_json_that_reads_back_as_declared() {
        const LEN: usize = encoded_len(TRICKY);
        let bytes: [u8; LEN] = encode(TRICKY);
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).expect("valid JSON");
        let functions = parsed["functions"].as_array().expect("a list");
        assert_eq!(functions.len(), 2);
        for (json, declared) in functions.iter().zip(TRICKY) {
            assert_eq!(json["name"], declared.name);
            assert_eq!(json["writes"], declared.writes);
            assert_eq!(json["waits"], declared.waits);
            assert_eq!(json["summary"], declared.summary);
            assert_eq!(json["input"], declared.input);
            assert_eq!(json["input_example"], declared.input_example);
            assert_eq!(json["output_example"], declared.output_example);
        }
    }

    #[test]
    fn no_functions_is_an_empty_list() {
        const LEN: usize = encoded_len(&[]);
        assert_eq!(&encode::<LEN>(&[]), br#"{"functions":[]}"#);
    }

    mod declared {
        crate::functions! {
            "x" writes waits {
                summary: "s",
                input: "i",
                example: "in" => "out",
            }
        }

        #[test]
        fn the_macro_states_each_function_once() {
            assert_eq!(FUNCTIONS.len(), 1);
            assert!(FUNCTIONS[0].writes && FUNCTIONS[0].waits);
            assert_eq!(
                &__BATON_FUNCTIONS_SECTION[..],
                &crate::functions::encode::<{ crate::functions::encoded_len(FUNCTIONS) }>(
                    FUNCTIONS
                )[..]
            );
        }
    }
}
