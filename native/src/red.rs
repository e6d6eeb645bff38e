//! The per-span loop of `ShardAggregator.add`, compiled.
//!
//! `spanstream/aggregate/aggregator.py` stays the reference: for each span it
//! computes the span's window, counts it as late or appends its duration to
//! its RED series, and counts function invocations as cold or warm. Here
//! that loop runs over a batch's columns at once and hands back, per series
//! and per function window, what the Python loop would have added, in the
//! order the Python loop would first have met each key; the aggregator then
//! does per *key* what it did per span.
//!
//! Only the plain case is handled: columns of equal length holding exact
//! `str`, `int` (fitting 64 bits), `bool` or None where `SpanBatch` declares
//! them. Anything else gives `None`, and the Python loop runs as before.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyInt, PyList, PyString};

/// Kinds whose spans with a `faas_name` are function invocations
/// (`INVOCATION_KINDS` in aggregator.py).
const INVOCATION_KINDS: [&str; 2] = ["SERVER", "CONSUMER"];
const NANOS_PER_SEC: i64 = 1_000_000_000;

/// What `ShardAggregator.add` would add for one batch: `(series, late,
/// invocations)`. `series` holds `(first span index, durations)` per RED
/// lookup key, `late` the indices of late spans in order, `invocations`
/// `(first span index, cold count, cold duration sum, warm count, warm
/// duration sum)` per (tenant, function, window), each in first-seen order.
type RedGroups<'py> = (
    Vec<(usize, Bound<'py, PyList>)>,
    Vec<usize>,
    Vec<(usize, u64, i128, u64, i128)>,
);

/// The span's RED lookup key, strings by their index in `Strings`.
#[derive(Hash, PartialEq, Eq)]
struct SeriesKey {
    names: [u32; 5],
    http_status: Option<i64>,
    window: i64,
    is_error: bool,
}

/// Distinct strings of a batch, by value.
#[derive(Default)]
struct Strings<'a> {
    ids: HashMap<&'a str, u32>,
}

impl<'a> Strings<'a> {
    fn id(&mut self, text: &'a str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(text).or_insert(next)
    }
}

struct Invocations {
    first: usize,
    cold_count: u64,
    cold_sum: i128,
    warm_count: u64,
    warm_sum: i128,
}

fn text<'a>(value: &'a Bound<'_, PyAny>) -> Option<&'a str> {
    if !value.is_exact_instance_of::<PyString>() {
        return None;
    }
    value.cast::<PyString>().ok()?.to_str().ok()
}

fn optional_text<'a>(value: &'a Bound<'_, PyAny>) -> Option<Option<&'a str>> {
    if value.is_none() {
        Some(None)
    } else {
        text(value).map(Some)
    }
}

fn integer(value: &Bound<'_, PyAny>) -> Option<i64> {
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    value.extract().ok()
}

fn optional_integer(value: &Bound<'_, PyAny>) -> Option<Option<i64>> {
    if value.is_none() {
        Some(None)
    } else {
        integer(value).map(Some)
    }
}

fn flag(value: &Bound<'_, PyAny>, true_object: &Bound<'_, PyBool>) -> Option<bool> {
    if !value.is_exact_instance_of::<PyBool>() {
        return None;
    }
    Some(value.is(true_object))
}

/// Group one batch's spans as `ShardAggregator.add` counts them.
///
/// `columns` are the batch's `tenant`, `service`, `operation`, `span_kind`,
/// `status_code`, `http_status_code`, `end_unix_nanos`, `duration_nanos`,
/// `is_error`, `arrival_unix_millis`, `faas_name` and `is_cold_start`
/// lists. A span is late when its arrival is positive and after its window
/// (`window_secs` long) plus `open_secs`. Returns None, having changed
/// nothing, when the columns differ in length or hold anything but the
/// plain types; never raises for values.
#[pyfunction]
pub fn red_groups<'py>(
    py: Python<'py>,
    columns: Vec<Bound<'py, PyAny>>,
    window_secs: i64,
    open_secs: i64,
) -> Option<RedGroups<'py>> {
    if columns.len() != 12 || window_secs <= 0 {
        return None;
    }
    let columns = columns
        .iter()
        .map(|column| column.cast::<PyList>().ok())
        .collect::<Option<Vec<_>>>()?;
    let count = columns[0].len();
    if columns.iter().any(|column| column.len() != count) {
        return None;
    }
    // Hold every item, so that their strings can be borrowed for the loop.
    let items: Vec<Vec<Bound<'py, PyAny>>> = columns
        .iter()
        .map(|column| column.iter().collect())
        .collect();
    let [tenants, services, operations, kinds, statuses, http_statuses, ends, durations, errors, arrivals, functions, colds] =
        <[Vec<Bound<'py, PyAny>>; 12]>::try_from(items).ok()?;
    let true_object = PyBool::new(py, true).to_owned();
    let mut strings = Strings::default();
    let mut series: HashMap<SeriesKey, usize> = HashMap::new();
    let mut series_out: Vec<(usize, Vec<Bound<'py, PyAny>>)> = Vec::new();
    let mut late = Vec::new();
    let mut invocations: HashMap<(u32, u32, i64), usize> = HashMap::new();
    let mut invocations_out: Vec<Invocations> = Vec::new();
    for index in 0..count {
        let tenant = strings.id(text(&tenants[index])?);
        let service = strings.id(text(&services[index])?);
        let operation = strings.id(text(&operations[index])?);
        let kind_text = text(&kinds[index])?;
        let kind = strings.id(kind_text);
        let status = strings.id(text(&statuses[index])?);
        let http_status = optional_integer(&http_statuses[index])?;
        let end = integer(&ends[index])?;
        let duration = integer(&durations[index])?;
        let is_error = flag(&errors[index], &true_object)?;
        let arrival = integer(&arrivals[index])?;
        let function = optional_text(&functions[index])?;
        let is_cold = flag(&colds[index], &true_object)?;

        let window = end.div_euclid(NANOS_PER_SEC).div_euclid(window_secs) * window_secs;
        let closes_millis = window.checked_add(open_secs)?.checked_mul(1000)?;
        if arrival > 0 && arrival > closes_millis {
            late.push(index);
        } else {
            let key = SeriesKey {
                names: [tenant, service, operation, kind, status],
                http_status,
                window,
                is_error,
            };
            let group = match series.entry(key) {
                Entry::Occupied(entry) => *entry.get(),
                Entry::Vacant(entry) => {
                    series_out.push((index, Vec::new()));
                    *entry.insert(series_out.len() - 1)
                }
            };
            series_out[group].1.push(durations[index].clone());
        }
        if let Some(function) = function {
            if INVOCATION_KINDS.contains(&kind_text) {
                let key = (tenant, strings.id(function), window);
                let group = match invocations.entry(key) {
                    Entry::Occupied(entry) => *entry.get(),
                    Entry::Vacant(entry) => {
                        invocations_out.push(Invocations {
                            first: index,
                            cold_count: 0,
                            cold_sum: 0,
                            warm_count: 0,
                            warm_sum: 0,
                        });
                        *entry.insert(invocations_out.len() - 1)
                    }
                };
                let stats = &mut invocations_out[group];
                if is_cold {
                    stats.cold_count += 1;
                    stats.cold_sum += i128::from(duration);
                } else {
                    stats.warm_count += 1;
                    stats.warm_sum += i128::from(duration);
                }
            }
        }
    }
    let series_lists = series_out
        .into_iter()
        .map(|(first, values)| Some((first, PyList::new(py, values).ok()?)))
        .collect::<Option<Vec<_>>>()?;
    let invocation_tuples = invocations_out
        .into_iter()
        .map(|s| (s.first, s.cold_count, s.cold_sum, s.warm_count, s.warm_sum))
        .collect();
    Some((series_lists, late, invocation_tuples))
}
