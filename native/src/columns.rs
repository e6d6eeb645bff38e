//! Scalar `SpanBatch` columns as Arrow buffers, for the Parquet archive.
//!
//! pyarrow converts a list of Python values item by item, checking each
//! one's type against what it has seen so far. A `SpanBatch` column is
//! already of one declared type, so here each item is checked once against
//! that type and its value written straight into the buffers of an Arrow
//! array (a validity bitmap only where there are nulls); Python wraps the
//! buffers without another pass (`spanstream/sinks/archive.py`).
//!
//! Only the plain case is handled: exact `str`, `int` or `bool` items (or
//! None) that fit the column's type. Anything else gives `None`, and
//! `pa.array` decides (and raises) as it always did.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyList, PyString};

/// The buffers of one Arrow string array: offsets and UTF-8 data.
pub(crate) struct StringBuffers {
    pub(crate) offsets: Vec<i32>,
    pub(crate) data: Vec<u8>,
}

impl StringBuffers {
    pub(crate) fn new() -> Self {
        Self {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    /// Append `text`; None if the data would outgrow `i32` offsets.
    pub(crate) fn push(&mut self, text: &str) -> Option<()> {
        self.data.extend_from_slice(text.as_bytes());
        self.offsets.push(i32::try_from(self.data.len()).ok()?);
        Some(())
    }

    /// Append again the strings `first..end` (string indices), already held.
    pub(crate) fn repeat(&mut self, first: usize, end: usize) -> Option<()> {
        let (from, to) = (self.offsets[first], self.offsets[end]);
        let shift = i32::try_from(self.data.len()).ok()?.checked_sub(from)?;
        self.data.extend_from_within(from as usize..to as usize);
        i32::try_from(self.data.len()).ok()?;
        for index in first + 1..=end {
            let offset = self.offsets[index] + shift;
            self.offsets.push(offset);
        }
        Some(())
    }

    /// Close a null slot: an empty string whose validity bit is unset.
    fn push_null(&mut self) {
        let end = *self.offsets.last().unwrap_or(&0);
        self.offsets.push(end);
    }

    pub(crate) fn offsets_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &le_bytes(&self.offsets))
    }
}

pub(crate) fn le_bytes(values: &[i32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// The text of `value` if it is an exact `str` that encodes as UTF-8.
pub(crate) fn plain_text<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if !value.is_exact_instance_of::<PyString>() {
        return None;
    }
    // Fails on lone surrogates, which Arrow strings cannot hold either.
    value.cast::<PyString>().ok()?.to_str().ok()
}

/// An Arrow bit buffer (least significant bit first), for validity and
/// for boolean values.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    len: usize,
    unset: usize,
}

impl Bits {
    fn push(&mut self, bit: bool) {
        if self.len % 8 == 0 {
            self.bytes.push(0);
        }
        if bit {
            self.bytes[self.len / 8] |= 1 << (self.len % 8);
        } else {
            self.unset += 1;
        }
        self.len += 1;
    }
}

/// A column's null count and validity bitmap (None when nothing is null).
type Validity<'py> = (usize, Option<Bound<'py, PyBytes>>);

fn validity<'py>(py: Python<'py>, bits: &Bits) -> Validity<'py> {
    if bits.unset == 0 {
        (0, None)
    } else {
        (bits.unset, Some(PyBytes::new(py, &bits.bytes)))
    }
}

/// Return a `str | None` column as `(null_count, validity, offsets, data)`.
///
/// Returns None if an item is neither None nor an exact `str` with valid
/// UTF-8, or the data would outgrow `i32` offsets. Never raises for values.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn string_column<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
) -> Option<(
    usize,
    Option<Bound<'py, PyBytes>>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
)> {
    let mut strings = StringBuffers::new();
    let mut valid = Bits::default();
    for item in values.iter() {
        if item.is_none() {
            strings.push_null();
            valid.push(false);
        } else {
            strings.push(plain_text(&item)?)?;
            valid.push(true);
        }
    }
    let (null_count, bitmap) = validity(py, &valid);
    Some((
        null_count,
        bitmap,
        strings.offsets_bytes(py),
        PyBytes::new(py, &strings.data),
    ))
}

/// Return an `int | None` column as `(null_count, validity, values)`, the
/// values little-endian integers of `bits` (32 or 64) bits.
///
/// Returns None if an item is neither None nor an exact `int` (a `bool` is
/// not taken), or does not fit; never raises for values.
#[pyfunction]
pub fn int_column<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    bits: u32,
) -> Option<(usize, Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>)> {
    let width = match bits {
        32 => 4,
        64 => 8,
        _ => return None,
    };
    let mut data = Vec::with_capacity(values.len() * width);
    let mut valid = Bits::default();
    for item in values.iter() {
        if item.is_none() {
            data.extend(std::iter::repeat_n(0u8, width));
            valid.push(false);
            continue;
        }
        if !item.is_exact_instance_of::<PyInt>() {
            return None;
        }
        let value: i64 = item.extract().ok()?;
        if width == 4 {
            data.extend_from_slice(&i32::try_from(value).ok()?.to_le_bytes());
        } else {
            data.extend_from_slice(&value.to_le_bytes());
        }
        valid.push(true);
    }
    let (null_count, bitmap) = validity(py, &valid);
    Some((null_count, bitmap, PyBytes::new(py, &data)))
}

/// Return a `bool | None` column as `(null_count, validity, value bits)`.
///
/// Returns None if an item is neither None nor an exact `bool`; never
/// raises for values.
#[pyfunction]
pub fn bool_column<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
) -> Option<(usize, Option<Bound<'py, PyBytes>>, Bound<'py, PyBytes>)> {
    let mut data = Bits::default();
    let mut valid = Bits::default();
    let true_object = PyBool::new(py, true);
    for item in values.iter() {
        if item.is_none() {
            data.push(false);
            valid.push(false);
        } else if item.is_exact_instance_of::<PyBool>() {
            data.push(item.is(&*true_object));
            valid.push(true);
        } else {
            return None;
        }
    }
    let (null_count, bitmap) = validity(py, &valid);
    Some((null_count, bitmap, PyBytes::new(py, &data.bytes)))
}
