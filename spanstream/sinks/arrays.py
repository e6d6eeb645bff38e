"""`SpanBatch` columns as arrow arrays, for the Parquet archive.

`column_array` gives what ``pa.array(values, type=...)`` gives, faster. The
compiled extension (`spanstream_native`, ``native/src/columns.rs`` and
``maps.rs``) writes a column's values straight into the buffers of an arrow
array when every item is of the column's plain type (exact ``str``, ``int``,
``bool`` or None; for maps, exact dicts of exact ``str``); Python only wraps
the buffers. Where the extension is missing, or declines a column, attribute
maps are flattened in Python (`python_map_array`), and everything else goes
to ``pa.array``, which decides and raises as it always did. The switch of
`spanstream.extension` (``SPANSTREAM_DECODER=python``) turns the compiled
builders off.
"""

from __future__ import annotations

from itertools import accumulate, chain
from typing import Any

import pyarrow as pa

from spanstream import extension

try:
    from spanstream_native import (
        bool_column,
        flatten_string_maps,
        int_column,
        string_column,
    )

    HAS_NATIVE_BUILDERS = True
except ImportError:  # not installed (it is optional), or built before these
    HAS_NATIVE_BUILDERS = False

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
    "map<string,string>": pa.map_(pa.string(), pa.string()),
}


def arrow_type(type_name: str) -> pa.DataType:
    """Return the arrow type for a `SPAN_COLUMNS` type name."""
    try:
        return _ARROW_TYPES[type_name]
    except KeyError:
        raise ValueError(f"no arrow type for column type {type_name!r}") from None


def column_array(
    values: list[Any], arrow_type: pa.DataType, compiled: bool | None = None
) -> pa.Array:
    """Return ``values`` as an arrow array of ``arrow_type``.

    ``compiled``: whether the extension may build it (default: what
    `use_compiled_builders` says; `arrow_table` asks once per table).
    Raises what ``pa.array(values, type=arrow_type)`` raises for a value of
    the wrong type or out of range (``ArrowInvalid``, ``ArrowTypeError``,
    OverflowError).
    """
    if compiled is None:
        compiled = use_compiled_builders()
    array = None
    if values and pa.types.is_map(arrow_type):
        if compiled:
            array = native_map_array(values, arrow_type)
        if array is None:
            array = python_map_array(values, arrow_type)
    elif values and compiled:
        array = native_scalar_array(values, arrow_type)
    return pa.array(values, type=arrow_type) if array is None else array


def use_compiled_builders() -> bool:
    """Return whether `column_array` uses the extension (see
    `spanstream.extension`); raises `ConfigError` as it does."""
    return extension.use_native(available=HAS_NATIVE_BUILDERS)


def native_map_array(maps: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """Return ``maps`` as a map array built by the extension.

    Returns None when the extension is missing or declines the column: it
    takes only a list of exact dicts with exact ``str`` keys and values that
    encode as UTF-8.
    """
    if not HAS_NATIVE_BUILDERS or type(maps) is not list:
        return None
    buffers = flatten_string_maps(maps)
    if buffers is None:
        return None
    entries, map_offsets, key_offsets, key_data, value_offsets, value_data = buffers
    offsets = pa.Array.from_buffers(
        pa.int32(), len(maps) + 1, [None, pa.py_buffer(map_offsets)]
    )
    keys = _string_array(entries, 0, None, key_offsets, key_data)
    items = _string_array(entries, 0, None, value_offsets, value_data)
    return pa.MapArray.from_arrays(offsets, keys, items, type=arrow_type)


def native_scalar_array(values: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """Return a string, int32, int64 or bool column built by the extension.

    Returns None when the extension is missing or declines the column (an
    item of another type, an int out of range, a string that is not valid
    UTF-8).
    """
    if not HAS_NATIVE_BUILDERS or type(values) is not list:
        return None
    if arrow_type == pa.string():
        buffers = string_column(values)
        return None if buffers is None else _string_array(len(values), *buffers)
    if arrow_type == pa.bool_() or arrow_type in (pa.int32(), pa.int64()):
        if arrow_type == pa.bool_():
            buffers = bool_column(values)
        else:
            buffers = int_column(values, arrow_type.bit_width)
        if buffers is None:
            return None
        null_count, validity, data = buffers
        return pa.Array.from_buffers(
            arrow_type,
            len(values),
            [_buffer(validity), pa.py_buffer(data)],
            null_count=null_count,
        )
    return None


def python_map_array(maps: list[Any], arrow_type: pa.DataType) -> pa.Array | None:
    """Return ``maps`` as a map array built in Python (None: not only dicts).

    pyarrow converts a list of dicts entry by entry; flattening the keys and
    values into two string arrays is about twice as fast and gives the same
    array. A record's spans share one resource attributes dict, so repeated
    dicts (by identity) are converted once and repeated with ``take``.
    Anything unusual (not a dict, a null key, a value pyarrow refuses) gives
    None.
    """
    if not maps or set(map(type, maps)) != {dict}:
        return None
    by_id = dict(zip(map(id, maps), maps, strict=True))
    try:
        if len(by_id) * 2 > len(maps):
            return _flat_map_array(maps, arrow_type)
        distinct = _flat_map_array(list(by_id.values()), arrow_type)
        if distinct is None:
            return None
        position = {key: index for index, key in enumerate(by_id)}
        indices = pa.array(list(map(position.__getitem__, map(id, maps))), pa.int32())
        return distinct.take(indices)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None


def _flat_map_array(
    maps: list[dict[Any, Any]], arrow_type: pa.DataType
) -> pa.Array | None:
    keys = pa.array(list(chain.from_iterable(maps)), pa.string())
    if keys.null_count:
        return None
    items = pa.array(list(chain.from_iterable(map(dict.values, maps))), pa.string())
    offsets = pa.array(list(accumulate(map(len, maps), initial=0)), pa.int32())
    return pa.MapArray.from_arrays(offsets, keys, items, type=arrow_type)


def _string_array(
    count: int,
    null_count: int,
    validity: bytes | None,
    offsets: bytes,
    data: bytes,
) -> pa.Array:
    buffers = [_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), count, buffers, null_count=null_count)


def _buffer(data: bytes | None) -> pa.Buffer | None:
    return None if data is None else pa.py_buffer(data)
