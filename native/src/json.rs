//! OTLP/JSON documents as `ExportTraceServiceRequest` protobuf bytes.
//!
//! The Python path (`parse_otlp_json` in spanstream/decode/otlp_json.py:
//! `json.loads`, hex ids rewritten, then protobuf's `json_format.ParseDict`)
//! is the reference. This module reads the common shape of a document and
//! writes the protobuf message `ParseDict` would build, so the rows come from
//! the same extraction as for protobuf payloads (`extract`), by construction.
//!
//! It never guesses. Whatever it is not certain about, it declines
//! (`Declined`) and the caller hands the payload to the Python path, which
//! accepts or refuses it; nothing has been appended by then. It declines:
//!
//! * JSON that serde_json refuses (serde_json is stricter than `json.loads`:
//!   no NaN or Infinity, no lone surrogates, valid UTF-8 only, nesting up to
//!   128), and every `null`;
//! * a key it does not know (`ParseDict` would skip it, or refuse an
//!   `[extension]` name), and a field given twice, under one name or both;
//! * the snake_case names of the id fields and of `resourceSpans` and
//!   `scopeSpans` (the Python path rewrites hex ids only under the camelCase
//!   names, so under snake_case they would be read as base64);
//! * an id string holding whitespace or non-ASCII (`bytes.fromhex` skips
//!   some whitespace); other non-hex ids become empty, as there;
//! * a value of another JSON type than the common one for its field: numbers
//!   with a fraction or exponent, or past 64 bits, for integer fields; enum
//!   names of another enum, or numeric strings, for enums; strings for
//!   doubles; `-0` for a double (`json.loads` makes it an int, serde_json a
//!   float); integer strings longer than 20 characters; out-of-range values;
//! * base64 outside the canonical alphabet and padding (`ParseDict` decodes
//!   leniently); `stringValueStrindex`, `keyStrindex`, `entityRefs`;
//! * more than one value in an `AnyValue`, and arrays or kvlists nested more
//!   than `MAX_VALUE_DEPTH` deep.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// The document is left to the Python path.
#[derive(Debug, PartialEq, Eq)]
pub struct Declined;

pub type Result<T> = std::result::Result<T, Declined>;

/// Arrays and kvlists nested deeper than this are declined: far below both
/// `ParseDict`'s depth limit and upb's, so no limit is ever reached here.
const MAX_VALUE_DEPTH: u32 = 16;
/// Longer integer strings are declined: `int()` reads leading zeros and
/// refuses more than 4,300 digits, which this module does not copy.
const MAX_INTEGER_CHARS: usize = 20;
const SPAN_KIND_NAMES: [&str; 6] = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODE_NAMES: [&str; 3] = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// A parsed JSON value that borrows its strings from the payload where it
/// can. Objects keep every entry in order, duplicates included.
#[derive(Debug)]
enum Json<'a> {
    Null,
    Bool(bool),
    /// An integer literal that fits u64 (serde_json's non-negative form).
    UInt(u64),
    /// A negative integer literal that fits i64.
    Int(i64),
    /// A literal with a fraction or exponent, `-0`, or an integer past 64 bits.
    Float(f64),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, value: bool) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Bool(value))
    }

    fn visit_u64<E>(self, value: u64) -> std::result::Result<Json<'de>, E> {
        Ok(Json::UInt(value))
    }

    fn visit_i64<E>(self, value: i64) -> std::result::Result<Json<'de>, E> {
        Ok(if value >= 0 {
            Json::UInt(value as u64)
        } else {
            Json::Int(value)
        })
    }

    fn visit_f64<E>(self, value: f64) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Float(value))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> std::result::Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Key(key)) = map.next_key()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Json::Object(entries))
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> std::result::Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> std::result::Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> std::result::Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(value)))
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

// -- protobuf output -------------------------------------------------------

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, number: u32, wire_type: u32) {
    put_varint(out, u64::from(number << 3 | wire_type));
}

fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
    put_tag(out, number, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Write field `number` as a sub-message whose body `write` appends.
fn put_message(
    out: &mut Vec<u8>,
    number: u32,
    write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    put_tag(out, number, LEN);
    let at = out.len();
    // Most bodies are under 128 bytes: one length byte, moved only if longer.
    out.push(0);
    write(out)?;
    let length = out.len() - at - 1;
    if length < 0x80 {
        out[at] = length as u8;
    } else {
        let mut prefix = Vec::with_capacity(5);
        put_varint(&mut prefix, length as u64);
        out.splice(at..at + 1, prefix);
    }
    Ok(())
}

// -- reading the document --------------------------------------------------

type Entries<'s, 'a> = &'s [(Cow<'a, str>, Json<'a>)];

fn array<'s, 'a>(value: &'s Json<'a>) -> Result<&'s [Json<'a>]> {
    match value {
        Json::Array(items) => Ok(items),
        _ => Err(Declined),
    }
}

fn text<'s>(value: &'s Json<'_>) -> Result<&'s str> {
    match value {
        Json::Str(text) => Ok(text),
        _ => Err(Declined),
    }
}

/// Call `on_field` with each entry of the object `value` as (field number,
/// value). `field_of` gives a key's field number (below 32), or None for a
/// key this module does not handle. Declines unknown keys, a field given
/// twice (under one name or two) and `null` values.
fn each_field<'s, 'a>(
    value: &'s Json<'a>,
    field_of: fn(&str) -> Option<u32>,
    mut on_field: impl FnMut(u32, &'s Json<'a>) -> Result<()>,
) -> Result<()> {
    let Json::Object(entries) = value else {
        return Err(Declined);
    };
    let entries: Entries<'s, 'a> = entries;
    let mut seen = 0u32;
    for (key, value) in entries {
        let number = field_of(key).ok_or(Declined)?;
        let bit = 1u32 << number;
        if seen & bit != 0 || matches!(value, Json::Null) {
            return Err(Declined);
        }
        seen |= bit;
        on_field(number, value)?;
    }
    Ok(())
}

/// Each item of a repeated message field, as field `number`.
fn put_repeated(
    out: &mut Vec<u8>,
    number: u32,
    value: &Json<'_>,
    write: impl Fn(&mut Vec<u8>, &Json<'_>) -> Result<()>,
) -> Result<()> {
    for item in array(value)? {
        put_message(out, number, |out| write(out, item))?;
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    put_bytes(out, number, text(value)?.as_bytes());
    Ok(())
}

/// An integer as `_ConvertInteger` reads the common forms: a JSON integer,
/// or a string of ASCII digits with an optional leading minus.
fn integer(value: &Json<'_>) -> Result<i128> {
    match value {
        Json::UInt(number) => Ok(i128::from(*number)),
        Json::Int(number) => Ok(i128::from(*number)),
        Json::Str(text) => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            if text.len() > MAX_INTEGER_CHARS
                || digits.is_empty()
                || !digits.bytes().all(|byte| byte.is_ascii_digit())
            {
                return Err(Declined);
            }
            text.parse::<i128>().map_err(|_| Declined)
        }
        _ => Err(Declined),
    }
}

fn in_range<T: TryFrom<i128>>(value: &Json<'_>) -> Result<T> {
    T::try_from(integer(value)?).map_err(|_| Declined)
}

fn put_uint32(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    let count: u32 = in_range(value)?;
    put_tag(out, number, VARINT);
    put_varint(out, u64::from(count));
    Ok(())
}

fn put_fixed32(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    let flags: u32 = in_range(value)?;
    put_tag(out, number, FIXED32);
    out.extend_from_slice(&flags.to_le_bytes());
    Ok(())
}

fn put_fixed64(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    let nanos: u64 = in_range(value)?;
    put_tag(out, number, FIXED64);
    out.extend_from_slice(&nanos.to_le_bytes());
    Ok(())
}

/// An open enum: a JSON integer within int32, or one of `names` (the
/// enum's own value names, indexed by number).
fn put_enum(out: &mut Vec<u8>, number: u32, value: &Json<'_>, names: &[&str]) -> Result<()> {
    let enum_number: i32 = match value {
        Json::UInt(_) | Json::Int(_) => in_range(value)?,
        Json::Str(text) => names.iter().position(|name| name == text).ok_or(Declined)? as i32,
        _ => return Err(Declined),
    };
    put_tag(out, number, VARINT);
    // int32 is written sign-extended to 64 bits, as protobuf does.
    put_varint(out, i64::from(enum_number) as u64);
    Ok(())
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// An id as the Python path reads it: `bytes.fromhex` of a string, empty for
/// anything else or a string that is not hex.
fn put_id(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    let Json::Str(text) = value else {
        return Ok(());
    };
    let bytes = text.as_bytes();
    // fromhex skips whitespace between digit pairs: not copied here.
    if bytes.iter().any(|byte| !(0x21..0x7f).contains(byte)) {
        return Err(Declined);
    }
    if bytes.len() % 2 != 0 {
        return Ok(());
    }
    let mut id = Vec::with_capacity(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match (hex_digit(pair[0]), hex_digit(pair[1])) {
            (Some(high), Some(low)) => id.push(high << 4 | low),
            _ => return Ok(()),
        }
    }
    if !id.is_empty() {
        put_bytes(out, number, &id);
    }
    Ok(())
}

fn base64_digit(byte: u8) -> Option<u32> {
    match byte {
        b'A'..=b'Z' => Some(u32::from(byte - b'A')),
        b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Base64 as `ParseDict` decodes `bytes` fields (`urlsafe_b64decode` after
/// padding), for canonical input only: the standard or the URL-safe
/// alphabet, then no padding or the padding that completes the last group.
fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let bytes = text.as_bytes();
    let data = bytes
        .iter()
        .rposition(|byte| *byte != b'=')
        .map_or(&bytes[..0], |last| &bytes[..=last]);
    let padding = bytes.len() - data.len();
    let well_padded = padding == 0 || (padding <= 2 && bytes.len() % 4 == 0);
    if data.len() % 4 == 1 || !well_padded {
        return Err(Declined);
    }
    let mut decoded = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for group in data.chunks(4) {
        let mut bits = 0u32;
        for byte in group {
            bits = bits << 6 | base64_digit(*byte).ok_or(Declined)?;
        }
        // A short last group's unused low bits are dropped, as Python does.
        let whole = bits << (6 * (4 - group.len()));
        let group_bytes = whole.to_be_bytes();
        decoded.extend_from_slice(&group_bytes[1..group.len()]);
    }
    Ok(decoded)
}

// -- the OTLP messages -----------------------------------------------------

fn any_value_field(key: &str) -> Option<u32> {
    Some(match key {
        "stringValue" | "string_value" => 1,
        "boolValue" | "bool_value" => 2,
        "intValue" | "int_value" => 3,
        "doubleValue" | "double_value" => 4,
        "arrayValue" | "array_value" => 5,
        "kvlistValue" | "kvlist_value" => 6,
        "bytesValue" | "bytes_value" => 7,
        _ => return None,
    })
}

fn put_double(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    let double = match value {
        Json::UInt(integer) => *integer as f64,
        Json::Int(integer) => *integer as f64,
        // `-0` is an int 0 to json.loads but -0.0 to serde_json.
        Json::Float(float) if *float == 0.0 && float.is_sign_negative() => return Err(Declined),
        Json::Float(float) if float.is_finite() => *float,
        _ => return Err(Declined),
    };
    put_tag(out, number, FIXED64);
    out.extend_from_slice(&double.to_bits().to_le_bytes());
    Ok(())
}

/// An `AnyValue`: one of its fields, always written (a oneof field set to
/// its default value is still set).
fn any_value(out: &mut Vec<u8>, value: &Json<'_>, depth: u32) -> Result<()> {
    if let Json::Object(entries) = value {
        if entries.len() > 1 {
            return Err(Declined);
        }
    }
    each_field(value, any_value_field, |number, value| match number {
        1 => put_string(out, 1, value),
        2 => match value {
            Json::Bool(flag) => {
                put_tag(out, 2, VARINT);
                put_varint(out, u64::from(*flag));
                Ok(())
            }
            _ => Err(Declined),
        },
        3 => {
            let integer: i64 = in_range(value)?;
            put_tag(out, 3, VARINT);
            put_varint(out, integer as u64);
            Ok(())
        }
        4 => put_double(out, 4, value),
        5 | 6 if depth >= MAX_VALUE_DEPTH => Err(Declined),
        5 => put_message(out, 5, |out| {
            each_field(value, values_field, |_, items| {
                put_repeated(out, 1, items, |out, item| any_value(out, item, depth + 1))
            })
        }),
        6 => put_message(out, 6, |out| {
            each_field(value, values_field, |_, items| {
                put_repeated(out, 1, items, |out, item| key_value(out, item, depth + 1))
            })
        }),
        _ => {
            let decoded = base64_decode(text(value)?)?;
            put_bytes(out, 7, &decoded);
            Ok(())
        }
    })
}

fn values_field(key: &str) -> Option<u32> {
    (key == "values").then_some(1)
}

fn key_value_field(key: &str) -> Option<u32> {
    Some(match key {
        "key" => 1,
        "value" => 2,
        _ => return None,
    })
}

fn key_value(out: &mut Vec<u8>, value: &Json<'_>, depth: u32) -> Result<()> {
    each_field(value, key_value_field, |number, value| match number {
        1 => put_string(out, 1, value),
        _ => put_message(out, 2, |out| any_value(out, value, depth)),
    })
}

fn put_attributes(out: &mut Vec<u8>, number: u32, value: &Json<'_>) -> Result<()> {
    put_repeated(out, number, value, |out, item| key_value(out, item, 0))
}

fn resource_field(key: &str) -> Option<u32> {
    Some(match key {
        "attributes" => 1,
        "droppedAttributesCount" | "dropped_attributes_count" => 2,
        _ => return None,
    })
}

fn resource(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, resource_field, |number, value| match number {
        1 => put_attributes(out, 1, value),
        _ => put_uint32(out, 2, value),
    })
}

fn scope_field(key: &str) -> Option<u32> {
    Some(match key {
        "name" => 1,
        "version" => 2,
        "attributes" => 3,
        "droppedAttributesCount" | "dropped_attributes_count" => 4,
        _ => return None,
    })
}

fn scope(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, scope_field, |number, value| match number {
        1 | 2 => put_string(out, number, value),
        3 => put_attributes(out, 3, value),
        _ => put_uint32(out, 4, value),
    })
}

fn status_field(key: &str) -> Option<u32> {
    Some(match key {
        "message" => 2,
        "code" => 3,
        _ => return None,
    })
}

fn status(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, status_field, |number, value| match number {
        2 => put_string(out, 2, value),
        _ => put_enum(out, 3, value, &STATUS_CODE_NAMES),
    })
}

fn event_field(key: &str) -> Option<u32> {
    Some(match key {
        "timeUnixNano" | "time_unix_nano" => 1,
        "name" => 2,
        "attributes" => 3,
        "droppedAttributesCount" | "dropped_attributes_count" => 4,
        _ => return None,
    })
}

fn event(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, event_field, |number, value| match number {
        1 => put_fixed64(out, 1, value),
        2 => put_string(out, 2, value),
        3 => put_attributes(out, 3, value),
        _ => put_uint32(out, 4, value),
    })
}

/// Link fields; the ids only under their camelCase names (see the module doc).
fn link_field(key: &str) -> Option<u32> {
    Some(match key {
        "traceId" => 1,
        "spanId" => 2,
        "traceState" | "trace_state" => 3,
        "attributes" => 4,
        "droppedAttributesCount" | "dropped_attributes_count" => 5,
        "flags" => 6,
        _ => return None,
    })
}

fn link(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, link_field, |number, value| match number {
        1 | 2 => put_id(out, number, value),
        3 => put_string(out, 3, value),
        4 => put_attributes(out, 4, value),
        5 => put_uint32(out, 5, value),
        _ => put_fixed32(out, 6, value),
    })
}

/// Span fields; the ids only under their camelCase names (see the module doc).
fn span_field(key: &str) -> Option<u32> {
    Some(match key {
        "traceId" => 1,
        "spanId" => 2,
        "traceState" | "trace_state" => 3,
        "parentSpanId" => 4,
        "name" => 5,
        "kind" => 6,
        "startTimeUnixNano" | "start_time_unix_nano" => 7,
        "endTimeUnixNano" | "end_time_unix_nano" => 8,
        "attributes" => 9,
        "droppedAttributesCount" | "dropped_attributes_count" => 10,
        "events" => 11,
        "droppedEventsCount" | "dropped_events_count" => 12,
        "links" => 13,
        "droppedLinksCount" | "dropped_links_count" => 14,
        "status" => 15,
        "flags" => 16,
        _ => return None,
    })
}

fn span(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, span_field, |number, value| match number {
        1 | 2 | 4 => put_id(out, number, value),
        3 | 5 => put_string(out, number, value),
        6 => put_enum(out, 6, value, &SPAN_KIND_NAMES),
        7 | 8 => put_fixed64(out, number, value),
        9 => put_attributes(out, 9, value),
        10 | 12 | 14 => put_uint32(out, number, value),
        11 => put_repeated(out, 11, value, event),
        13 => put_repeated(out, 13, value, link),
        15 => put_message(out, 15, |out| status(out, value)),
        _ => put_fixed32(out, 16, value),
    })
}

fn scope_spans_field(key: &str) -> Option<u32> {
    Some(match key {
        "scope" => 1,
        "spans" => 2,
        "schemaUrl" | "schema_url" => 3,
        _ => return None,
    })
}

fn scope_spans(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, scope_spans_field, |number, value| match number {
        1 => put_message(out, 1, |out| scope(out, value)),
        2 => put_repeated(out, 2, value, span),
        _ => put_string(out, 3, value),
    })
}

/// `scopeSpans` only under its camelCase name (see the module doc).
fn resource_spans_field(key: &str) -> Option<u32> {
    Some(match key {
        "resource" => 1,
        "scopeSpans" => 2,
        "schemaUrl" | "schema_url" => 3,
        _ => return None,
    })
}

fn resource_spans(out: &mut Vec<u8>, value: &Json<'_>) -> Result<()> {
    each_field(value, resource_spans_field, |number, value| match number {
        1 => put_message(out, 1, |out| resource(out, value)),
        2 => put_repeated(out, 2, value, scope_spans),
        _ => put_string(out, 3, value),
    })
}

/// Only `resourceSpans`: it is what makes the document OTLP/JSON to the
/// Python path, and `resource_spans` beside it would be a second value.
fn request_field(key: &str) -> Option<u32> {
    (key == "resourceSpans").then_some(1)
}

/// Return the OTLP/JSON document in `payload` as the bytes of the
/// `ExportTraceServiceRequest` the Python path would parse it into.
///
/// Declines (see the module doc) rather than guess; it never refuses a
/// document itself.
pub fn transcode(payload: &[u8]) -> Result<Vec<u8>> {
    // An array is Zipkin JSON (or nothing): no use parsing it to decline it.
    let first = payload.iter().find(|byte| !b" \t\n\r".contains(byte));
    if first != Some(&b'{') {
        return Err(Declined);
    }
    let document: Json<'_> = serde_json::from_slice(payload).map_err(|_| Declined)?;
    let mut out = Vec::with_capacity(payload.len() / 2);
    let mut has_resource_spans = false;
    each_field(&document, request_field, |_, value| {
        has_resource_spans = true;
        put_repeated(&mut out, 1, value, resource_spans)
    })?;
    if !has_resource_spans {
        return Err(Declined);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: &str =
        r#""traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708""#;

    fn document(span_fields: &str) -> String {
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{{SPAN}{span_fields}}}]}}]}}]}}"#)
    }

    #[test]
    fn writes_the_request_protobuf_would() {
        let bytes = transcode(document(r#","kind":"SPAN_KIND_SERVER""#).as_bytes()).unwrap();
        let mut span = vec![0x0a, 16];
        span.extend(1..=16u8);
        span.extend([0x12, 8]);
        span.extend(1..=8u8);
        span.extend([0x30, 2]);
        let mut expected = vec![0x0a, span.len() as u8 + 4, 0x12, span.len() as u8 + 2, 0x12];
        expected.push(span.len() as u8);
        expected.extend(span);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn long_bodies_get_a_longer_length() {
        let name = "n".repeat(300);
        let bytes = transcode(document(&format!(r#","name":"{name}""#)).as_bytes()).unwrap();
        // Each level's length takes two bytes: 337 = 0x51 + 2 * 128.
        assert_eq!(&bytes[..3], &[0x0a, 0xd1, 0x02]);
        assert_eq!(bytes.len(), 3 + 337);
    }

    #[test]
    fn declines_what_it_is_not_sure_of() {
        for fields in [
            r#","name":null"#,
            r#","name":"a","name":"b""#,
            r#","startTimeUnixNano":"1","start_time_unix_nano":"1""#,
            r#","unknownField":1"#,
            r#","kind":"SERVER""#,
            r#","kind":1.0"#,
            r#","kind":2147483648"#,
            r#","startTimeUnixNano":"-1""#,
            r#","startTimeUnixNano":"1_000""#,
            r#","startTimeUnixNano":"000000000000000000001""#,
            r#","attributes":[{"key":"k","value":{"intValue":1,"stringValue":"x"}}]"#,
            r#","attributes":[{"key":"k","value":{"doubleValue":-0}}]"#,
            r#","attributes":[{"key":"k","value":{"doubleValue":"1.5"}}]"#,
            r#","attributes":[{"key":"k","value":{"bytesValue":"AAA=A"}}]"#,
            r#","attributes":[{"key":"k","value":{"stringValueStrindex":1}}]"#,
            r#","links":[{"trace_id":"00"}]"#,
            r#","parentSpanId":"01 02""#,
        ] {
            assert_eq!(
                transcode(document(fields).as_bytes()),
                Err(Declined),
                "{fields}"
            );
        }
        assert_eq!(transcode(b"{\"resource_spans\":[]}"), Err(Declined));
        assert_eq!(transcode(b"{\"resourceSpans\":[]} x"), Err(Declined));
        assert_eq!(transcode(b"[]"), Err(Declined));
    }

    #[test]
    fn ids_that_are_not_hex_become_empty() {
        for fields in [
            r#","parentSpanId":"abc""#,
            r#","parentSpanId":"zz""#,
            r#","parentSpanId":7"#,
        ] {
            let with = transcode(document(fields).as_bytes()).unwrap();
            assert_eq!(
                with,
                transcode(document("").as_bytes()).unwrap(),
                "{fields}"
            );
        }
    }

    #[test]
    fn base64_decodes_as_python_does() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("AQ").unwrap(), [1]);
        assert_eq!(base64_decode("AQ==").unwrap(), [1]);
        assert_eq!(base64_decode("AR").unwrap(), [1]);
        assert_eq!(base64_decode("-_-_").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(base64_decode("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        assert_eq!(base64_decode("AQID").unwrap(), [1, 2, 3]);
        assert!(base64_decode("A").is_err());
        assert!(base64_decode("AQ=").is_err());
        assert!(base64_decode("A===").is_err());
        assert!(base64_decode("AQ=x").is_err());
    }
}
