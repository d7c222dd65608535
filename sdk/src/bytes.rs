//! Keys and values that need not be UTF-8, in JSON inputs and outputs: a field `name` carries
//! text, its sibling `name_hex` carries any bytes as lowercase hex. Recipes that take etcd's
//! byte strings (lock names, election values) accept either and answer with `name` when the
//! bytes are UTF-8, else with `name_hex`.

use serde_json::{Map, Value};

/// A lease id as etcd's recipes put it in keys (Go's `%x` of a signed id: `-ff` for -255).
pub fn lease_hex(lease: i64) -> String {
    if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    }
}

/// `bytes` as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// The bytes `text` spells in hex (either case).
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(format!("not a hex digit: {:?}", char::from(c))),
    };
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return Err("hex of odd length".into());
    }
    text.chunks(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// The bytes of field `name`, given as text (`text`) or as hex (`hex`): exactly one of them,
/// unless `default` says what neither means.
pub fn pick(
    name: &str,
    text: Option<&str>,
    hex: Option<&str>,
    default: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    match (text, hex, default) {
        (Some(text), None, _) => Ok(text.as_bytes().to_vec()),
        (None, Some(hex), _) => from_hex(hex).map_err(|e| format!("{name}_hex: {e}")),
        (None, None, Some(default)) => Ok(default.to_vec()),
        (None, None, None) => Err(format!("missing {name:?} (or {name}_hex)")),
        (Some(_), Some(_), _) => Err(format!("give {name:?} or {name}_hex, not both")),
    }
}

/// Sets `name` to `bytes` as text when they are UTF-8, else `name_hex` to their hex.
pub fn insert(object: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => object.insert(name.to_string(), Value::from(text)),
        Err(_) => object.insert(format!("{name}_hex"), Value::from(to_hex(bytes))),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_any_bytes() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(from_hex(&to_hex(&bytes)), Ok(bytes));
        assert_eq!(to_hex(b"\x00\xffA"), "00ff41");
        assert_eq!(from_hex("00FF41"), Ok(b"\x00\xffA".to_vec()));
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
    }

    #[test]
    fn lease_hex_formats_as_go_does() {
        assert_eq!(lease_hex(0x694d7a5b3c1f2e0d), "694d7a5b3c1f2e0d");
        assert_eq!(lease_hex(10), "a");
        assert_eq!(lease_hex(-255), "-ff");
    }

    #[test]
    fn pick_takes_exactly_one_spelling() {
        assert_eq!(pick("name", Some("L"), None, None), Ok(b"L".to_vec()));
        assert_eq!(pick("name", None, Some("ff00"), None), Ok(vec![0xff, 0]));
        assert_eq!(pick("value", None, None, Some(b"")), Ok(Vec::new()));
        assert!(pick("name", None, None, None).is_err());
        assert!(pick("name", Some("L"), Some("4c"), None).is_err());
    }

    #[test]
    fn insert_answers_text_or_hex() {
        let mut object = Map::new();
        insert(&mut object, "key", b"L/a");
        insert(&mut object, "value", b"\xff");
        assert_eq!(
            Value::Object(object),
            serde_json::json!({"key": "L/a", "value_hex": "ff"})
        );
    }
}
