//! A borrowing decoder for the OTLP trace messages, with upb's wire rules.
//!
//! The Python path parses with upb; a payload must be accepted or refused
//! here exactly when upb accepts or refuses it, so this follows upb's rules
//! rather than any other decoder's (checked against the installed protobuf by
//! tests/unit/test_native_decoder.py):
//!
//! * a tag is a varint of at most 5 bytes and at most `u32::MAX`; field 0 is
//!   malformed (except inside an unknown group); an end-group tag outside its
//!   group is malformed;
//! * a value varint has at most 10 bytes, the bits past 64 are dropped;
//! * a length is a varint of at most 5 bytes and must fit the buffer;
//! * a known field with an unexpected wire type is an unknown field;
//! * unknown groups are walked (their tags checked); unknown length-delimited
//!   fields are skipped unread;
//! * every `string` field, read or not, must be UTF-8;
//! * nesting: a sub-message or group more than 100 levels below the top
//!   message is malformed.
//!
//! Nothing is copied: views borrow the payload.

pub const DEPTH_LIMIT: i32 = 100;

/// The payload is not valid protobuf of the expected message.
#[derive(Debug)]
pub struct Malformed;

pub type Result<T> = std::result::Result<T, Malformed>;

/// One field's value as read from the wire (groups are skipped, not yielded).
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8> {
        let byte = *self.buf.get(self.pos).ok_or(Malformed)?;
        self.pos += 1;
        Ok(byte)
    }

    /// A varint of at most `max_bytes` bytes, keeping the low 64 bits.
    fn varint(&mut self, max_bytes: u32) -> Result<u64> {
        let mut value = 0u64;
        for index in 0..max_bytes {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f).wrapping_shl(7 * index);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(len).ok_or(Malformed)?;
        let slice = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(slice)
    }

    /// The next tag as (field number, wire type), or None at the end.
    /// upb refuses field number 0 in a message but not inside an unknown
    /// group, which it skips without looking at field numbers.
    fn tag(&mut self, in_group: bool) -> Result<Option<(u32, u8)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let tag = u32::try_from(self.varint(5)?).map_err(|_| Malformed)?;
        let number = tag >> 3;
        if number == 0 && !in_group {
            return Err(Malformed);
        }
        Ok(Some((number, (tag & 7) as u8)))
    }

    /// Read one field's value; groups are walked and reported as None.
    fn value(&mut self, number: u32, wire_type: u8, depth: i32) -> Result<Option<Wire<'a>>> {
        Ok(Some(match wire_type {
            0 => Wire::Varint(self.varint(10)?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| Malformed)?,
            )),
            2 => {
                let len = usize::try_from(self.varint(5)?).map_err(|_| Malformed)?;
                Wire::Bytes(self.take(len)?)
            }
            3 => {
                self.skip_group(number, depth - 1)?;
                return Ok(None);
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return Err(Malformed),
        }))
    }

    fn skip_group(&mut self, number: u32, depth: i32) -> Result<()> {
        if depth < 0 {
            return Err(Malformed);
        }
        loop {
            let (inner, wire_type) = self.tag(true)?.ok_or(Malformed)?;
            if wire_type == 4 {
                return if inner == number {
                    Ok(())
                } else {
                    Err(Malformed)
                };
            }
            self.value(inner, wire_type, depth)?;
        }
    }
}

/// Call `on_field` for every non-group field of the message in `buf`.
fn fields<'a>(
    buf: &'a [u8],
    depth: i32,
    mut on_field: impl FnMut(u32, Wire<'a>) -> Result<()>,
) -> Result<()> {
    let mut reader = Reader { buf, pos: 0 };
    while let Some((number, wire_type)) = reader.tag(false)? {
        if wire_type == 4 {
            return Err(Malformed);
        }
        if let Some(value) = reader.value(number, wire_type, depth)? {
            on_field(number, value)?;
        }
    }
    Ok(())
}

/// Checks an encoded sub-message at the given depth budget.
type CheckMessage = fn(&[u8], i32) -> Result<()>;

fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Malformed)
}

fn child(depth: i32) -> Result<i32> {
    if depth > 0 {
        Ok(depth - 1)
    } else {
        Err(Malformed)
    }
}

/// A message whose fields are only checked (UTF-8 of the given string fields,
/// the listed sub-messages recursively).
fn check(buf: &[u8], depth: i32, strings: &[u32], messages: &[(u32, CheckMessage)]) -> Result<()> {
    fields(buf, depth, |number, value| {
        if let Wire::Bytes(bytes) = value {
            if strings.contains(&number) {
                utf8(bytes)?;
            } else if let Some((_, check_message)) =
                messages.iter().find(|(message, _)| *message == number)
            {
                check_message(bytes, child(depth)?)?;
            }
        }
        Ok(())
    })
}

fn check_key_value(buf: &[u8], depth: i32) -> Result<()> {
    let mut value = None;
    key_value_into(buf, depth, &mut "", &mut value)
}

fn check_entity_ref(buf: &[u8], depth: i32) -> Result<()> {
    check(buf, depth, &[1, 2, 3, 4], &[])
}

fn check_scope(buf: &[u8], depth: i32) -> Result<()> {
    check(buf, depth, &[1, 2], &[(3, check_key_value)])
}

fn check_link(buf: &[u8], depth: i32) -> Result<()> {
    check(buf, depth, &[3], &[(4, check_key_value)])
}

/// An `AnyValue`. Arrays and kvlists keep their encoded chunks (a merged
/// value has several) and are read when rendered.
#[derive(Clone)]
pub enum AnyView<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    Strindex(i32),
    Array(Vec<&'a [u8]>),
    Kvlist(Vec<&'a [u8]>),
}

/// Merge the `AnyValue` in `buf` into `value` (None: no oneof case set).
fn any_value_into<'a>(buf: &'a [u8], depth: i32, value: &mut Option<AnyView<'a>>) -> Result<()> {
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => *value = Some(AnyView::Str(utf8(bytes)?)),
            (2, Wire::Varint(raw)) => *value = Some(AnyView::Bool(raw != 0)),
            (3, Wire::Varint(raw)) => *value = Some(AnyView::Int(raw as i64)),
            (4, Wire::Fixed64(raw)) => *value = Some(AnyView::Double(f64::from_bits(raw))),
            (5, Wire::Bytes(bytes)) => {
                for_each_item(bytes, child(depth)?, |_| Ok(()))?;
                match value {
                    Some(AnyView::Array(chunks)) => chunks.push(bytes),
                    _ => *value = Some(AnyView::Array(vec![bytes])),
                }
            }
            (6, Wire::Bytes(bytes)) => {
                for_each_entry(bytes, child(depth)?, |_, _| Ok(()))?;
                match value {
                    Some(AnyView::Kvlist(chunks)) => chunks.push(bytes),
                    _ => *value = Some(AnyView::Kvlist(vec![bytes])),
                }
            }
            (7, Wire::Bytes(bytes)) => *value = Some(AnyView::Bytes(bytes)),
            (8, Wire::Varint(raw)) => *value = Some(AnyView::Strindex(raw as i32)),
            _ => {}
        }
        Ok(())
    })
}

/// Call `on_item` with each value of an encoded `ArrayValue`.
pub fn for_each_item<'a>(
    buf: &'a [u8],
    depth: i32,
    mut on_item: impl FnMut(Option<AnyView<'a>>) -> Result<()>,
) -> Result<()> {
    fields(buf, depth, |number, wire| {
        if let (1, Wire::Bytes(bytes)) = (number, wire) {
            let mut item = None;
            any_value_into(bytes, child(depth)?, &mut item)?;
            on_item(item)?;
        }
        Ok(())
    })
}

/// Call `on_entry` with each (key, value) of an encoded `KeyValueList`.
pub fn for_each_entry<'a>(
    buf: &'a [u8],
    depth: i32,
    mut on_entry: impl FnMut(&'a str, Option<AnyView<'a>>) -> Result<()>,
) -> Result<()> {
    fields(buf, depth, |number, wire| {
        if let (1, Wire::Bytes(bytes)) = (number, wire) {
            let mut key = "";
            let mut value = None;
            key_value_into(bytes, child(depth)?, &mut key, &mut value)?;
            on_entry(key, value)?;
        }
        Ok(())
    })
}

fn key_value_into<'a>(
    buf: &'a [u8],
    depth: i32,
    key: &mut &'a str,
    value: &mut Option<AnyView<'a>>,
) -> Result<()> {
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => *key = utf8(bytes)?,
            (2, Wire::Bytes(bytes)) => any_value_into(bytes, child(depth)?, value)?,
            _ => {}
        }
        Ok(())
    })
}

/// An attribute: its key and its value (None: unset).
pub struct KeyValueView<'a> {
    pub key: &'a str,
    pub value: Option<AnyView<'a>>,
}

fn push_key_value<'a>(buf: &'a [u8], depth: i32, into: &mut Vec<KeyValueView<'a>>) -> Result<()> {
    let mut key = "";
    let mut value = None;
    key_value_into(buf, depth, &mut key, &mut value)?;
    into.push(KeyValueView { key, value });
    Ok(())
}

/// The parts of a `ResourceSpans` the extraction reads.
#[derive(Default)]
pub struct ResourceSpansView<'a> {
    pub attributes: Vec<KeyValueView<'a>>,
    pub scope_spans: Vec<&'a [u8]>,
}

fn resource_into<'a>(buf: &'a [u8], depth: i32, into: &mut ResourceSpansView<'a>) -> Result<()> {
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => push_key_value(bytes, child(depth)?, &mut into.attributes)?,
            (3, Wire::Bytes(bytes)) => check_entity_ref(bytes, child(depth)?)?,
            _ => {}
        }
        Ok(())
    })
}

/// Decode one `ResourceSpans` (depth is its own level's budget).
pub fn resource_spans(buf: &[u8], depth: i32) -> Result<ResourceSpansView<'_>> {
    let mut view = ResourceSpansView::default();
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => resource_into(bytes, child(depth)?, &mut view)?,
            (2, Wire::Bytes(bytes)) => view.scope_spans.push(bytes),
            (3, Wire::Bytes(bytes)) => {
                utf8(bytes)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(view)
}

/// The parts of a `ScopeSpans` the extraction reads.
#[derive(Default)]
pub struct ScopeSpansView<'a> {
    pub scope_name: &'a str,
    pub spans: Vec<&'a [u8]>,
}

pub fn scope_spans(buf: &[u8], depth: i32) -> Result<ScopeSpansView<'_>> {
    let mut view = ScopeSpansView::default();
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => {
                check_scope(bytes, child(depth)?)?;
                fields(bytes, child(depth)?, |number, wire| {
                    if let (1, Wire::Bytes(name)) = (number, wire) {
                        view.scope_name = utf8(name)?;
                    }
                    Ok(())
                })?;
            }
            (2, Wire::Bytes(bytes)) => view.spans.push(bytes),
            (3, Wire::Bytes(bytes)) => {
                utf8(bytes)?;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(view)
}

/// The parts of a `Span` the extraction reads.
#[derive(Default)]
pub struct SpanView<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValueView<'a>>,
    pub event_count: usize,
    pub has_exception_event: bool,
    pub status_code: i32,
    pub status_message: &'a str,
}

fn event_name(buf: &[u8], depth: i32) -> Result<&str> {
    let mut name = "";
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (2, Wire::Bytes(bytes)) => name = utf8(bytes)?,
            (3, Wire::Bytes(bytes)) => check_key_value(bytes, child(depth)?)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok(name)
}

/// Decode a `Span` into `view`, reusing its attribute vector.
pub fn span_into<'a>(buf: &'a [u8], depth: i32, view: &mut SpanView<'a>) -> Result<()> {
    let mut attributes = std::mem::take(&mut view.attributes);
    attributes.clear();
    *view = SpanView::default();
    fields(buf, depth, |number, wire| {
        match (number, wire) {
            (1, Wire::Bytes(bytes)) => view.trace_id = bytes,
            (2, Wire::Bytes(bytes)) => view.span_id = bytes,
            (3, Wire::Bytes(bytes)) => {
                utf8(bytes)?;
            }
            (4, Wire::Bytes(bytes)) => view.parent_span_id = bytes,
            (5, Wire::Bytes(bytes)) => view.name = utf8(bytes)?,
            (6, Wire::Varint(raw)) => view.kind = raw as i32,
            (7, Wire::Fixed64(raw)) => view.start_time_unix_nano = raw,
            (8, Wire::Fixed64(raw)) => view.end_time_unix_nano = raw,
            (9, Wire::Bytes(bytes)) => push_key_value(bytes, child(depth)?, &mut attributes)?,
            (11, Wire::Bytes(bytes)) => {
                view.event_count += 1;
                if event_name(bytes, child(depth)?)? == "exception" {
                    view.has_exception_event = true;
                }
            }
            (13, Wire::Bytes(bytes)) => check_link(bytes, child(depth)?)?,
            (15, Wire::Bytes(bytes)) => fields(bytes, child(depth)?, |number, wire| {
                match (number, wire) {
                    (2, Wire::Bytes(message)) => view.status_message = utf8(message)?,
                    (3, Wire::Varint(raw)) => view.status_code = raw as i32,
                    _ => {}
                }
                Ok(())
            })?,
            _ => {}
        }
        Ok(())
    })?;
    view.attributes = attributes;
    Ok(())
}

/// The `ResourceSpans` chunks of an `ExportTraceServiceRequest`.
pub fn request(buf: &[u8]) -> Result<Vec<&[u8]>> {
    let mut chunks = Vec::new();
    fields(buf, DEPTH_LIMIT, |number, wire| {
        if let (1, Wire::Bytes(bytes)) = (number, wire) {
            chunks.push(bytes);
        }
        Ok(())
    })?;
    Ok(chunks)
}

/// Check the whole request as upb would; return how many spans it holds.
pub fn validate(buf: &[u8]) -> Result<(usize, usize)> {
    let chunks = request(buf)?;
    let depth = child(DEPTH_LIMIT)?;
    let mut span_count = 0;
    let mut span = SpanView::default();
    for chunk in &chunks {
        let resource = resource_spans(chunk, depth)?;
        for scope_chunk in &resource.scope_spans {
            let scope = scope_spans(scope_chunk, child(depth)?)?;
            for span_chunk in &scope.spans {
                span_into(span_chunk, child(child(depth)?)?, &mut span)?;
                span_count += 1;
            }
        }
    }
    Ok((chunks.len(), span_count))
}
