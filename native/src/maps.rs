//! Attribute-map columns as Arrow buffers, for the Parquet archive.
//!
//! `SpanBatch` keeps each span's attributes as a `dict[str, str]`. pyarrow
//! converts such a column entry by entry, and even the archive's own
//! flattening (`spanstream/sinks/archive.py`, `_flat_map_array`) builds two
//! Python lists of every key and value first. Here the dicts are walked once
//! and their UTF-8 bytes copied straight into the buffers of an Arrow
//! `map<string, string>` array; Python wraps them without another pass.
//!
//! Only the plain case is handled: a list of exact dicts whose keys and
//! values are exact `str` with valid UTF-8. Anything else gives `None`, and
//! the Python path decides (and raises) as it always did.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

/// The buffers of one Arrow string array: offsets and UTF-8 data.
struct StringBuffers {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl StringBuffers {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            data: Vec::new(),
        }
    }

    /// Append `text`; None if the data would outgrow `i32` offsets.
    fn push(&mut self, text: &str) -> Option<()> {
        self.data.extend_from_slice(text.as_bytes());
        self.offsets.push(i32::try_from(self.data.len()).ok()?);
        Some(())
    }

    /// Append again the strings `first..end` (string indices), already held.
    fn repeat(&mut self, first: usize, end: usize) -> Option<()> {
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

    fn offsets_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &le_bytes(&self.offsets))
    }
}

fn le_bytes(values: &[i32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|value| value.to_le_bytes())
        .collect()
}

/// What `flatten_string_maps` returns: the entry count and five buffers.
type FlatMaps<'py> = (
    usize,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

/// The text of `value` if it is an exact `str` that encodes as UTF-8.
fn plain_text<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if !value.is_exact_instance_of::<PyString>() {
        return None;
    }
    // Fails on lone surrogates, which Arrow strings cannot hold either.
    value.cast::<PyString>().ok()?.to_str().ok()
}

/// Flatten a column of string dicts into Arrow `map<string, string>` buffers.
///
/// Returns `(entry_count, map_offsets, key_offsets, key_data, value_offsets,
/// value_data)`: `map_offsets` holds `len(maps) + 1` little-endian `i32`
/// entry offsets, the others the two string arrays of keys and values in
/// dict order. Returns None (and allocates nothing Python sees) when a map is
/// not an exact dict, a key or value is not an exact `str` or is not valid
/// UTF-8, or a buffer would outgrow `i32` offsets. Never raises for values.
#[pyfunction]
pub fn flatten_string_maps<'py>(
    py: Python<'py>,
    maps: &Bound<'py, PyList>,
) -> Option<FlatMaps<'py>> {
    let mut map_offsets: Vec<i32> = Vec::with_capacity(maps.len() + 1);
    map_offsets.push(0);
    let mut keys = StringBuffers::new();
    let mut values = StringBuffers::new();
    let mut entries: usize = 0;
    // The spans of one record share its resource dict: a dict that is the
    // same object as the one before has its entries copied, not walked.
    let mut previous: Option<(*mut pyo3::ffi::PyObject, usize)> = None;
    for item in maps.iter() {
        if !item.is_exact_instance_of::<PyDict>() {
            return None;
        }
        let first = entries;
        match previous {
            Some((pointer, previous_first)) if pointer == item.as_ptr() => {
                keys.repeat(previous_first, first)?;
                values.repeat(previous_first, first)?;
                entries += first - previous_first;
            }
            _ => {
                let dict = item.cast::<PyDict>().ok()?;
                for (key, value) in dict.iter() {
                    keys.push(plain_text(&key)?)?;
                    values.push(plain_text(&value)?)?;
                    entries += 1;
                }
            }
        }
        previous = Some((item.as_ptr(), first));
        map_offsets.push(i32::try_from(entries).ok()?);
    }
    Some((
        entries,
        PyBytes::new(py, &le_bytes(&map_offsets)),
        keys.offsets_bytes(py),
        PyBytes::new(py, &keys.data),
        values.offsets_bytes(py),
        PyBytes::new(py, &values.data),
    ))
}
