//! Attribute values as the strings Python's `render` produces.
//!
//! Every function here is pure Rust and mirrors one Python builtin exactly:
//! `repr(float)`, `bytes.hex()` and `json.dumps(value, separators=(",", ":"),
//! ensure_ascii=False)` over the plain value an OTLP `AnyValue` becomes.

use std::fmt::Write;

use crate::wire::{self, AnyView, Result};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes.hex()`: two lowercase digits a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(HEX_DIGITS[usize::from(byte >> 4)] as char);
        out.push(HEX_DIGITS[usize::from(byte & 0x0f)] as char);
    }
    out
}

/// `repr(value)` for a Python float.
///
/// Both Rust's `{:e}` and CPython's `repr` print the shortest digit string
/// that reads back as the same double; only the layout differs. CPython
/// switches to exponent form when the decimal point would sit more than 16
/// places right or 4 places left of the first digit, writes at least two
/// exponent digits with a sign, and ends a whole number with `.0`.
/// `value` in `LowerExp` form with the fewest digits that read back as
/// `value`, of those the closest to it, a tie going to the even digit, as
/// Python's `repr` chooses. `{:e}` finds the fewest digits but breaks a tie
/// upwards (70368744177664.625 gives ...63 where Python gives ...62); the
/// exact formatting at that many digits rounds half to even.
fn closest_shortest(value: f64) -> String {
    let shortest = format!("{value:e}");
    let digits = shortest.split('e').next().map_or(0, |mantissa| {
        mantissa.bytes().filter(u8::is_ascii_digit).count()
    });
    let exact = format!("{:.*e}", digits.saturating_sub(1), value);
    if exact.parse::<f64>() == Ok(value) {
        exact
    } else {
        shortest
    }
}

pub fn float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() {
            "-0.0"
        } else {
            "0.0"
        }
        .to_owned();
    }
    let scientific = closest_shortest(value);
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("LowerExp output always has an exponent");
    let exponent: i32 = exponent.parse().expect("LowerExp exponent is an integer");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let point = exponent + 1;
    let mut out = String::with_capacity(digits.len() + 8);
    out.push_str(sign);
    if !(-4 < point && point <= 16) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        let _ = write!(out, "e{exponent_sign}{:02}", exponent.unsigned_abs());
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(&digits);
    } else {
        let point = point as usize;
        if point >= digits.len() {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', point - digits.len()));
            out.push_str(".0");
        } else {
            out.push_str(&digits[..point]);
            out.push('.');
            out.push_str(&digits[point..]);
        }
    }
    out
}

/// `render(any_value_to_python(value))` for every kind but `string_value`
/// (whose rendering is the string itself).
pub fn render_value(value: Option<&AnyView<'_>>) -> Result<String> {
    Ok(match value {
        None => "null".to_owned(),
        Some(AnyView::Str(text)) => (*text).to_owned(),
        Some(AnyView::Bool(flag)) => if *flag { "true" } else { "false" }.to_owned(),
        Some(AnyView::Int(number)) => number.to_string(),
        Some(AnyView::Strindex(number)) => number.to_string(),
        Some(AnyView::Double(number)) => float_repr(*number),
        Some(AnyView::Bytes(bytes)) => hex(bytes),
        Some(AnyView::Array(_) | AnyView::Kvlist(_)) => {
            let mut out = String::new();
            write_json(&mut out, value)?;
            out
        }
    })
}

/// The values of an array, over all its merged chunks.
pub fn list_items<'a>(chunks: &[&'a [u8]]) -> Result<Vec<Option<AnyView<'a>>>> {
    let mut items = Vec::new();
    for chunk in chunks {
        wire::for_each_item(chunk, wire::DEPTH_LIMIT, |item| {
            items.push(item);
            Ok(())
        })?;
    }
    Ok(items)
}

/// The entries of a kvlist as the Python dict built from it: a repeated key
/// keeps its first position and takes its last value.
pub fn dict_entries<'a>(chunks: &[&'a [u8]]) -> Result<Vec<(&'a str, Option<AnyView<'a>>)>> {
    let mut entries: Vec<(&str, Option<AnyView<'_>>)> = Vec::new();
    for chunk in chunks {
        wire::for_each_entry(chunk, wire::DEPTH_LIMIT, |key, value| {
            match entries.iter_mut().find(|(seen, _)| *seen == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
            Ok(())
        })?;
    }
    Ok(entries)
}

fn write_json(out: &mut String, value: Option<&AnyView<'_>>) -> Result<()> {
    match value {
        None => out.push_str("null"),
        Some(AnyView::Str(text)) => write_json_string(out, text),
        Some(AnyView::Bool(flag)) => out.push_str(if *flag { "true" } else { "false" }),
        Some(AnyView::Int(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(AnyView::Strindex(number)) => {
            let _ = write!(out, "{number}");
        }
        Some(AnyView::Double(number)) => {
            if number.is_nan() {
                out.push_str("NaN");
            } else if number.is_infinite() {
                out.push_str(if *number > 0.0 {
                    "Infinity"
                } else {
                    "-Infinity"
                });
            } else {
                out.push_str(&float_repr(*number));
            }
        }
        Some(AnyView::Bytes(bytes)) => {
            out.push('"');
            out.push_str(&hex(bytes));
            out.push('"');
        }
        Some(AnyView::Array(chunks)) => {
            out.push('[');
            for (index, item) in list_items(chunks)?.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(out, item.as_ref())?;
            }
            out.push(']');
        }
        Some(AnyView::Kvlist(chunks)) => {
            out.push('{');
            for (index, (key, item)) in dict_entries(chunks)?.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json_string(out, key);
                out.push(':');
                write_json(out, item.as_ref())?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// A JSON string as `json.dumps(..., ensure_ascii=False)` writes it: only
/// quotes, backslashes and control characters below U+0020 are escaped.
fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ch if (ch as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", ch as u32);
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_repr_matches_python_layout() {
        let cases = [
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (-2.0, "-2.0"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (70368744177664.625, "70368744177664.62"),
            (562949953421312.25, "562949953421312.2"),
            (2.675, "2.675"),
            (-0.0, "-0.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn json_strings_escape_like_python() {
        let mut out = String::new();
        write_json_string(&mut out, "a\"b\\c\n\u{1}\u{7f}é");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001\u{7f}é\"");
    }
}
