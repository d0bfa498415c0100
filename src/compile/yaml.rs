//! A JSON value as block-style YAML, for `huxley build --format yaml`.
//!
//! Every JSON value has a direct YAML form: maps and lists become blocks,
//! strings are written JSON-quoted (JSON's escapes are valid in YAML's
//! double-quoted style), and multi-line strings become literal blocks. The
//! intrinsic functions stay in their long form (`Fn::Sub:`), which
//! CloudFormation reads in YAML templates. The test suite checks that the
//! output parses back to the same value.

use serde_json::Value;

/// Renders a value as a YAML document.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => block(value, 0, &mut out),
        Value::Array(items) if !items.is_empty() => block(value, 0, &mut out),
        scalar_value => {
            out.push_str(&scalar(scalar_value, 0));
            out.push('\n');
        }
    }
    out
}

fn block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                out.push_str(&pad);
                out.push_str(&key_text(key));
                out.push(':');
                nested(item, indent, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                // Render the item as if indented under "- ", then put the
                // dash in place of the first line's indentation.
                let mut inner = String::new();
                match item {
                    Value::Object(map) if !map.is_empty() => block(item, indent + 2, &mut inner),
                    Value::Array(list) if !list.is_empty() => block(item, indent + 2, &mut inner),
                    _ => {
                        inner.push_str(&" ".repeat(indent + 2));
                        inner.push_str(&scalar(item, indent + 2));
                        inner.push('\n');
                    }
                }
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&inner[indent + 2..]);
            }
        }
        _ => unreachable!("block() is called on non-empty maps and lists only"),
    }
}

/// Writes what follows `key:`: a scalar on the same line, or a block below.
fn nested(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            block(item, indent + 2, out);
        }
        Value::Array(list) if !list.is_empty() => {
            out.push('\n');
            block(item, indent + 2, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&scalar(item, indent + 2));
            out.push('\n');
        }
    }
}

fn scalar(value: &Value, indent: usize) -> String {
    match value {
        Value::String(text) => string(text, indent),
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

/// A string: a literal block when it spans lines and a block can hold it
/// exactly, otherwise JSON-quoted.
fn string(text: &str, indent: usize) -> String {
    let blockable = text.contains('\n')
        && !text.starts_with([' ', '\n'])
        && text.chars().all(|c| c == '\n' || !c.is_control())
        && !text.lines().any(|l| l.ends_with(' '));
    if !blockable {
        return serde_json::to_string(text).expect("strings serialize");
    }
    let trailing = text.len() - text.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}");
    for line in text.trim_end_matches('\n').split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    for _ in 1..trailing {
        out.push('\n');
    }
    out
}

fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_:.-".contains(c))
        && !key.ends_with(':');
    if plain {
        key.to_owned()
    } else {
        serde_json::to_string(key).expect("strings serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_and_scalars() {
        let value = json!({
            "A": 1,
            "B": ["x", {"C": true, "D": null}],
            "E": {"Fn::Sub": "a${B}"},
            "F": [],
            "G": {},
            "H": "line 1\nline 2\n",
        });
        let expected = "A: 1\nB:\n  - \"x\"\n  - C: true\n    D: null\nE:\n  Fn::Sub: \"a${B}\"\nF: []\nG: {}\nH: |\n  line 1\n  line 2\n";
        assert_eq!(to_yaml(&value), expected);
    }

    #[test]
    fn chomping_follows_trailing_newlines() {
        assert_eq!(string("a\nb", 2), "|-\n  a\n  b");
        assert_eq!(string("a\n\n", 2), "|+\n  a\n");
        assert_eq!(string(" lead\nx", 2), "\" lead\\nx\"");
    }
}
