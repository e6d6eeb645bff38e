//! Trace assembly, compiled: the state of `TraceAssembler`
//! (spanstream/aggregate/traces.py, tracestate.py and edges.py), which stays
//! the reference.
//!
//! `TraceAssemblerCore` keeps the pending and retained traces, each ordered
//! by last arrival (a doubly linked list over a slab, so moving a trace to
//! the end is O(1)), a trace's spans as compact rows plus references to the
//! very string objects the batch held. Names are never converted to Rust
//! strings: they may hold lone surrogates (`json.loads` makes them), and the
//! summaries must hand back what came in. Where the Python rule depends on
//! Python semantics that are costly to copy (the hash of a non-hex span id,
//! `struct`'s error for an end past int64, comparing starts past int64) this
//! module calls Python, so rare inputs behave the same by construction.
//!
//! `poll` and `flush_all` return plain tuples; the Python wrapper
//! (spanstream/aggregate/nativetraces.py) builds the `TraceSummary`s, bounds
//! their service lists and folds each edge's durations into `LatencyStats`.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::extract::SPAN_KINDS;

const KIND_MASK: u16 = 0b111;
const SERVER: u16 = 2;
const CLIENT: u16 = 3;
const PRODUCER: u16 = 4;
const CONSUMER: u16 = 5;
const IS_ERROR: u16 = 1 << 3;
const IS_COLD_START: u16 = 1 << 4;
const HAS_PARENT: u16 = 1 << 5;
const EDGE_EMITTED: u16 = 1 << 6;
const VIRTUAL_SHIFT: u16 = 7;
const VIRTUAL_MASK: u16 = 0b11 << VIRTUAL_SHIFT;
const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Connection types by the code an edge carries here: the two real call
/// kinds, then the virtual node types by their 2-bit code plus one.
const CONNECTION_TYPES: [&str; 5] = ["rpc", "messaging", "database", "queue", "peer"];
const RPC: u8 = 0;
const MESSAGING: u8 = 1;
/// How `add` receives the batch: these `SpanBatch` columns, in this order.
const COLUMNS: [&str; 15] = [
    "tenant",
    "trace_id",
    "span_id",
    "parent_span_id",
    "service",
    "operation",
    "span_kind",
    "start_unix_nanos",
    "end_unix_nanos",
    "duration_nanos",
    "is_error",
    "is_cold_start",
    "db_system",
    "messaging_system",
    "peer_service",
];
const NIL: usize = usize::MAX;

static SPAN_KEY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static STRUCT_PACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A start time as Python holds it: any int, so one past int64 compares as
/// it does in Python rather than failing.
enum Nanos {
    Small(i64),
    Big(Py<PyAny>),
}

impl Nanos {
    fn of(value: &Bound<'_, PyAny>) -> Nanos {
        match value.extract::<i64>() {
            Ok(nanos) => Nanos::Small(nanos),
            Err(_) => Nanos::Big(value.clone().unbind()),
        }
    }

    fn to_object<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Nanos::Small(nanos) => Ok(nanos.into_pyobject(py)?.into_any()),
            Nanos::Big(value) => Ok(value.bind(py).clone()),
        }
    }

    fn lt(&self, py: Python<'_>, other: &Nanos) -> PyResult<bool> {
        match (self, other) {
            (Nanos::Small(a), Nanos::Small(b)) => Ok(a < b),
            _ => self.to_object(py)?.lt(other.to_object(py)?),
        }
    }

    fn eq(&self, py: Python<'_>, other: &Nanos) -> PyResult<bool> {
        match (self, other) {
            (Nanos::Small(a), Nanos::Small(b)) => Ok(a == b),
            _ => self.to_object(py)?.eq(other.to_object(py)?),
        }
    }

    fn clone_ref(&self, py: Python<'_>) -> Nanos {
        match self {
            Nanos::Small(nanos) => Nanos::Small(*nanos),
            Nanos::Big(value) => Nanos::Big(value.clone_ref(py)),
        }
    }
}

/// One span of a trace: `tracestate.ROW`'s fields.
#[derive(Clone, Copy)]
struct Row {
    key: u64,
    parent_key: u64,
    end_unix_nanos: i64,
    duration_nanos: i64,
    flags: u16,
}

struct Root {
    key: u64,
    start_unix_nanos: Nanos,
    service: Py<PyString>,
    operation: Py<PyAny>,
}

/// `TraceState`: rows before `summarised_rows` are unique by key and have
/// been summarised; later ones arrived since and may repeat them.
struct Trace {
    /// The index key: tenant and trace id (see `trace_key`).
    key: Box<[u8]>,
    tenant_len: usize,
    tenant: Py<PyString>,
    trace_id: Py<PyString>,
    last_seen: f64,
    rows: Vec<Row>,
    services: Vec<Py<PyString>>,
    virtual_names: Vec<Option<Py<PyString>>>,
    summarised_rows: usize,
    start_min_unix_nanos: Option<Nanos>,
    end_max_unix_nanos: Option<i64>,
    root: Option<Root>,
}

impl Trace {
    fn tenant_bytes(&self) -> &[u8] {
        &self.key[8..8 + self.tenant_len]
    }

    fn note_times(&mut self, py: Python<'_>, start: Nanos, end: i64) -> PyResult<()> {
        let earlier = match &self.start_min_unix_nanos {
            None => true,
            Some(current) => start.lt(py, current)?,
        };
        if earlier {
            self.start_min_unix_nanos = Some(start);
        }
        if self.end_max_unix_nanos.is_none_or(|current| end > current) {
            self.end_max_unix_nanos = Some(end);
        }
        Ok(())
    }

    /// Of several roots the earliest (then the lowest key) wins.
    fn note_root(&mut self, py: Python<'_>, candidate: Root) -> PyResult<()> {
        let wins = match &self.root {
            None => true,
            Some(root) => {
                if candidate.start_unix_nanos.eq(py, &root.start_unix_nanos)? {
                    candidate.key < root.key
                } else {
                    candidate.start_unix_nanos.lt(py, &root.start_unix_nanos)?
                }
            }
        };
        if wins {
            self.root = Some(candidate);
        }
        Ok(())
    }

    /// Drop new rows whose span was seen before (the first occurrence stays);
    /// return how many new, distinct rows remain and each key's row index.
    fn deduplicate(&mut self) -> (usize, HashMap<u64, usize>) {
        let mut index_of: HashMap<u64, usize> = HashMap::with_capacity(self.rows.len());
        let mut keep: Vec<usize> = Vec::new();
        let mut repeated = false;
        for (index, row) in self.rows.iter().enumerate() {
            let next = index_of.len();
            if index_of.try_insert_first(row.key, next) {
                keep.push(index);
            } else {
                repeated = true;
            }
        }
        if repeated {
            let mut kept_rows = Vec::with_capacity(keep.len());
            let mut kept_services = Vec::with_capacity(keep.len());
            let mut kept_virtual = Vec::with_capacity(keep.len());
            let mut services = std::mem::take(&mut self.services).into_iter();
            let mut virtual_names = std::mem::take(&mut self.virtual_names).into_iter();
            let mut position = 0;
            for &index in &keep {
                kept_rows.push(self.rows[index]);
                let skip = index - position;
                kept_services.push(services.nth(skip).expect("row and service counts agree"));
                kept_virtual.push(virtual_names.nth(skip).expect("row and name counts agree"));
                position = index + 1;
            }
            self.rows = kept_rows;
            self.services = kept_services;
            self.virtual_names = kept_virtual;
        }
        (self.rows.len() - self.summarised_rows, index_of)
    }

    /// Trim spare capacity and mark every row summarised.
    fn compact(&mut self) {
        self.rows.shrink_to_fit();
        self.services.shrink_to_fit();
        self.virtual_names.shrink_to_fit();
        self.summarised_rows = self.rows.len();
    }
}

trait FirstInsert {
    fn try_insert_first(&mut self, key: u64, value: usize) -> bool;
}

impl FirstInsert for HashMap<u64, usize> {
    /// Insert unless `key` is there; return whether it was inserted.
    fn try_insert_first(&mut self, key: u64, value: usize) -> bool {
        match self.entry(key) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(value);
                true
            }
        }
    }
}

struct Node {
    trace: Trace,
    prev: usize,
    next: usize,
    pending: bool,
}

/// One of the two arrival orders: a doubly linked list through the slab.
#[derive(Clone, Copy)]
struct Chain {
    head: usize,
    tail: usize,
    len: usize,
}

impl Chain {
    const EMPTY: Chain = Chain {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Calls of many traces' edges, buffered per edge key in first-seen order
/// (`EdgeCalls`).
#[derive(Default)]
struct EdgeCalls {
    index_of: HashMap<Box<[u8]>, usize>,
    edges: Vec<EdgeBuffer>,
    key: Vec<u8>,
}

struct EdgeBuffer {
    tenant: Py<PyString>,
    client: Py<PyString>,
    server: Py<PyString>,
    connection_type: u8,
    window_start_secs: i64,
    durations_nanos: Vec<i64>,
    errors: u64,
}

impl EdgeCalls {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        trace: &Trace,
        client: &Py<PyString>,
        server: &Py<PyString>,
        connection_type: u8,
        window_start_secs: i64,
        duration_nanos: i64,
        is_error: bool,
        py: Python<'_>,
    ) -> PyResult<()> {
        self.key.clear();
        push_part(&mut self.key, trace.tenant_bytes());
        push_part(&mut self.key, &str_bytes(client.bind(py))?);
        push_part(&mut self.key, &str_bytes(server.bind(py))?);
        self.key.push(connection_type);
        self.key.extend_from_slice(&window_start_secs.to_le_bytes());
        let index = match self.index_of.get(self.key.as_slice()) {
            Some(&index) => index,
            None => {
                self.index_of
                    .insert(self.key.clone().into_boxed_slice(), self.edges.len());
                self.edges.push(EdgeBuffer {
                    tenant: trace.tenant.clone_ref(py),
                    client: client.clone_ref(py),
                    server: server.clone_ref(py),
                    connection_type,
                    window_start_secs,
                    durations_nanos: Vec::new(),
                    errors: 0,
                });
                self.edges.len() - 1
            }
        };
        let edge = &mut self.edges[index];
        edge.durations_nanos.push(duration_nanos);
        if is_error {
            edge.errors += 1;
        }
        Ok(())
    }

    /// Buffer the edges of `trace` (deduplicated) not emitted before and
    /// mark them emitted (`EdgeCalls.collect`).
    fn collect(
        &mut self,
        py: Python<'_>,
        trace: &mut Trace,
        index_of: &HashMap<u64, usize>,
        window_secs: i64,
    ) -> PyResult<()> {
        let mut called = vec![false; trace.rows.len()];
        // Marked after both passes: the Python passes read a snapshot.
        let mut emitted: Vec<usize> = Vec::new();
        for (index, row) in trace.rows.iter().enumerate() {
            let (caller_kind, connection_type) = match row.flags & KIND_MASK {
                SERVER => (CLIENT, RPC),
                CONSUMER => (PRODUCER, MESSAGING),
                _ => continue,
            };
            if row.flags & HAS_PARENT == 0 {
                continue;
            }
            let Some(&parent) = index_of.get(&row.parent_key) else {
                continue;
            };
            let client = trace.rows[parent];
            if client.flags & KIND_MASK != caller_kind {
                continue;
            }
            called[parent] = true;
            if row.flags & EDGE_EMITTED != 0 {
                continue;
            }
            self.add(
                trace,
                &trace.services[parent],
                &trace.services[index],
                connection_type,
                window_start(client.end_unix_nanos, window_secs),
                client.duration_nanos,
                (client.flags | row.flags) & IS_ERROR != 0,
                py,
            )?;
            emitted.push(index);
        }
        for (index, row) in trace.rows.iter().enumerate() {
            if called[index] || row.flags & EDGE_EMITTED != 0 {
                continue;
            }
            let virtual_type = (row.flags & VIRTUAL_MASK) >> VIRTUAL_SHIFT;
            let Some(server) = &trace.virtual_names[index] else {
                continue;
            };
            if virtual_type == 0 {
                continue;
            }
            self.add(
                trace,
                &trace.services[index],
                server,
                virtual_type as u8 + 1,
                window_start(row.end_unix_nanos, window_secs),
                row.duration_nanos,
                row.flags & IS_ERROR != 0,
                py,
            )?;
            emitted.push(index);
        }
        for index in emitted {
            trace.rows[index].flags |= EDGE_EMITTED;
        }
        Ok(())
    }

    /// `(tenant, client, server, connection_type, window_start_secs,
    /// durations_nanos, errors)` of every buffered edge, first seen first.
    fn into_list<'py>(self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let connection_types = CONNECTION_TYPES.map(|name| PyString::intern(py, name));
        let edges = PyList::empty(py);
        for edge in self.edges {
            edges.append((
                edge.tenant,
                edge.client,
                edge.server,
                &connection_types[edge.connection_type as usize],
                edge.window_start_secs,
                PyList::new(py, edge.durations_nanos)?,
                edge.errors,
            ))?;
        }
        Ok(edges)
    }
}

/// Python's `end // NANOS_PER_SEC // window_secs * window_secs`.
fn window_start(end_unix_nanos: i64, window_secs: i64) -> i64 {
    let windows = floor_div(floor_div(end_unix_nanos, NANOS_PER_SEC), window_secs);
    (i128::from(windows) * i128::from(window_secs)) as i64
}

fn floor_div(dividend: i64, divisor: i64) -> i64 {
    let quotient = dividend.wrapping_div(divisor);
    if dividend % divisor != 0 && ((dividend < 0) != (divisor < 0)) {
        quotient - 1
    } else {
        quotient
    }
}

fn push_part(key: &mut Vec<u8>, part: &[u8]) {
    key.extend_from_slice(&(part.len() as u64).to_le_bytes());
    key.extend_from_slice(part);
}

/// The code points of `text` as bytes, one to one: UTF-8, with lone
/// surrogates passed through as Python's ``surrogatepass`` writes them.
fn str_bytes<'a>(text: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, [u8]>> {
    match text.to_str() {
        Ok(utf8) => Ok(Cow::Borrowed(utf8.as_bytes())),
        Err(_) => {
            let encoded = text.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(Cow::Owned(
                encoded.cast_into::<PyBytes>()?.as_bytes().to_vec(),
            ))
        }
    }
}

/// `tracestate.span_key`: a 16-hex-digit id is its own value; any other id
/// goes to the Python function (its hash is the process's own).
fn span_key(id: &Bound<'_, PyString>) -> PyResult<u64> {
    if let Ok(text) = id.to_str() {
        if text.len() == 16 {
            if let Ok(key) = u64::from_str_radix(text, 16) {
                // from_str_radix also takes a leading '+', fromhex does not.
                if text.as_bytes()[0] != b'+' {
                    return Ok(key);
                }
            }
        }
    }
    let py = id.py();
    let function = SPAN_KEY.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py
            .import("spanstream.aggregate.tracestate")?
            .getattr("span_key")?
            .unbind())
    })?;
    function.bind(py).call1((id,))?.extract()
}

/// The error `ROW.pack` raises for an end or duration it cannot pack.
fn row_pack_error(end: &Bound<'_, PyAny>, duration: &Bound<'_, PyAny>) -> PyErr {
    let py = end.py();
    let pack = STRUCT_PACK.get_or_try_init(py, || -> PyResult<Py<PyAny>> {
        Ok(py.import("struct")?.getattr("pack")?.unbind())
    });
    match pack.and_then(|pack| pack.bind(py).call1(("<qq", end, duration))) {
        Err(err) => err,
        Ok(_) => PyOverflowError::new_err("end or duration out of int64 range"),
    }
}

fn kind_index(kind: &Bound<'_, PyAny>) -> u16 {
    let Ok(kind) = kind.cast::<PyString>() else {
        return 0;
    };
    let Ok(text) = kind.to_str() else {
        return 0;
    };
    SPAN_KINDS
        .iter()
        .position(|name| *name == text)
        .map_or(0, |index| index as u16)
}

/// A non-empty name (Python's truthiness for ``str | None``).
fn truthy_name<'py>(value: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyString>>> {
    if value.is_none() || !value.is_truthy()? {
        return Ok(None);
    }
    Ok(Some(value.cast::<PyString>()?.clone()))
}

/// One span of a batch, as `add` folds it in.
struct Span<'py> {
    row: Row,
    start_unix_nanos: Nanos,
    service: Bound<'py, PyString>,
    virtual_name: Option<Bound<'py, PyString>>,
}

/// The column lists of one `add` call.
struct Columns<'py> {
    lists: Vec<Vec<Bound<'py, PyAny>>>,
}

impl<'py> Columns<'py> {
    fn read(columns: &Bound<'py, PyTuple>) -> PyResult<Self> {
        if columns.len() != COLUMNS.len() {
            return Err(PyTypeError::new_err(format!(
                "expected {} columns ({}), got {}",
                COLUMNS.len(),
                COLUMNS.join(", "),
                columns.len()
            )));
        }
        let lists = columns
            .iter()
            .map(|column| Ok(column.cast_into::<PyList>()?.iter().collect()))
            .collect::<PyResult<Vec<Vec<_>>>>()?;
        let lengths: Vec<usize> = lists.iter().map(Vec::len).collect();
        if lengths.iter().any(|&length| length != lengths[0]) {
            return Err(PyValueError::new_err(format!(
                "SpanBatch columns differ in length: {lengths:?}"
            )));
        }
        Ok(Columns { lists })
    }

    fn column(&self, name: &str) -> &[Bound<'py, PyAny>] {
        let index = COLUMNS
            .iter()
            .position(|column| *column == name)
            .expect("a known column");
        &self.lists[index]
    }

    /// Every span's row and names; raises what the Python pass raises for an
    /// end or duration that does not fit a row, before anything is kept.
    fn spans(&self) -> PyResult<Vec<Span<'py>>> {
        let count = self.lists[0].len();
        let span_ids = self.column("span_id");
        let parents = self.column("parent_span_id");
        let services = self.column("service");
        let kinds = self.column("span_kind");
        let starts = self.column("start_unix_nanos");
        let ends = self.column("end_unix_nanos");
        let durations = self.column("duration_nanos");
        let errors = self.column("is_error");
        let cold_starts = self.column("is_cold_start");
        let db_systems = self.column("db_system");
        let messaging_systems = self.column("messaging_system");
        let peer_services = self.column("peer_service");
        let mut spans = Vec::with_capacity(count);
        for index in 0..count {
            let key = span_key(span_ids[index].cast::<PyString>()?)?;
            let parent = &parents[index];
            let has_parent = !parent.is_none() && parent.is_truthy()?;
            let parent_key = if has_parent {
                span_key(parent.cast::<PyString>()?)?
            } else {
                0
            };
            let kind = kind_index(&kinds[index]);
            let mut flags = kind;
            if errors[index].is_truthy()? {
                flags |= IS_ERROR;
            }
            if cold_starts[index].is_truthy()? {
                flags |= IS_COLD_START;
            }
            if has_parent {
                flags |= HAS_PARENT;
            }
            let mut virtual_name = None;
            if kind == CLIENT || kind == PRODUCER {
                let nodes = [
                    &db_systems[index],
                    &messaging_systems[index],
                    &peer_services[index],
                ];
                for (code, node) in nodes.into_iter().enumerate() {
                    if let Some(name) = truthy_name(node)? {
                        virtual_name = Some(name);
                        flags |= (code as u16 + 1) << VIRTUAL_SHIFT;
                        break;
                    }
                }
            }
            let service = services[index].cast::<PyString>()?.clone();
            let (Ok(end_unix_nanos), Ok(duration_nanos)) = (
                ends[index].extract::<i64>(),
                durations[index].extract::<i64>(),
            ) else {
                return Err(row_pack_error(&ends[index], &durations[index]));
            };
            spans.push(Span {
                row: Row {
                    key,
                    parent_key,
                    end_unix_nanos,
                    duration_nanos,
                    flags,
                },
                start_unix_nanos: Nanos::of(&starts[index]),
                service,
                virtual_name,
            });
        }
        Ok(spans)
    }
}

/// What `poll` and `flush_all` return.
type PollResult<'py> = (Bound<'py, PyList>, Vec<usize>, Bound<'py, PyList>);

/// The key of a trace in the index: tenant then trace id, each behind its
/// length, as code-point bytes (see `str_bytes`).
fn trace_key(tenant: &[u8], trace_id: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(16 + tenant.len() + trace_id.len());
    push_part(&mut key, tenant);
    push_part(&mut key, trace_id);
    key
}

/// Make room for `additional` more items, growing by an eighth at least
/// (as CPython's lists and bytearrays do) rather than doubling: the usual
/// trace arrives in one or two batches, and doubling would leave up to half
/// of it spare while tens of thousands of traces wait; a trace that arrives
/// span by span still grows in amortised constant time.
fn reserve_modestly<T>(items: &mut Vec<T>, additional: usize) {
    if items.capacity() - items.len() < additional {
        items.reserve_exact(additional.max(items.len() / 8));
    }
}

/// The state of a `TraceAssembler`; see the module doc.
#[pyclass(module = "spanstream_native")]
pub struct TraceAssemblerCore {
    window_secs: i64,
    services_budget_bytes: usize,
    idle_secs: f64,
    retention_secs: f64,
    slab: Vec<Option<Node>>,
    free: Vec<usize>,
    index: HashMap<Box<[u8]>, usize>,
    pending: Chain,
    retained: Chain,
}

impl TraceAssemblerCore {
    fn node(&self, slot: usize) -> &Node {
        self.slab[slot]
            .as_ref()
            .expect("a linked slot holds a trace")
    }

    fn node_mut(&mut self, slot: usize) -> &mut Node {
        self.slab[slot]
            .as_mut()
            .expect("a linked slot holds a trace")
    }

    fn chain_mut(&mut self, pending: bool) -> &mut Chain {
        if pending {
            &mut self.pending
        } else {
            &mut self.retained
        }
    }

    fn unlink(&mut self, slot: usize) {
        let (prev, next, pending) = {
            let node = self.node(slot);
            (node.prev, node.next, node.pending)
        };
        if prev == NIL {
            self.chain_mut(pending).head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.chain_mut(pending).tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        self.chain_mut(pending).len -= 1;
    }

    fn push_back(&mut self, slot: usize, pending: bool) {
        let tail = self.chain_mut(pending).tail;
        {
            let node = self.node_mut(slot);
            node.prev = tail;
            node.next = NIL;
            node.pending = pending;
        }
        if tail == NIL {
            self.chain_mut(pending).head = slot;
        } else {
            self.node_mut(tail).next = slot;
        }
        let chain = self.chain_mut(pending);
        chain.tail = slot;
        chain.len += 1;
    }

    /// Drop the unlinked trace in `slot`.
    fn forget(&mut self, slot: usize) {
        let node = self.slab[slot].take().expect("a linked slot holds a trace");
        self.index.remove(&node.trace.key);
        self.free.push(slot);
    }

    /// `_open`: the pending trace of `key`, else the retained one moved to
    /// pending, else a new pending trace.
    fn open(&mut self, key: Vec<u8>, tenant_len: usize, first: [&Bound<'_, PyString>; 2]) -> usize {
        if let Some(&slot) = self.index.get(key.as_slice()) {
            if !self.node(slot).pending {
                self.unlink(slot);
                self.push_back(slot, true);
            }
            return slot;
        }
        let key = key.into_boxed_slice();
        let trace = Trace {
            key: key.clone(),
            tenant_len,
            tenant: first[0].clone().unbind(),
            trace_id: first[1].clone().unbind(),
            last_seen: 0.0,
            rows: Vec::new(),
            services: Vec::new(),
            virtual_names: Vec::new(),
            summarised_rows: 0,
            start_min_unix_nanos: None,
            end_max_unix_nanos: None,
            root: None,
        };
        let node = Node {
            trace,
            prev: NIL,
            next: NIL,
            pending: true,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot] = Some(node);
                slot
            }
            None => {
                self.slab.push(Some(node));
                self.slab.len() - 1
            }
        };
        self.index.insert(key, slot);
        self.push_back(slot, true);
        slot
    }

    /// Summarise the unlinked trace in `slot` (see `summarise`); a trace
    /// that fails to is forgotten, as the Python one is.
    fn summarise_slot<'py>(
        &mut self,
        py: Python<'py>,
        slot: usize,
        calls: &mut EdgeCalls,
    ) -> PyResult<Option<Summary<'py>>> {
        let (window_secs, budget) = (self.window_secs, self.services_budget_bytes);
        let trace = &mut self.node_mut(slot).trace;
        let result = summarise(py, trace, calls, window_secs, budget);
        if result.is_err() {
            self.forget(slot);
        }
        result
    }
}

/// The distinct `services` in code point order (of equal names the first),
/// and whether all of them fit `budget_bytes` by `bounded_services`'s quick
/// test: four bytes a character plus one a name.
fn distinct_services<'py>(
    py: Python<'py>,
    services: &[Py<PyString>],
    budget_bytes: usize,
) -> PyResult<(Bound<'py, PyList>, bool)> {
    let mut named = services
        .iter()
        .map(|name| Ok((str_bytes(name.bind(py))?, name)))
        .collect::<PyResult<Vec<_>>>()?;
    // Code-point bytes sort as their code points do; the sort is stable.
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut chars: usize = 0;
    for (_, name) in &named {
        chars = chars.saturating_add(name.bind(py).len()?);
    }
    let fit = chars.saturating_mul(4).saturating_add(named.len()) <= budget_bytes;
    let list = PyList::new(py, named.iter().map(|(_, name)| name.bind(py)))?;
    Ok((list, fit))
}

/// A summary's fields in `TraceSummary`'s order, and whether its service
/// names fit the budget as they are (else `bounded_services` decides).
struct Summary<'py> {
    fields: Bound<'py, PyTuple>,
    services_fit: bool,
}

/// `_summarise`: the summary of `trace`, or None when everything new in it
/// was a repeat of what was summarised.
fn summarise<'py>(
    py: Python<'py>,
    trace: &mut Trace,
    calls: &mut EdgeCalls,
    window_secs: i64,
    services_budget_bytes: usize,
) -> PyResult<Option<Summary<'py>>> {
    let was_summarised = trace.summarised_rows > 0;
    let (fresh, index_of) = trace.deduplicate();
    if fresh == 0 && was_summarised {
        trace.compact();
        return Ok(None);
    }
    calls.collect(py, trace, &index_of, window_secs)?;
    let errors = trace
        .rows
        .iter()
        .filter(|row| row.flags & IS_ERROR != 0)
        .count();
    let cold_starts = trace
        .rows
        .iter()
        .filter(|row| row.flags & IS_COLD_START != 0)
        .count();
    let (root_service, root_operation) = match &trace.root {
        Some(root) => (
            root.service.bind(py).clone().into_any(),
            root.operation.bind(py).clone(),
        ),
        None => (py.None().into_bound(py), py.None().into_bound(py)),
    };
    // Python's `start_min or 0`: a start is always there once a row is.
    let start = match &trace.start_min_unix_nanos {
        Some(start) => start.to_object(py)?,
        None => 0i64.into_pyobject(py)?.into_any(),
    };
    let (services, services_fit) = distinct_services(py, &trace.services, services_budget_bytes)?;
    let summary = PyTuple::new(
        py,
        [
            trace.tenant.bind(py).clone().into_any(),
            trace.trace_id.bind(py).clone().into_any(),
            root_service,
            root_operation,
            start,
            trace
                .end_max_unix_nanos
                .unwrap_or(0)
                .into_pyobject(py)?
                .into_any(),
            trace.rows.len().into_pyobject(py)?.into_any(),
            errors.into_pyobject(py)?.into_any(),
            services.into_any(),
            cold_starts.into_pyobject(py)?.into_any(),
            0i64.into_pyobject(py)?.into_any(),
        ],
    )?;
    trace.compact();
    Ok(Some(Summary {
        fields: summary,
        services_fit,
    }))
}

#[pymethods]
impl TraceAssemblerCore {
    /// Empty state for `window_secs` edge windows, the idle and retention
    /// thresholds in seconds of the assembler's clock, and the budget of a
    /// summary's service names (`MAX_SUMMARY_SERVICES_BYTES`).
    #[new]
    fn new(
        window_secs: i64,
        idle_secs: f64,
        retention_secs: f64,
        services_budget_bytes: usize,
    ) -> PyResult<Self> {
        if window_secs == 0 {
            return Err(PyValueError::new_err("window_secs must not be 0"));
        }
        Ok(TraceAssemblerCore {
            window_secs,
            services_budget_bytes,
            idle_secs,
            retention_secs,
            slab: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            pending: Chain::EMPTY,
            retained: Chain::EMPTY,
        })
    }

    /// Traces with spans not yet summarised.
    #[getter]
    fn pending_trace_count(&self) -> usize {
        self.pending.len
    }

    /// Summarised traces remembered for late spans.
    #[getter]
    fn retained_trace_count(&self) -> usize {
        self.retained.len
    }

    /// Keep the spans of `columns` (the `SpanBatch` lists in `COLUMNS`
    /// order) with their traces, seen at clock time `now`.
    ///
    /// Raises ValueError if the lists differ in length and `struct.error`
    /// for an end or duration outside int64 (as `ROW.pack` does), both
    /// before any trace is touched.
    fn add(&mut self, py: Python<'_>, now: f64, columns: &Bound<'_, PyTuple>) -> PyResult<()> {
        let columns = Columns::read(columns)?;
        let spans = columns.spans()?;
        let tenants = columns.column("tenant");
        let trace_ids = columns.column("trace_id");
        let tenant_strs = tenants
            .iter()
            .map(|tenant| Ok(tenant.cast::<PyString>()?.clone()))
            .collect::<PyResult<Vec<_>>>()?;
        let trace_id_strs = trace_ids
            .iter()
            .map(|trace_id| Ok(trace_id.cast::<PyString>()?.clone()))
            .collect::<PyResult<Vec<_>>>()?;
        let tenant_bytes = tenant_strs
            .iter()
            .map(str_bytes)
            .collect::<PyResult<Vec<_>>>()?;
        let trace_id_bytes = trace_id_strs
            .iter()
            .map(str_bytes)
            .collect::<PyResult<Vec<_>>>()?;
        // Span indices by trace, traces in order of first appearance.
        let mut group_of: HashMap<(&[u8], &[u8]), usize> = HashMap::new();
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut group_by_span: Vec<usize> = Vec::with_capacity(spans.len());
        for index in 0..spans.len() {
            let key = (tenant_bytes[index].as_ref(), trace_id_bytes[index].as_ref());
            let group = *group_of.entry(key).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(index);
            group_by_span.push(group);
        }
        let mut slots = Vec::with_capacity(groups.len());
        for indices in &groups {
            let first = indices[0];
            let key = trace_key(&tenant_bytes[first], &trace_id_bytes[first]);
            let slot = self.open(
                key,
                tenant_bytes[first].len(),
                [&tenant_strs[first], &trace_id_strs[first]],
            );
            slots.push(slot);
            let trace = &mut self.node_mut(slot).trace;
            reserve_modestly(&mut trace.rows, indices.len());
            reserve_modestly(&mut trace.services, indices.len());
            reserve_modestly(&mut trace.virtual_names, indices.len());
            let mut start_min: Option<&Nanos> = None;
            let mut end_max = i64::MIN;
            for &index in indices {
                let span = &spans[index];
                trace.rows.push(span.row);
                trace.services.push(span.service.clone().unbind());
                trace
                    .virtual_names
                    .push(span.virtual_name.as_ref().map(|name| name.clone().unbind()));
                let start = &span.start_unix_nanos;
                let earlier = match start_min {
                    None => true,
                    Some(current) => start.lt(py, current)?,
                };
                if earlier {
                    start_min = Some(start);
                }
                end_max = end_max.max(span.row.end_unix_nanos);
            }
            let start_min = start_min
                .expect("a trace of a batch has a span")
                .clone_ref(py);
            trace.note_times(py, start_min, end_max)?;
        }
        let operations = columns.column("operation");
        for (index, span) in spans.iter().enumerate() {
            if span.row.flags & HAS_PARENT != 0 {
                continue;
            }
            let slot = slots[group_by_span[index]];
            let root = Root {
                key: span.row.key,
                start_unix_nanos: span.start_unix_nanos.clone_ref(py),
                service: span.service.clone().unbind(),
                operation: operations[index].clone().unbind(),
            };
            self.node_mut(slot).trace.note_root(py, root)?;
        }
        for slot in slots {
            self.node_mut(slot).trace.last_seen = now;
            self.unlink(slot);
            self.push_back(slot, true);
        }
        Ok(())
    }

    /// Forget retained traces `retention_secs` old at `now`, summarise
    /// pending ones `idle_secs` old and retain those still young enough.
    ///
    /// Returns `(summaries, over_budget, edges)`: the `TraceSummary` fields
    /// of each summary as a tuple in field order (`services` sorted and
    /// distinct, `services_omitted` 0), the indices of the summaries whose
    /// services must go through `bounded_services` instead, and edge tuples
    /// (see `EdgeCalls.into_list`).
    fn poll<'py>(&mut self, py: Python<'py>, now: f64) -> PyResult<PollResult<'py>> {
        while self.retained.head != NIL {
            let slot = self.retained.head;
            if now - self.node(slot).trace.last_seen < self.retention_secs {
                break;
            }
            self.unlink(slot);
            self.forget(slot);
        }
        let summaries = PyList::empty(py);
        let mut over_budget = Vec::new();
        let mut calls = EdgeCalls::default();
        while self.pending.head != NIL {
            let slot = self.pending.head;
            let last_seen = self.node(slot).trace.last_seen;
            if now - last_seen < self.idle_secs {
                break;
            }
            self.unlink(slot);
            if let Some(summary) = self.summarise_slot(py, slot, &mut calls)? {
                if !summary.services_fit {
                    over_budget.push(summaries.len());
                }
                summaries.append(summary.fields)?;
            }
            if now - last_seen < self.retention_secs {
                self.push_back(slot, false);
            } else {
                self.forget(slot);
            }
        }
        Ok((summaries, over_budget, calls.into_list(py)?))
    }

    /// Summarise every pending trace and retain it; returns what `poll`
    /// returns.
    fn flush_all<'py>(&mut self, py: Python<'py>) -> PyResult<PollResult<'py>> {
        let summaries = PyList::empty(py);
        let mut over_budget = Vec::new();
        let mut calls = EdgeCalls::default();
        while self.pending.head != NIL {
            let slot = self.pending.head;
            self.unlink(slot);
            if let Some(summary) = self.summarise_slot(py, slot, &mut calls)? {
                if !summary.services_fit {
                    over_budget.push(summaries.len());
                }
                summaries.append(summary.fields)?;
            }
            self.push_back(slot, false);
        }
        Ok((summaries, over_budget, calls.into_list(py)?))
    }
}
