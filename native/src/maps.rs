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
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::columns::{le_bytes, plain_text, StringBuffers};

/// What `flatten_string_maps` returns: the entry count and five buffers.
type FlatMaps<'py> = (
    usize,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
    Bound<'py, PyBytes>,
);

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
