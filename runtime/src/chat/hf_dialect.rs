//! The functions and filters transformers adds to Jinja for chat templates
//! (`transformers.utils.chat_template_utils`):
//! * `raise_exception(message)`: the template refuses the conversation;
//! * `tojson(x, ensure_ascii=false, indent=none, separators=none, sort_keys=false)`: Python's
//!   `json.dumps` with those arguments (not Jinja's HTML-safe `tojson`): `", "` and `": "` between
//!   items unless indented, non-ASCII kept, keys in their order;
//! * `strftime_now(format)`: the date and time now, formatted (here in UTC; transformers uses the
//!   local time).

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Error, ErrorKind, Value};
use std::sync::atomic::{AtomicI64, Ordering};

/// How `raise_exception`'s errors are told from others.
const RAISED: &str = "raise_exception: ";

/// `raise_exception(message)`.
pub(super) fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED}{message}"),
    ))
}

/// The message of an error made by `raise_exception`, from its detail.
pub(super) fn raised_message(detail: &str) -> Option<&str> {
    detail.strip_prefix(RAISED)
}

/// `strftime_now(format)` at `clock` (unix seconds; `i64::MIN` for the system clock).
pub(super) fn strftime_now(format: &str, clock: &AtomicI64) -> Result<Value, Error> {
    let fixed = clock.load(Ordering::Relaxed);
    let now = if fixed == i64::MIN {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
    } else {
        fixed
    };
    Ok(Value::from(super::strftime::format_utc(now, format)))
}

/// The `iterable` test as Jinja2 has it (`iter(value)` succeeds): none, booleans and numbers are
/// not iterable; strings, sequences, maps and undefined values are.
pub(super) fn is_iterable(value: &Value) -> bool {
    !matches!(
        value.kind(),
        ValueKind::None
            | ValueKind::Bool
            | ValueKind::Number
            | ValueKind::Plain
            | ValueKind::Invalid
    )
}

/// How `tojson` writes: Python's `json.dumps` arguments.
struct JsonStyle {
    ensure_ascii: bool,
    /// The indent of one level, when indenting.
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// The `tojson` filter.
pub(super) fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let indent: Option<Value> = kwargs.get("indent")?;
    let separators: Option<Value> = kwargs.get("separators")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(match v.as_i64() {
            Some(n) => " ".repeat(usize::try_from(n).unwrap_or(0)),
            None => v
                .as_str()
                .ok_or_else(|| invalid("tojson: indent is neither a number nor a string"))?
                .to_string(),
        }),
    };
    let (item_sep, key_sep) = match separators {
        Some(s) if !s.is_none() => {
            let a = s.get_item(&Value::from(0))?;
            let b = s.get_item(&Value::from(1))?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => return Err(invalid("tojson: separators must be two strings")),
            }
        }
        _ => (
            if indent.is_some() { "," } else { ", " }.to_string(),
            ": ".to_string(),
        ),
    };
    let style = JsonStyle {
        ensure_ascii: ensure_ascii.unwrap_or(false),
        indent,
        item_sep,
        key_sep,
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(&mut out, value, &style, 0)?;
    Ok(Value::from(out))
}

fn invalid(message: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.to_string())
}

fn write_json(out: &mut String, v: &Value, style: &JsonStyle, depth: usize) -> Result<(), Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number if v.is_integer() => out.push_str(&v.to_string()),
        ValueKind::Number => {
            let f = f64::try_from(v.clone())?;
            out.push_str(&python_float(f));
        }
        ValueKind::String => write_string(out, v.as_str().unwrap_or_default(), style.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_items(out, ('[', ']'), &items, style, depth, |out, item, depth| {
                write_json(out, item, style, depth)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if style.sort_keys {
                keys.sort();
            }
            write_items(out, ('{', '}'), &keys, style, depth, |out, key, depth| {
                match key.as_str() {
                    Some(k) => write_string(out, k, style.ensure_ascii),
                    None => write_string(out, &key.to_string(), style.ensure_ascii),
                }
                out.push_str(&style.key_sep);
                write_json(out, &v.get_item(key)?, style, depth)
            })?;
        }
        kind => {
            return Err(invalid(&format!(
                "tojson: a value of type {kind} is not JSON serializable"
            )));
        }
    }
    Ok(())
}

/// Writes `items` between `brackets` as `json.dumps` lays them out (one per line when indenting).
fn write_items(
    out: &mut String,
    brackets: (char, char),
    items: &[Value],
    style: &JsonStyle,
    depth: usize,
    mut each: impl FnMut(&mut String, &Value, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(brackets.0);
    if items.is_empty() {
        out.push(brackets.1);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(indent) = &style.indent {
            out.push('\n');
            out.push_str(&indent.repeat(level));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&style.item_sep);
        }
        newline(out, depth + 1);
        each(out, item, depth + 1)?;
    }
    newline(out, depth);
    out.push(brackets.1);
    Ok(())
}

/// A JSON string as Python writes it: `"`, `\` and control characters escaped; with
/// `ensure_ascii`, every non-ASCII character as `\uXXXX` (surrogate pairs above U+FFFF).
fn write_string(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `repr(f)` as Python writes a float: the shortest digits that round-trip, positional for
/// exponents from -4 to 15 (`1.0`, `0.0001`), else `1e-05`, `1.5e+16`; `NaN`, `Infinity`.
pub(super) fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{digits}", "0".repeat((-exp - 1) as usize))
        } else if exp + 1 >= n {
            format!("{digits}{}.0", "0".repeat((exp + 1 - n) as usize))
        } else {
            let (int, frac) = digits.split_at((exp + 1) as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}
