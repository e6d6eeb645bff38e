//! `spanstream_native`: OTLP protobuf and OTLP/JSON payloads to `SpanBatch`
//! rows, compiled.
//!
//! The Python path (`RecordDecoder` with `SpanExtractor`) is the reference;
//! this module must append exactly the rows and count exactly the stats it
//! would, and accept exactly the payloads upb accepts. `wire` decodes the
//! protobuf without copying; `extract` turns spans into rows. `json` writes
//! an OTLP/JSON document as the protobuf request `ParseDict` would build, or
//! declines it, and the Python path decides.
//!
//! `traces` holds the state of a `TraceAssembler` (trace assembly, summaries
//! and service graph edges), the Python class again being the reference.

use pyo3::create_exception;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

mod columns;
mod extract;
mod json;
mod maps;
mod operation;
mod red;
mod render;
mod traces;
mod wire;

use extract::{ExtractArgs, Stats, COLUMN_COUNT};

create_exception!(
    spanstream_native,
    ProtobufPayloadError,
    PyValueError,
    "The bytes are not an ExportTraceServiceRequest holding resource spans."
);
create_exception!(
    spanstream_native,
    SpanLimitError,
    PyValueError,
    "The payload holds more spans than allowed; args are (span_count, max_spans)."
);

/// The error for bytes the decoder refuses.
fn malformed() -> PyErr {
    ProtobufPayloadError::new_err("not a valid ExportTraceServiceRequest")
}

/// A checked `ExportTraceServiceRequest` (or `TracesData`) payload with at
/// least one `ResourceSpans`.
#[pyclass(frozen, module = "spanstream_native")]
struct Traces {
    payload: Py<PyBytes>,
    span_count: usize,
}

#[pymethods]
impl Traces {
    /// How many spans the request holds, valid or not.
    #[getter]
    fn span_count(&self) -> usize {
        self.span_count
    }

    /// The request's protobuf bytes (for an OTLP/JSON payload, the request
    /// `parse_otlp_json` wrote), so tests can compare it with upb's parse.
    #[getter]
    fn request_bytes(&self, py: Python<'_>) -> Py<PyBytes> {
        self.payload.clone_ref(py)
    }

    /// Append every valid span to `columns` (the `SpanBatch` lists in
    /// `SPAN_COLUMNS` order); return `(spans, invalid_spans,
    /// dropped_attributes, truncated_attributes, truncated_names)`.
    ///
    /// Appends one value to each list per valid span. Raises what the Python
    /// path raises for the same request (the rows of the spans before the
    /// failing one stay appended, as there).
    #[pyo3(signature = (
        columns, tenant_attribute, default_tenant, max_attributes, max_value_chars,
        shard_id, sequence_number, sub_sequence_number, arrival_unix_millis
    ))]
    #[allow(clippy::too_many_arguments)]
    fn extract_into<'py>(
        &self,
        py: Python<'py>,
        columns: &Bound<'py, PyAny>,
        tenant_attribute: String,
        default_tenant: Bound<'py, PyString>,
        max_attributes: isize,
        max_value_chars: usize,
        shard_id: Bound<'py, PyAny>,
        sequence_number: Bound<'py, PyAny>,
        sub_sequence_number: Bound<'py, PyAny>,
        arrival_unix_millis: Bound<'py, PyAny>,
    ) -> PyResult<(u64, u64, u64, u64, u64)> {
        let args = ExtractArgs {
            columns: column_lists(columns)?,
            tenant_attribute,
            default_tenant,
            max_attributes,
            max_value_chars,
            shard_id,
            sequence_number,
            sub_sequence_number,
            arrival_unix_millis,
        };
        let payload = self.payload.bind(py).as_bytes();
        let stats: Stats = extract::extract_into(py, payload, &args)?;
        Ok((
            stats.spans,
            stats.invalid_spans,
            stats.dropped_attributes,
            stats.truncated_attributes,
            stats.truncated_names,
        ))
    }
}

fn column_lists<'py>(columns: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyList>>> {
    let lists = columns
        .try_iter()?
        .map(|item| Ok(item?.cast_into::<PyList>()?))
        .collect::<PyResult<Vec<_>>>()?;
    if lists.len() != COLUMN_COUNT {
        return Err(PyTypeError::new_err(format!(
            "expected {COLUMN_COUNT} column lists in SPAN_COLUMNS order, got {}",
            lists.len()
        )));
    }
    Ok(lists)
}

/// Decode `payload` as an `ExportTraceServiceRequest`.
///
/// Raises `ProtobufPayloadError` if the bytes are not valid protobuf of that
/// message or hold no resource spans (the Python path's `_parse_protobuf`
/// returning None). Never appends anything.
#[pyfunction]
fn parse(payload: Bound<'_, PyBytes>) -> PyResult<Traces> {
    let (resource_spans, span_count) =
        wire::validate(payload.as_bytes()).map_err(|_| malformed())?;
    if resource_spans == 0 {
        return Err(ProtobufPayloadError::new_err("no resource spans"));
    }
    Ok(Traces {
        payload: payload.unbind(),
        span_count,
    })
}

/// Decode an OTLP/JSON `payload` when this module is sure of the result.
///
/// Returns `Traces` holding the `ExportTraceServiceRequest` the Python path
/// (`json.loads`, hex ids, `json_format.ParseDict`) would build from the
/// document, or None when the document holds anything `json` does not handle
/// with certainty (see its module doc), including everything the Python path
/// refuses. Never raises for bad input and never appends anything: the
/// caller hands a declined payload to the Python path, which decides.
#[pyfunction]
fn parse_otlp_json(py: Python<'_>, payload: &[u8]) -> Option<Traces> {
    let request = json::transcode(payload).ok()?;
    // The request is ours, so this only counts its spans; a failure would be
    // a bug here, and the Python path is then the safe answer.
    let (_, span_count) = wire::validate(&request).ok()?;
    Some(Traces {
        payload: PyBytes::new(py, &request).unbind(),
        span_count,
    })
}

/// Parse `payload` and append its spans to `columns` in one call.
///
/// Raises `ProtobufPayloadError` as `parse` does, and `SpanLimitError` when
/// the payload holds more than `max_spans` spans; both before appending
/// anything. Returns what `Traces.extract_into` returns.
#[pyfunction]
#[pyo3(signature = (
    payload, columns, tenant_attribute, default_tenant, max_attributes,
    max_value_chars, max_spans, shard_id, sequence_number, sub_sequence_number,
    arrival_unix_millis
))]
#[allow(clippy::too_many_arguments)]
fn extract_into<'py>(
    py: Python<'py>,
    payload: Bound<'py, PyBytes>,
    columns: &Bound<'py, PyAny>,
    tenant_attribute: String,
    default_tenant: Bound<'py, PyString>,
    max_attributes: isize,
    max_value_chars: usize,
    max_spans: usize,
    shard_id: Bound<'py, PyAny>,
    sequence_number: Bound<'py, PyAny>,
    sub_sequence_number: Bound<'py, PyAny>,
    arrival_unix_millis: Bound<'py, PyAny>,
) -> PyResult<(u64, u64, u64, u64, u64)> {
    let traces = parse(payload)?;
    if traces.span_count > max_spans {
        return Err(SpanLimitError::new_err((traces.span_count, max_spans)));
    }
    traces.extract_into(
        py,
        columns,
        tenant_attribute,
        default_tenant,
        max_attributes,
        max_value_chars,
        shard_id,
        sequence_number,
        sub_sequence_number,
        arrival_unix_millis,
    )
}

#[pymodule]
fn spanstream_native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add_class::<Traces>()?;
    module.add_class::<traces::TraceAssemblerCore>()?;
    module.add_function(wrap_pyfunction!(parse, module)?)?;
    module.add_function(wrap_pyfunction!(extract_into, module)?)?;
    module.add_function(wrap_pyfunction!(parse_otlp_json, module)?)?;
    module.add_function(wrap_pyfunction!(maps::flatten_string_maps, module)?)?;
    module.add_function(wrap_pyfunction!(columns::string_column, module)?)?;
    module.add_function(wrap_pyfunction!(columns::int_column, module)?)?;
    module.add_function(wrap_pyfunction!(columns::bool_column, module)?)?;
    module.add_function(wrap_pyfunction!(red::red_groups, module)?)?;
    module.add(
        "ProtobufPayloadError",
        py.get_type::<ProtobufPayloadError>(),
    )?;
    module.add("SpanLimitError", py.get_type::<SpanLimitError>())?;
    Ok(())
}
