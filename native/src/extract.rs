//! Enriched span rows from a decoded request, appended to Python lists.
//!
//! This is a port of `SpanExtractor.extract` (spanstream/enrich/spans.py)
//! and `to_string_map` (spanstream/enrich/attributes.py); those stay the
//! reference. Where the Python rule leans on Python semantics that are costly
//! to copy (`str()` of a list, `int()` of a string, Unicode case and digit
//! tables) the port builds the Python value and calls Python, so rare inputs
//! give the same result, or raise the same exception, by construction.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::operation::{server_operation, PathArg};
use crate::render::{dict_entries, float_repr, hex, list_items, render_value};
use crate::wire::{self, AnyView, KeyValueView, SpanView};

pub const COLUMN_COUNT: usize = 32;
const TRUNCATION_MARKER: &str = "...[truncated]";
const UNKNOWN_SERVICE: &str = "unknown_service";
/// `spanstream.model.SPAN_KINDS`, by their OTLP enum value.
pub(crate) const SPAN_KINDS: [&str; 6] = [
    "UNSPECIFIED",
    "INTERNAL",
    "SERVER",
    "CLIENT",
    "PRODUCER",
    "CONSUMER",
];
const STATUS_CODES: [&str; 3] = ["UNSET", "OK", "ERROR"];
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const STATUS_ERROR: i32 = 2;
/// Strings up to this many bytes are shared between rows of one call.
const CACHED_STRING_BYTES: usize = 64;
const CACHE_ENTRIES: usize = 16_384;

/// Settings and record location of one `extract_into` call.
pub struct ExtractArgs<'py> {
    pub columns: Vec<Bound<'py, PyList>>,
    pub tenant_attribute: String,
    pub default_tenant: Bound<'py, PyString>,
    pub max_attributes: isize,
    pub max_value_chars: usize,
    pub shard_id: Bound<'py, PyAny>,
    pub sequence_number: Bound<'py, PyAny>,
    pub sub_sequence_number: Bound<'py, PyAny>,
    pub arrival_unix_millis: Bound<'py, PyAny>,
}

/// What happened to the spans of one payload (`ExtractStats`).
#[derive(Default)]
pub struct Stats {
    pub spans: u64,
    pub invalid_spans: u64,
    pub dropped_attributes: u64,
    pub truncated_attributes: u64,
    pub truncated_names: u64,
}

#[derive(Default)]
struct Counters {
    dropped: u64,
    truncated: u64,
    truncated_names: u64,
}

/// A multiply-rotate hash over 8-byte words: the keys are short strings of
/// one payload, so speed matters more than resistance to chosen collisions
/// (a bad payload can only slow its own call, and the cache is capped).
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = self.0;
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            hash = (hash ^ u64::from_le_bytes(word))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(26);
        }
        self.0 = hash;
    }
}

/// Python strings made once per call and shared by every row that needs them.
struct StrCache<'a, 'py> {
    py: Python<'py>,
    strings: HashMap<Cow<'a, str>, Bound<'py, PyString>, BuildHasherDefault<WordHasher>>,
}

impl<'a, 'py> StrCache<'a, 'py> {
    fn new(py: Python<'py>) -> Self {
        StrCache {
            py,
            strings: HashMap::default(),
        }
    }

    fn get(&mut self, text: Cow<'a, str>) -> Bound<'py, PyString> {
        if text.len() > CACHED_STRING_BYTES {
            return PyString::new(self.py, &text);
        }
        if let Some(found) = self.strings.get(text.as_ref()) {
            return found.clone();
        }
        let made = PyString::new(self.py, &text);
        if self.strings.len() < CACHE_ENTRIES {
            self.strings.insert(text, made.clone());
        }
        made
    }

    fn borrowed(&mut self, text: &'a str) -> Bound<'py, PyString> {
        self.get(Cow::Borrowed(text))
    }
}

/// An attribute's plain value as Python's `any_value_to_python` returns it.
#[derive(Clone)]
enum Typed<'a> {
    None,
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<&'a [u8]>),
    Dict(Vec<&'a [u8]>),
}

impl<'a> Typed<'a> {
    fn of(value: Option<&AnyView<'a>>) -> Self {
        match value {
            None => Typed::None,
            Some(AnyView::Str(text)) => Typed::Str(Cow::Borrowed(text)),
            Some(AnyView::Bool(flag)) => Typed::Bool(*flag),
            Some(AnyView::Int(number)) => Typed::Int(*number),
            Some(AnyView::Strindex(number)) => Typed::Int(i64::from(*number)),
            Some(AnyView::Double(number)) => Typed::Float(*number),
            Some(AnyView::Bytes(bytes)) => Typed::Str(Cow::Owned(hex(bytes))),
            Some(AnyView::Array(chunks)) => Typed::List(chunks.clone()),
            Some(AnyView::Kvlist(chunks)) => Typed::Dict(chunks.clone()),
        }
    }

    /// Python truthiness.
    fn is_truthy(&self) -> bool {
        match self {
            Typed::None => false,
            Typed::Str(text) => !text.is_empty(),
            Typed::Int(number) => *number != 0,
            Typed::Float(number) => *number != 0.0,
            Typed::Bool(flag) => *flag,
            Typed::List(chunks) => list_items(chunks).is_ok_and(|items| !items.is_empty()),
            Typed::Dict(chunks) => dict_entries(chunks).is_ok_and(|entries| !entries.is_empty()),
        }
    }

    /// What `_first` skips: None and "".
    fn is_absent(&self) -> bool {
        match self {
            Typed::None => true,
            Typed::Str(text) => text.is_empty(),
            _ => false,
        }
    }
}

fn value_to_python<'py>(
    py: Python<'py>,
    value: Option<&AnyView<'_>>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        None => py.None().into_bound(py),
        Some(AnyView::Str(text)) => PyString::new(py, text).into_any(),
        Some(AnyView::Bool(flag)) => PyBool::new(py, *flag).to_owned().into_any(),
        Some(AnyView::Int(number)) => number.into_pyobject(py)?.into_any(),
        Some(AnyView::Strindex(number)) => number.into_pyobject(py)?.into_any(),
        Some(AnyView::Double(number)) => PyFloat::new(py, *number).into_any(),
        Some(AnyView::Bytes(bytes)) => PyString::new(py, &hex(bytes)).into_any(),
        Some(AnyView::Array(chunks)) => list_to_python(py, chunks)?.into_any(),
        Some(AnyView::Kvlist(chunks)) => dict_to_python(py, chunks)?.into_any(),
    })
}

fn list_to_python<'py>(py: Python<'py>, chunks: &[&[u8]]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for item in list_items(chunks).map_err(|_| crate::malformed())? {
        list.append(value_to_python(py, item.as_ref())?)?;
    }
    Ok(list)
}

fn dict_to_python<'py>(py: Python<'py>, chunks: &[&[u8]]) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in dict_entries(chunks).map_err(|_| crate::malformed())? {
        dict.set_item(key, value_to_python(py, value.as_ref())?)?;
    }
    Ok(dict)
}

fn typed_to_python<'py>(
    cache: &mut StrCache<'_, 'py>,
    typed: &Typed<'_>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = cache.py;
    Ok(match typed {
        Typed::None => py.None().into_bound(py),
        Typed::Str(text) => PyString::new(py, text).into_any(),
        Typed::Int(number) => number.into_pyobject(py)?.into_any(),
        Typed::Float(number) => PyFloat::new(py, *number).into_any(),
        Typed::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Typed::List(chunks) => list_to_python(py, chunks)?.into_any(),
        Typed::Dict(chunks) => dict_to_python(py, chunks)?.into_any(),
    })
}

/// `str(value)` for a value that is not None.
fn typed_str<'a, 'py>(
    cache: &mut StrCache<'a, 'py>,
    typed: &Typed<'a>,
) -> PyResult<Bound<'py, PyString>> {
    Ok(match typed {
        Typed::Str(text) => cache.get(text.clone()),
        Typed::Int(number) => cache.get(Cow::Owned(number.to_string())),
        Typed::Float(number) => cache.get(Cow::Owned(float_repr(*number))),
        Typed::Bool(flag) => cache.get(Cow::Borrowed(if *flag { "True" } else { "False" })),
        Typed::None | Typed::List(_) | Typed::Dict(_) => typed_to_python(cache, typed)?.str()?,
    })
}

/// `_as_str(value)`.
fn as_str<'a, 'py>(
    cache: &mut StrCache<'a, 'py>,
    typed: Option<&Typed<'a>>,
) -> PyResult<Option<Bound<'py, PyString>>> {
    match typed {
        None | Some(Typed::None) => Ok(None),
        Some(typed) => typed_str(cache, typed).map(Some),
    }
}

/// `_as_int(value)`: an int, or None.
enum HttpStatus<'py> {
    None,
    Small(i64),
    Big(Bound<'py, PyAny>),
}

impl<'py> HttpStatus<'py> {
    fn at_least(&self, floor: i64) -> PyResult<bool> {
        match self {
            HttpStatus::None => Ok(false),
            HttpStatus::Small(number) => Ok(*number >= floor),
            HttpStatus::Big(number) => number.ge(floor),
        }
    }

    fn to_python(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            HttpStatus::None => py.None().into_bound(py),
            HttpStatus::Small(number) => number.into_pyobject(py)?.into_any(),
            HttpStatus::Big(number) => number.clone(),
        })
    }

    /// None unless the status fits the archive's int32 column, as `_as_int`.
    fn within_int32(self) -> Self {
        match self {
            HttpStatus::Small(number) if i32::try_from(number).is_ok() => self,
            _ => HttpStatus::None,
        }
    }
}

fn short_decimal(text: &str) -> Option<i64> {
    if (1..=18).contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn as_int<'py>(
    cache: &mut StrCache<'_, 'py>,
    typed: Option<&Typed<'_>>,
) -> PyResult<HttpStatus<'py>> {
    let Some(typed) = typed else {
        return Ok(HttpStatus::None);
    };
    match typed {
        Typed::None | Typed::Bool(_) => return Ok(HttpStatus::None),
        Typed::Int(number) => return Ok(HttpStatus::Small(*number)),
        Typed::Float(number) if number.is_finite() && number.abs() < 9.0e18 => {
            return Ok(HttpStatus::Small(number.trunc() as i64));
        }
        Typed::Str(text) => {
            if let Some(number) = short_decimal(text) {
                return Ok(HttpStatus::Small(number));
            }
        }
        _ => {}
    }
    let py = cache.py;
    let value = typed_to_python(cache, typed)?;
    match py.get_type::<PyInt>().call1((value,)) {
        Ok(number) => Ok(match number.extract::<i64>() {
            Ok(small) => HttpStatus::Small(small),
            Err(_) => HttpStatus::Big(number),
        }),
        Err(err)
            if err.is_instance_of::<PyTypeError>(py)
                || err.is_instance_of::<PyValueError>(py)
                || err.is_instance_of::<PyOverflowError>(py) =>
        {
            Ok(HttpStatus::None)
        }
        Err(err) => Err(err),
    }
}

fn first<'s, 'a>(slots: &'s [Typed<'a>], names: &[usize]) -> Option<&'s Typed<'a>> {
    names
        .iter()
        .map(|index| &slots[*index])
        .find(|typed| !typed.is_absent())
}

/// Span attributes the enrichment rules read, by slot.
mod span_key {
    pub const HTTP_REQUEST_METHOD: usize = 0;
    pub const HTTP_METHOD: usize = 1;
    pub const HTTP_ROUTE: usize = 2;
    pub const HTTP_RESPONSE_STATUS_CODE: usize = 3;
    pub const HTTP_STATUS_CODE: usize = 4;
    pub const URL_PATH: usize = 5;
    pub const HTTP_TARGET: usize = 6;
    pub const URL_FULL: usize = 7;
    pub const HTTP_URL: usize = 8;
    pub const DB_SYSTEM: usize = 9;
    pub const DB_SYSTEM_NAME: usize = 10;
    pub const MESSAGING_SYSTEM: usize = 11;
    pub const PEER_SERVICE: usize = 12;
    pub const SERVER_ADDRESS: usize = 13;
    pub const NET_PEER_NAME: usize = 14;
    pub const FAAS_COLDSTART: usize = 15;
    pub const COUNT: usize = 16;

    pub fn slot(key: &str) -> Option<usize> {
        Some(match key {
            "http.request.method" => HTTP_REQUEST_METHOD,
            "http.method" => HTTP_METHOD,
            "http.route" => HTTP_ROUTE,
            "http.response.status_code" => HTTP_RESPONSE_STATUS_CODE,
            "http.status_code" => HTTP_STATUS_CODE,
            "url.path" => URL_PATH,
            "http.target" => HTTP_TARGET,
            "url.full" => URL_FULL,
            "http.url" => HTTP_URL,
            "db.system" => DB_SYSTEM,
            "db.system.name" => DB_SYSTEM_NAME,
            "messaging.system" => MESSAGING_SYSTEM,
            "peer.service" => PEER_SERVICE,
            "server.address" => SERVER_ADDRESS,
            "net.peer.name" => NET_PEER_NAME,
            "faas.coldstart" => FAAS_COLDSTART,
            _ => return None,
        })
    }
}

/// Resource attributes the rules read, by slot (the tenant key is configured).
mod resource_key {
    pub const TENANT: usize = 0;
    pub const SERVICE_NAME: usize = 1;
    pub const CLOUD_REGION: usize = 2;
    pub const CLOUD_ACCOUNT_ID: usize = 3;
    pub const FAAS_NAME: usize = 4;
    pub const COUNT: usize = 5;

    pub fn slot(key: &str) -> Option<usize> {
        Some(match key {
            "service.name" => SERVICE_NAME,
            "cloud.region" => CLOUD_REGION,
            "cloud.account.id" => CLOUD_ACCOUNT_ID,
            "faas.name" => FAAS_NAME,
            _ => return None,
        })
    }
}

/// `text[:max_chars] + TRUNCATION_MARKER` if `text` has more characters.
fn truncated(text: &str, max_chars: usize) -> Option<String> {
    if text.len() <= max_chars {
        return None;
    }
    let (cut, _) = text.char_indices().nth(max_chars)?;
    Some(format!("{}{TRUNCATION_MARKER}", &text[..cut]))
}

/// Port of `cut_name`: `name`, or its first `max_chars` code points (as
/// Python counts and slices them) and the marker, the cut counted.
fn cut_name<'py>(
    name: Bound<'py, PyString>,
    max_chars: usize,
    counters: &mut Counters,
) -> PyResult<Bound<'py, PyString>> {
    let py = name.py();
    // SAFETY: `name` is a live str; PyUnicode_GetLength only reads it.
    let length = unsafe { ffi::PyUnicode_GetLength(name.as_ptr()) };
    let Ok(length) = usize::try_from(length) else {
        return Err(PyErr::fetch(py));
    };
    if length <= max_chars {
        return Ok(name);
    }
    counters.truncated_names += 1;
    // `max_chars < length`, so it fits an isize.
    let end = max_chars as ffi::Py_ssize_t;
    // SAFETY: `name` is a live str and 0 <= end <= its length; the new
    // reference is owned by the returned Bound (or the error is fetched).
    let head = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyUnicode_Substring(name.as_ptr(), 0, end))?
    };
    Ok(head
        .cast_into::<PyString>()?
        .add(TRUNCATION_MARKER)?
        .cast_into::<PyString>()?)
}

fn cut_optional<'py>(
    name: Option<Bound<'py, PyString>>,
    max_chars: usize,
    counters: &mut Counters,
) -> PyResult<Option<Bound<'py, PyString>>> {
    name.map(|name| cut_name(name, max_chars, counters))
        .transpose()
}

/// Port of `to_string_map`: the rendered dict, with every kept attribute's
/// typed value handed to `keep` in order (a later duplicate overrides).
fn to_string_map<'a, 'py>(
    cache: &mut StrCache<'a, 'py>,
    key_values: &[KeyValueView<'a>],
    max_count: isize,
    max_chars: usize,
    counters: &mut Counters,
    mut keep: impl FnMut(&'a str, Typed<'a>),
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(cache.py);
    for key_value in key_values {
        // SAFETY: `dict` is a live dict owned by this frame.
        if unsafe { ffi::PyDict_Size(dict.as_ptr()) } >= max_count {
            counters.dropped += 1;
            continue;
        }
        let value = key_value.value.as_ref();
        let text = match value {
            Some(AnyView::Str(text)) => match truncated(text, max_chars) {
                Some(cut) => {
                    counters.truncated += 1;
                    PyString::new(cache.py, &cut)
                }
                None => cache.borrowed(text),
            },
            other => {
                let rendered = render_value(other).map_err(|_| crate::malformed())?;
                match truncated(&rendered, max_chars) {
                    Some(cut) => {
                        counters.truncated += 1;
                        PyString::new(cache.py, &cut)
                    }
                    None => cache.get(Cow::Owned(rendered)),
                }
            }
        };
        let key = cache.borrowed(key_value.key);
        // SAFETY: all three pointers are live, owned references.
        let status = unsafe { ffi::PyDict_SetItem(dict.as_ptr(), key.as_ptr(), text.as_ptr()) };
        if status < 0 {
            return Err(PyErr::fetch(cache.py));
        }
        keep(key_value.key, Typed::of(value));
    }
    Ok(dict)
}

/// What every span of one resource shares (`ResourceContext`).
struct ResourceContext<'py> {
    tenant: Bound<'py, PyString>,
    service: Bound<'py, PyString>,
    cloud_region: Option<Bound<'py, PyString>>,
    cloud_account_id: Option<Bound<'py, PyString>>,
    faas_name: Option<Bound<'py, PyString>>,
    attributes: Bound<'py, PyDict>,
}

static OPERATION_NAME: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python rule itself, for inputs the ASCII port does not decide.
fn python_operation_name<'py>(
    name: Bound<'py, PyString>,
    http_method: Option<Bound<'py, PyString>>,
    http_route: Option<Bound<'py, PyString>>,
    http_path: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = name.py();
    let function = OPERATION_NAME.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .import("spanstream.enrich.operation")?
            .getattr("operation_name")?
            .unbind())
    })?;
    function
        .bind(py)
        .call1((name, true, http_method, http_route, http_path))
}

struct Extractor<'a, 'py> {
    py: Python<'py>,
    args: &'a ExtractArgs<'py>,
    cache: StrCache<'a, 'py>,
    counters: Counters,
    kind_names: Vec<Bound<'py, PyString>>,
    status_names: Vec<Bound<'py, PyString>>,
    last_trace: Option<(&'a [u8], Bound<'py, PyString>)>,
}

pub fn extract_into<'py>(
    py: Python<'py>,
    payload: &[u8],
    args: &ExtractArgs<'py>,
) -> PyResult<Stats> {
    let mut extractor = Extractor {
        py,
        args,
        cache: StrCache::new(py),
        counters: Counters::default(),
        kind_names: SPAN_KINDS
            .iter()
            .map(|name| PyString::intern(py, name))
            .collect(),
        status_names: STATUS_CODES
            .iter()
            .map(|name| PyString::intern(py, name))
            .collect(),
        last_trace: None,
    };
    let malformed = |_| crate::malformed();
    let depth = wire::DEPTH_LIMIT - 1;
    let mut stats = Stats::default();
    let mut span = SpanView::default();
    for chunk in wire::request(payload).map_err(malformed)? {
        let resource_spans = wire::resource_spans(chunk, depth).map_err(malformed)?;
        let context = extractor.resource_context(&resource_spans.attributes)?;
        for scope_chunk in &resource_spans.scope_spans {
            let scope_spans = wire::scope_spans(scope_chunk, depth - 1).map_err(malformed)?;
            let scope_name = if scope_spans.scope_name.is_empty() {
                None
            } else {
                Some(extractor.cache.borrowed(scope_spans.scope_name))
            };
            for span_chunk in &scope_spans.spans {
                wire::span_into(span_chunk, depth - 2, &mut span).map_err(malformed)?;
                if extractor.append(&span, &context, scope_name.as_ref())? {
                    stats.spans += 1;
                } else {
                    stats.invalid_spans += 1;
                }
            }
        }
    }
    stats.dropped_attributes = extractor.counters.dropped;
    stats.truncated_attributes = extractor.counters.truncated;
    stats.truncated_names = extractor.counters.truncated_names;
    Ok(stats)
}

fn optional<'py>(py: Python<'py>, value: Option<Bound<'py, PyString>>) -> Bound<'py, PyAny> {
    value.map_or_else(|| py.None().into_bound(py), Bound::into_any)
}

fn is_valid(span: &SpanView<'_>) -> bool {
    span.trace_id.len() == 16
        && span.span_id.len() == 8
        && (span.parent_span_id.is_empty() || span.parent_span_id.len() == 8)
        && span.trace_id.iter().any(|byte| *byte != 0)
        && i64::try_from(span.start_time_unix_nano).is_ok()
        && i64::try_from(span.end_time_unix_nano).is_ok()
}

impl<'a, 'py> Extractor<'a, 'py> {
    fn resource_context(
        &mut self,
        key_values: &[KeyValueView<'a>],
    ) -> PyResult<ResourceContext<'py>> {
        // Python counts the resource's dropped and cut attributes nowhere.
        let mut ignored = Counters::default();
        let mut slots: [Typed<'a>; resource_key::COUNT] = std::array::from_fn(|_| Typed::None);
        let tenant_attribute = self.args.tenant_attribute.as_str();
        let attributes = to_string_map(
            &mut self.cache,
            key_values,
            self.args.max_attributes,
            self.args.max_value_chars,
            &mut ignored,
            |key, typed| {
                if let Some(index) = resource_key::slot(key) {
                    slots[index] = typed;
                }
            },
        )?;
        // The last attribute of the tenant key, even past the count limit, as
        // `_last_value` reads it: the tenant decides where spans are written.
        if let Some(key_value) = key_values
            .iter()
            .rev()
            .find(|kv| kv.key == tenant_attribute)
        {
            slots[resource_key::TENANT] = Typed::of(key_value.value.as_ref());
        }
        // Unlike the attributes above, cut names are counted.
        let max_chars = self.args.max_value_chars;
        let counters = &mut self.counters;
        let tenant = if slots[resource_key::TENANT].is_truthy() {
            let tenant = typed_str(&mut self.cache, &slots[resource_key::TENANT])?;
            cut_name(tenant, max_chars, counters)?
        } else {
            self.args.default_tenant.clone()
        };
        let service = if slots[resource_key::SERVICE_NAME].is_truthy() {
            let service = typed_str(&mut self.cache, &slots[resource_key::SERVICE_NAME])?;
            cut_name(service, max_chars, counters)?
        } else {
            self.cache.borrowed(UNKNOWN_SERVICE)
        };
        let faas_name = as_str(&mut self.cache, first(&slots, &[resource_key::FAAS_NAME]))?;
        Ok(ResourceContext {
            tenant,
            service,
            cloud_region: as_str(&mut self.cache, Some(&slots[resource_key::CLOUD_REGION]))?,
            cloud_account_id: as_str(
                &mut self.cache,
                Some(&slots[resource_key::CLOUD_ACCOUNT_ID]),
            )?,
            faas_name: cut_optional(faas_name, max_chars, counters)?,
            attributes,
        })
    }

    fn trace_id(&mut self, trace_id: &'a [u8]) -> Bound<'py, PyString> {
        if let Some((last, text)) = &self.last_trace {
            if *last == trace_id {
                return text.clone();
            }
        }
        let text = PyString::new(self.py, &hex(trace_id));
        self.last_trace = Some((trace_id, text.clone()));
        text
    }

    /// Port of `SpanExtractor._append`: False (and nothing appended) for a
    /// span with malformed ids.
    fn append(
        &mut self,
        span: &SpanView<'a>,
        context: &ResourceContext<'py>,
        scope_name: Option<&Bound<'py, PyString>>,
    ) -> PyResult<bool> {
        use span_key as key;
        if !is_valid(span) {
            return Ok(false);
        }
        let py = self.py;
        let mut slots: [Typed<'a>; key::COUNT] = std::array::from_fn(|_| Typed::None);
        let span_attributes = to_string_map(
            &mut self.cache,
            &span.attributes,
            self.args.max_attributes,
            self.args.max_value_chars,
            &mut self.counters,
            |name, typed| {
                if let Some(index) = key::slot(name) {
                    slots[index] = typed;
                }
            },
        )?;
        let kind = span.kind;
        let kind_name = usize::try_from(kind)
            .ok()
            .and_then(|index| self.kind_names.get(index))
            .unwrap_or(&self.kind_names[0])
            .clone();
        let status_code = span.status_code;
        let status_name = usize::try_from(status_code)
            .ok()
            .and_then(|index| self.status_names.get(index))
            .unwrap_or(&self.status_names[0])
            .clone();
        let cache = &mut self.cache;
        let http_method = as_str(
            cache,
            first(&slots, &[key::HTTP_REQUEST_METHOD, key::HTTP_METHOD]),
        )?;
        let http_route = as_str(cache, Some(&slots[key::HTTP_ROUTE]))?;
        let http_status = as_int(
            cache,
            first(
                &slots,
                &[key::HTTP_RESPONSE_STATUS_CODE, key::HTTP_STATUS_CODE],
            ),
        )?
        .within_int32();
        let has_exception = span.has_exception_event;
        let is_error = status_code == STATUS_ERROR
            || has_exception
            || (kind == SERVER && http_status.at_least(500)?)
            || (kind == CLIENT && http_status.at_least(400)?);
        let name = cache.borrowed(span.name);
        let operation = if kind == SERVER {
            let path = first(
                &slots,
                &[
                    key::URL_PATH,
                    key::HTTP_TARGET,
                    key::URL_FULL,
                    key::HTTP_URL,
                ],
            );
            let path_arg = match path {
                Some(typed) if !typed.is_truthy() => PathArg::Falsy,
                None => PathArg::Falsy,
                Some(Typed::Str(text)) if text.is_ascii() => PathArg::Ascii(text),
                Some(_) => PathArg::Other,
            };
            let method_text = http_method.as_ref().map(|text| text.to_str()).transpose()?;
            let route_text = http_route.as_ref().map(|text| text.to_str()).transpose()?;
            match server_operation(span.name, method_text, route_text, path_arg) {
                Some(operation) if operation == span.name => name.clone().into_any(),
                Some(operation) => cache.get(Cow::Owned(operation)).into_any(),
                None => {
                    let path_value = match path {
                        Some(typed) => typed_to_python(cache, typed)?,
                        None => py.None().into_bound(py),
                    };
                    python_operation_name(
                        name.clone(),
                        http_method.clone(),
                        http_route.clone(),
                        path_value,
                    )?
                }
            }
        } else {
            name.clone().into_any()
        };
        let max_chars = self.args.max_value_chars;
        let counters = &mut self.counters;
        let operation = cut_name(operation.cast_into::<PyString>()?, max_chars, counters)?;
        let span_name = cut_name(name, max_chars, counters)?;
        let db_system = cut_optional(
            as_str(cache, first(&slots, &[key::DB_SYSTEM, key::DB_SYSTEM_NAME]))?,
            max_chars,
            counters,
        )?;
        let messaging_system = cut_optional(
            as_str(cache, Some(&slots[key::MESSAGING_SYSTEM]))?,
            max_chars,
            counters,
        )?;
        let peer_service = if kind == CLIENT || kind == PRODUCER {
            let peer_service = as_str(
                cache,
                first(
                    &slots,
                    &[
                        key::PEER_SERVICE,
                        key::SERVER_ADDRESS,
                        key::NET_PEER_NAME,
                        key::DB_SYSTEM,
                        key::DB_SYSTEM_NAME,
                        key::MESSAGING_SYSTEM,
                    ],
                ),
            )?;
            cut_optional(peer_service, max_chars, counters)?
        } else {
            None
        };
        let is_cold_start = match &slots[key::FAAS_COLDSTART] {
            Typed::Bool(flag) => *flag,
            Typed::Str(text) => text == "true",
            _ => false,
        };
        let status_message = if span.status_message.is_empty() {
            None
        } else {
            Some(cache.borrowed(span.status_message))
        };
        let start = span.start_time_unix_nano;
        let end = span.end_time_unix_nano;
        let parent_span_id = if span.parent_span_id.is_empty() {
            None
        } else {
            Some(PyString::new(py, &hex(span.parent_span_id)))
        };
        let trace_id = self.trace_id(span.trace_id);
        let args = self.args;
        let row: [Bound<'py, PyAny>; COLUMN_COUNT] = [
            context.tenant.clone().into_any(),
            trace_id.into_any(),
            PyString::new(py, &hex(span.span_id)).into_any(),
            optional(py, parent_span_id),
            context.service.clone().into_any(),
            operation.into_any(),
            span_name.into_any(),
            kind_name.into_any(),
            start.into_pyobject(py)?.into_any(),
            end.into_pyobject(py)?.into_any(),
            end.saturating_sub(start).into_pyobject(py)?.into_any(),
            status_name.into_any(),
            optional(py, status_message),
            PyBool::new(py, is_error).to_owned().into_any(),
            optional(py, http_method),
            optional(py, http_route),
            http_status.to_python(py)?,
            optional(py, peer_service),
            optional(py, db_system),
            optional(py, messaging_system),
            optional(py, context.cloud_region.clone()),
            optional(py, context.cloud_account_id.clone()),
            optional(py, context.faas_name.clone()),
            PyBool::new(py, is_cold_start).to_owned().into_any(),
            span.event_count.into_pyobject(py)?.into_any(),
            context.attributes.clone().into_any(),
            span_attributes.into_any(),
            optional(py, scope_name.cloned()),
            args.shard_id.clone(),
            args.sequence_number.clone(),
            args.sub_sequence_number.clone(),
            args.arrival_unix_millis.clone(),
        ];
        for (column, value) in args.columns.iter().zip(row.iter()) {
            // SAFETY: both are live references; PyList_Append takes its own.
            if unsafe { ffi::PyList_Append(column.as_ptr(), value.as_ptr()) } < 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(true)
    }
}
