//! The functions a module declares: the JSON custom section [`FUNCTIONS_SECTION`] (the SDK's
//! `functions!` writes it) found anywhere in the component — `wit-component` keeps it in the
//! nested core module, a tool may append it to the component itself. At most one such section;
//! none means the module declares nothing (modules built before the SDK had the macro) and
//! describes by its exports only.
//!
//! Read from the stored bytes whenever asked, so the replicated state and the log are the same
//! with or without it. Deploy runs [`declared_functions`] too, before proposing and on every
//! member at apply: it depends on the bytes alone (bounded sizes, no clock, no hash-ordered
//! maps), so every member refuses or accepts alike. Unknown JSON fields are ignored, so a
//! later SDK may add some without an older member refusing what a newer one stores.

use std::collections::BTreeSet;

use baton_limits::{
    MODULE_FUNCTION_NAME_BYTES_MAX, MODULE_FUNCTIONS_MAX, MODULE_FUNCTIONS_SECTION_BYTES_MAX,
};
use wasmparser::{Parser, Payload};

/// The custom section's name (the SDK's `baton_sdk::functions::SECTION`).
pub const FUNCTIONS_SECTION: &str = "baton:functions";

/// One declared function, as `baton module describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DeclaredFunction {
    pub name: String,
    /// Whether it may write; absent counts as writing, the cautious reading.
    #[serde(default = "writes_by_default")]
    pub writes: bool,
    /// Whether it may wait server-side before answering.
    #[serde(default)]
    pub waits: bool,
    /// One line.
    #[serde(default)]
    pub summary: String,
    /// What the input holds.
    #[serde(default)]
    pub input: String,
    #[serde(default)]
    pub input_example: String,
    #[serde(default)]
    pub output_example: String,
}

fn writes_by_default() -> bool {
    true
}

#[derive(serde::Deserialize)]
struct Section {
    functions: Vec<DeclaredFunction>,
}

/// The functions `component` declares, None when it has no [`FUNCTIONS_SECTION`], or why its
/// declaration is unacceptable.
pub fn declared_functions(component: &[u8]) -> Result<Option<Vec<DeclaredFunction>>, String> {
    let mut found = None;
    // Walks nested core modules and components too.
    for payload in Parser::new(0).parse_all(component) {
        let payload = payload.map_err(|e| format!("unreadable component: {e}"))?;
        let Payload::CustomSection(section) = payload else {
            continue;
        };
        if section.name() != FUNCTIONS_SECTION {
            continue;
        }
        if found.is_some() {
            return Err(format!("more than one {FUNCTIONS_SECTION} section"));
        }
        found = Some(parse(section.data())?);
    }
    Ok(found)
}

/// Checks and decodes one section's contents.
fn parse(data: &[u8]) -> Result<Vec<DeclaredFunction>, String> {
    if data.len() > MODULE_FUNCTIONS_SECTION_BYTES_MAX {
        return Err(format!(
            "{FUNCTIONS_SECTION} section of {} bytes exceeds the limit of \
             {MODULE_FUNCTIONS_SECTION_BYTES_MAX}",
            data.len()
        ));
    }
    let section: Section = serde_json::from_slice(data)
        .map_err(|e| format!("{FUNCTIONS_SECTION} section is not the expected JSON: {e}"))?;
    if section.functions.len() > MODULE_FUNCTIONS_MAX {
        return Err(format!(
            "{FUNCTIONS_SECTION} declares {} functions, more than the limit of \
             {MODULE_FUNCTIONS_MAX}",
            section.functions.len()
        ));
    }
    let mut names = BTreeSet::new();
    for f in &section.functions {
        check_function(f)?;
        if !names.insert(f.name.as_str()) {
            return Err(format!(
                "{FUNCTIONS_SECTION} declares function {:?} twice",
                f.name
            ));
        }
    }
    Ok(section.functions)
}

fn check_function(f: &DeclaredFunction) -> Result<(), String> {
    if f.name.is_empty() || f.name.len() > MODULE_FUNCTION_NAME_BYTES_MAX {
        return Err(format!(
            "{FUNCTIONS_SECTION}: function name {:?} must be 1 to \
             {MODULE_FUNCTION_NAME_BYTES_MAX} bytes",
            f.name
        ));
    }
    if f.name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{FUNCTIONS_SECTION}: function name {:?} must not contain whitespace or control \
             characters",
            f.name
        ));
    }
    // One line, so listings stay one line per function.
    if f.summary.chars().any(char::is_control) {
        return Err(format!(
            "{FUNCTIONS_SECTION}: the summary of {:?} must be one line without control \
             characters",
            f.name
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::BUILTIN_MODULES;

    /// A core module holding `sections` as custom sections (name, contents), in order.
    fn module_with(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        for (name, data) in sections {
            let mut contents = Vec::new();
            leb128(&mut contents, name.len());
            contents.extend_from_slice(name.as_bytes());
            contents.extend_from_slice(data);
            wasm.push(0);
            leb128(&mut wasm, contents.len());
            wasm.extend_from_slice(&contents);
        }
        wasm
    }

    fn leb128(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn declared(json: &str) -> Result<Option<Vec<DeclaredFunction>>, String> {
        declared_functions(&module_with(&[(FUNCTIONS_SECTION, json.as_bytes())]))
    }

    #[test]
    fn a_module_without_the_section_declares_nothing() {
        let other = module_with(&[("producers-ish", b"x")]);
        assert_eq!(declared_functions(&other), Ok(None));
    }

    #[test]
    fn a_declaration_reads_with_defaults_for_what_it_leaves_out() {
        let json = r#"{"functions":[
            {"name":"get","writes":false,"waits":true,"summary":"s","input":"i",
             "input_example":"{}","output_example":"1","later_field":[1,2]},
            {"name":"put"}],"version_from_the_future":7}"#;
        let functions = declared(json).expect("accepted").expect("declared");
        assert_eq!(functions.len(), 2);
        assert_eq!(
            functions[0],
            DeclaredFunction {
                name: "get".into(),
                writes: false,
                waits: true,
                summary: "s".into(),
                input: "i".into(),
                input_example: "{}".into(),
                output_example: "1".into(),
            }
        );
        // Unstated access counts as writing.
        assert!(functions[1].writes && !functions[1].waits);
    }

    #[test]
    fn malformed_declarations_are_refused() {
        for (json, why) in [
            ("not json", "not the expected JSON"),
            (r#"{"functions":{}}"#, "not the expected JSON"),
            (
                r#"{"functions":[{"writes":true}]}"#,
                "not the expected JSON",
            ),
            (
                r#"{"functions":[{"name":"a","writes":"yes"}]}"#,
                "not the expected JSON",
            ),
            (r#"{"functions":[{"name":""}]}"#, "must be 1 to"),
            (r#"{"functions":[{"name":"a b"}]}"#, "whitespace"),
            (
                r#"{"functions":[{"name":"a","summary":"x\ny"}]}"#,
                "one line",
            ),
            (r#"{"functions":[{"name":"a"},{"name":"a"}]}"#, "twice"),
        ] {
            let refused = declared(json).expect_err(json);
            assert!(refused.contains(why), "{json}: {refused}");
        }
    }

    #[test]
    fn two_sections_are_refused() {
        let json: &[u8] = br#"{"functions":[]}"#;
        let twice = module_with(&[(FUNCTIONS_SECTION, json), (FUNCTIONS_SECTION, json)]);
        let refused = declared_functions(&twice).expect_err("two sections");
        assert!(refused.contains("more than one"), "{refused}");
    }

    #[test]
    fn bounds_are_enforced_at_the_limit_and_past_it() {
        let name_max = "n".repeat(MODULE_FUNCTION_NAME_BYTES_MAX);
        let json = format!(r#"{{"functions":[{{"name":"{name_max}"}}]}}"#);
        assert!(declared(&json).is_ok());
        let json = format!(r#"{{"functions":[{{"name":"{name_max}n"}}]}}"#);
        assert!(
            declared(&json)
                .expect_err("long name")
                .contains("must be 1 to")
        );

        let many = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!(r#"{{"name":"f{i}"}}"#)).collect();
            format!(r#"{{"functions":[{}]}}"#, list.join(","))
        };
        assert_eq!(
            declared(&many(MODULE_FUNCTIONS_MAX)).map(|f| f.map(|f| f.len())),
            Ok(Some(MODULE_FUNCTIONS_MAX))
        );
        let refused = declared(&many(MODULE_FUNCTIONS_MAX + 1)).expect_err("too many");
        assert!(refused.contains("more than the limit"), "{refused}");

        // Padding after the JSON is whitespace, which JSON allows: the size alone decides.
        let exact = r#"{"functions":[]}"#;
        let padded = |len: usize| format!("{exact}{}", " ".repeat(len - exact.len()));
        assert!(declared(&padded(MODULE_FUNCTIONS_SECTION_BYTES_MAX)).is_ok());
        let refused = declared(&padded(MODULE_FUNCTIONS_SECTION_BYTES_MAX + 1)).expect_err("big");
        assert!(refused.contains("exceeds the limit"), "{refused}");
    }

    #[test]
    fn every_builtin_declares_its_functions_inside_its_component() {
        for (name, component) in BUILTIN_MODULES {
            let functions = declared_functions(component)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name} declares no functions"));
            assert!(!functions.is_empty(), "{name}");
            for f in functions {
                assert!(!f.summary.is_empty(), "{name} {}: no summary", f.name);
                assert!(!f.input_example.is_empty(), "{name} {}: no example", f.name);
            }
        }
    }

    #[test]
    fn modules_built_before_the_declaration_declare_nothing() {
        for fixture in [
            include_bytes!("../fixtures/counter-v0.1.wasm").as_slice(),
            include_bytes!("../fixtures/lock-v0.1.wasm").as_slice(),
        ] {
            assert_eq!(declared_functions(fixture), Ok(None));
        }
    }
}
