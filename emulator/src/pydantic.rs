//! pydantic 2.14 (the real server's) in the few ways the worker-queue models need: lax coercion of
//! integers and booleans, error items as FastAPI renders them in a 422, and the text of a
//! `ValidationError` (`str(e)`) that the server pastes into some 422 messages and 500 details.

use serde_json::{Map, Value, json};

/// The version in pydantic's "For further information" links.
const DOCS: &str = "https://errors.pydantic.dev/2.14/v/";

/// One validation error. `loc` is relative to the model (without FastAPI's leading `"body"`).
#[derive(Clone, Debug)]
pub struct Error {
    pub kind: &'static str,
    pub loc: Vec<Value>,
    pub msg: String,
    pub input: Value,
    pub ctx: Option<Value>,
}

/// The errors of one model, in the order pydantic finds them (its fields' order).
#[derive(Default, Debug)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    pub fn add(
        &mut self,
        kind: &'static str,
        loc: &[Value],
        msg: impl Into<String>,
        input: &Value,
        ctx: Option<Value>,
    ) {
        self.0.push(Error { kind, loc: loc.to_vec(), msg: msg.into(), input: input.clone(), ctx });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// FastAPI's 422 `detail`: `[{"type", "loc": ["body", …], "msg", "input", "ctx"?}, …]`.
    pub fn detail(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|e| {
                    let mut loc = vec![json!("body")];
                    loc.extend(e.loc.iter().cloned());
                    let mut item = json!({"type": e.kind, "loc": loc, "msg": e.msg, "input": e.input});
                    if let (Some(ctx), Some(obj)) = (&e.ctx, item.as_object_mut()) {
                        obj.insert("ctx".into(), ctx.clone());
                    }
                    item
                })
                .collect(),
        )
    }

    /// `str(ValidationError)`: a count line naming the model, then per error its dotted location,
    /// message, type, input and a link.
    pub fn text(&self, model: &str) -> String {
        let n = self.0.len();
        let mut out = format!("{n} validation error{} for {model}", if n == 1 { "" } else { "s" });
        for e in &self.0 {
            let loc: Vec<String> =
                e.loc.iter().map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_owned)).collect();
            out.push_str(&format!(
                "\n{}\n  {} [type={}, input_value={}, input_type={}]\n    For further information visit {DOCS}{}",
                loc.join("."),
                e.msg,
                e.kind,
                truncate(&repr(&e.input)),
                type_name(&e.input),
                e.kind
            ));
        }
        out
    }
}

/// A location: strings stay keys, numbers are list indices.
pub fn loc(parts: &[&str]) -> Vec<Value> {
    parts.iter().map(|p| p.parse::<u64>().map_or_else(|_| json!(p), |n| json!(n))).collect()
}

/// An integer as pydantic's lax mode reads one: integers, whole floats, booleans, and strings of
/// digits (whitespace around, `_` between digits, a sign, a `.0…` tail). Values past 128 bits
/// saturate (the server hands such numbers to PostgreSQL, which refuses them as out of range).
pub fn int(v: &Value) -> Result<i128, (&'static str, &'static str)> {
    const TYPE: (&str, &str) = ("int_type", "Input should be a valid integer");
    const SIZE: (&str, &str) =
        ("int_parsing_size", "Unable to parse input string as an integer, exceeded maximum size");
    match v {
        Value::Bool(b) => Ok(i128::from(*b)),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 || !f.is_finite() {
                    Err((
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    ))
                } else if f.abs() > 9.223_372_036_854_775e18 {
                    Err(SIZE)
                } else {
                    // Whole and within i64: exact.
                    #[allow(clippy::cast_possible_truncation)]
                    Ok(f as i128)
                }
            }
        }
        Value::String(s) => int_from_str(s)
            .ok_or(("int_parsing", "Input should be a valid integer, unable to parse string as an integer")),
        _ => Err(TYPE),
    }
}

fn int_from_str(s: &str) -> Option<i128> {
    let t = s.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    // "3.00" is 3; "3." and "3.5" are not integers.
    let t = match t.split_once('.') {
        Some((whole, zeros)) if !zeros.is_empty() && zeros.bytes().all(|b| b == b'0') => whole,
        Some(_) => return None,
        None => t,
    };
    let b = t.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() || !b[b.len() - 1].is_ascii_digit() {
        return None;
    }
    let mut n: i128 = 0;
    for (i, c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => n = n.saturating_mul(10).saturating_add(i128::from(c - b'0')),
            // An underscore only between two digits.
            b'_' if b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit() => {}
            _ => return None,
        }
    }
    Some(if negative { -n } else { n })
}

/// A boolean as pydantic's lax mode reads one.
pub fn boolean(v: &Value) -> Result<bool, (&'static str, &'static str)> {
    const PARSING: (&str, &str) =
        ("bool_parsing", "Input should be a valid boolean, unable to interpret input");
    const TYPE: (&str, &str) = ("bool_type", "Input should be a valid boolean");
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(0), _) => Ok(false),
            (Some(1), _) => Ok(true),
            (Some(_), _) => Err(PARSING),
            (None, Some(0.0)) => Ok(false),
            (None, Some(1.0)) => Ok(true),
            _ => Err(TYPE),
        },
        Value::String(s) => match s.to_lowercase().as_str() {
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(false),
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(true),
            _ => Err(PARSING),
        },
        _ => Err(TYPE),
    }
}

/// Python's truthiness of a JSON value as `json.loads` makes it.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `type(x).__name__` of a JSON value.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Python's `repr()` of a JSON value as `json.loads` makes it. Objects come out in the emulator's
/// key order (sorted), where Python keeps the order the request had.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (None, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => float_repr(f),
            _ => n.to_string(),
        },
        Value::String(s) => str_repr(s),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!("{{{}}}", dict_items(o).join(", ")),
    }
}

fn dict_items(o: &Map<String, Value>) -> Vec<String> {
    o.iter().map(|(k, v)| format!("{}: {}", str_repr(k), repr(v))).collect()
}

fn float_repr(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Python: 1e+20, 1e-05.
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
        format!("{mantissa}e{sign}{digits:0>2}")
    } else if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        f.to_string()
    }
}

fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// pydantic shortens an `input_value` past 50 bytes to its first 25 and last 24 bytes (at
/// character boundaries, inwards).
fn truncate(s: &str) -> String {
    if s.len() <= 50 {
        return s.to_owned();
    }
    let mut head = 25;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - 24;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}...{}", &s[..head], &s[tail..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_laxly() {
        for (v, n) in [
            (json!(3), 3),
            (json!(2.0), 2),
            (json!(true), 1),
            (json!(false), 0),
            (json!("3"), 3),
            (json!(" 3 "), 3),
            (json!("+3"), 3),
            (json!("-3"), -3),
            (json!("1_000"), 1000),
            (json!("03"), 3),
            (json!("3.00"), 3),
        ] {
            assert_eq!(int(&v), Ok(n), "{v}");
        }
        for (v, kind) in [
            (json!(2.5), "int_from_float"),
            (json!(1e20), "int_parsing_size"),
            (json!("3.5"), "int_parsing"),
            (json!("3."), "int_parsing"),
            (json!("_3"), "int_parsing"),
            (json!("0x10"), "int_parsing"),
            (json!(""), "int_parsing"),
            (json!("٣"), "int_parsing"),
            (json!(null), "int_type"),
            (json!([]), "int_type"),
        ] {
            assert_eq!(int(&v).map_err(|e| e.0), Err(kind), "{v}");
        }
        assert_eq!(int(&json!("9223372036854775808")), Ok(9_223_372_036_854_775_808));
    }

    #[test]
    fn booleans_are_read_laxly() {
        for (v, b) in [
            (json!(true), true),
            (json!(0), false),
            (json!(1.0), true),
            (json!("Yes"), true),
            (json!("off"), false),
        ] {
            assert_eq!(boolean(&v), Ok(b), "{v}");
        }
        for (v, kind) in [
            (json!(2), "bool_parsing"),
            (json!("2"), "bool_parsing"),
            (json!(""), "bool_parsing"),
            (json!(" true "), "bool_parsing"),
            (json!(0.5), "bool_type"),
            (json!(null), "bool_type"),
            (json!([]), "bool_type"),
        ] {
            assert_eq!(boolean(&v).map_err(|e| e.0), Err(kind), "{v}");
        }
    }

    #[test]
    fn reprs_are_pythons() {
        assert_eq!(repr(&json!({"a": [1, 2.5, null, true, "s"]})), "{'a': [1, 2.5, None, True, 's']}");
        assert_eq!(repr(&json!("it's")), "\"it's\"");
        assert_eq!(repr(&json!("it's \"x\"")), "'it\\'s \"x\"'");
        assert_eq!(repr(&json!("a\nb")), "'a\\nb'");
        assert_eq!(repr(&json!(1e20)), "1e+20");
        assert_eq!(repr(&json!(1e-5)), "1e-05");
        assert_eq!(repr(&json!(10.0)), "10.0");
        assert_eq!(
            truncate(&repr(&json!("a".repeat(88)))),
            format!("'{}...{}'", "a".repeat(24), "a".repeat(23))
        );
        // Bytes, not characters: ü is two.
        assert_eq!(
            truncate(&repr(&json!("ü".repeat(60)))),
            format!("'{}...{}'", "ü".repeat(12), "ü".repeat(11))
        );
    }

    #[test]
    fn text_is_str_of_a_validation_error() {
        let mut e = Errors::default();
        e.add(
            "int_type",
            &loc(&["heartbeat_interval"]),
            "Input should be a valid integer",
            &Value::Null,
            None,
        );
        e.add(
            "missing",
            &loc(&["litellm_config", "model_list", "0", "x"]),
            "Field required",
            &json!({}),
            None,
        );
        assert_eq!(
            e.text("M"),
            "2 validation errors for M\nheartbeat_interval\n  Input should be a valid integer [type=int_type, \
             input_value=None, input_type=NoneType]\n    For further information visit \
             https://errors.pydantic.dev/2.14/v/int_type\nlitellm_config.model_list.0.x\n  Field required \
             [type=missing, input_value={}, input_type=dict]\n    For further information visit \
             https://errors.pydantic.dev/2.14/v/missing"
        );
        assert_eq!(e.detail()[1]["loc"], json!(["body", "litellm_config", "model_list", 0, "x"]));
    }
}
