"""Reading pickled ``.npy`` files without running code from them.

A ``.npy`` file that holds an object array (CALVIN's ``auto_lang_ann.npy`` is a 0-d object array wrapping a
dict) stores a pickle stream after its header. ``np.load(path, allow_pickle=True)`` would hand that stream to
the standard unpickler, which imports and calls whatever the stream names: a crafted file can run any command.

:class:`RestrictedUnpickler` builds plain data (dict, list, tuple, set, str, bytes, int, float, bool, None,
complex) and numpy arrays, dtypes and scalars, and nothing else:

* Globals resolve only to the reconstruction path numpy's own pickles use: ``_reconstruct(ndarray, (0,), b'b')``
  followed by a ``BUILD`` with ``(version, shape, dtype, fortran, data)``, ``_frombuffer`` (protocol 5),
  ``scalar(dtype, bytes)`` and ``dtype(spec, False, True)`` with its state. Each is a stand-in that checks its
  arguments and builds the object from a copy of the bytes: ``numpy.ndarray`` itself is never callable (it
  would build object arrays from raw pointers or zero-stride views of 10¹² elements), an object array is only
  built element by element from a list, structured dtypes are refused, and a byte count must match the shape.
* ``BUILD`` applies only to those numpy stand-ins; no other object has state set from the stream.
* The result is then walked iteratively: cycles, nesting deeper than ``max_depth``, more than ``max_items``
  objects or ``max_bytes`` of array / string data *counting shared references as the copies a consumer would
  make* (a small stream of nested shared lists that never finishes expanding) are refused.

Any other global (``os.system``, ``builtins.eval``, a user class, ...) stops the load with
:class:`UnsafePickleError` before it is imported, let alone called.
"""

from __future__ import annotations

import io
import logging
import math
import pickle
import re
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_ITEMS",
    "RestrictedUnpickler",
    "UnsafePickleError",
    "check_npy_size",
    "safe_load_npy",
    "safe_loads",
]

MAX_DEPTH = 100
"""Deepest nesting of containers accepted from a pickle (CALVIN's annotations nest 4 deep)."""
MAX_ITEMS = 20_000_000
"""Most objects (container entries, object-array elements) a pickle may expand to, shared references counted
as copies."""
MAX_BYTES = 4 << 30
"""Most bytes of numeric-array and string data a pickle may expand to, shared references counted as copies."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle stream asked for a global outside the allow-list (or is otherwise not plain data)."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles spell ``bytes`` as ``encode(str, 'latin1')``.

    Only the latin-1 round trip that pickle itself emits is accepted; any other codec is refused.
    """
    if (
        not isinstance(text, str)
        or not isinstance(encoding, str)
        or encoding.replace("-", "").replace("_", "").lower() not in {"latin1"}
    ):
        raise UnsafePickleError(
            f"_codecs.encode is only allowed as pickle's latin-1 bytes encoding, got encoding {encoding!r}"
        )
    return text.encode("latin-1")


def _empty_bytes(*args: Any) -> bytes:
    """Stand-in for ``bytes``: protocol-2 pickles spell an empty buffer ``bytes()``; nothing else is accepted."""
    if args:
        raise UnsafePickleError("bytes(...) is only allowed without arguments (pickle's empty buffer)")
    return b""


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    """Stand-in for ``complex``: numbers only (complex numbers have no pickle opcode of their own)."""
    for part in (real, imag):
        if isinstance(part, bool) or not isinstance(part, (int, float)):
            raise UnsafePickleError(f"complex() is only allowed with two real numbers, got {type(part).__name__}")
    return complex(real, imag)


class _NdarrayToken:
    """What ``numpy.ndarray`` resolves to: a marker that ``_reconstruct`` accepts, itself not callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsafePickleError(
            "numpy.ndarray(...) called from a pickle (it can build object arrays from raw pointers or "
            "zero-stride views); only numpy's own _reconstruct path is accepted"
        )

    def __repr__(self) -> str:
        return "<numpy.ndarray (as a _reconstruct argument only)>"


_NDARRAY = _NdarrayToken()

# numpy writes dtypes as dtype('<kind><size>', False, True): plain numbers, strings and objects are accepted.
# 'V' (void: structured dtypes, fields at arbitrary offsets) and datetimes (extra state) are refused.
_DTYPE_SPEC = re.compile(r"^[?biufcSUO]\d{0,6}$")


class _Pending:
    """An object created by a numpy stand-in whose contents arrive with the next BUILD opcode."""

    def __init__(self) -> None:
        self.memo_keys: list[Any] = []

    def finish(self, state: Any) -> Any:
        raise NotImplementedError


class _PendingDtype(_Pending):
    def __init__(self, spec: str) -> None:
        super().__init__()
        self.spec = spec

    def finish(self, state: Any) -> np.dtype:
        if not (isinstance(state, tuple) and len(state) == 8 and state[0] in (3, 4)):
            raise UnsafePickleError(f"dtype state must be numpy's 8-tuple (version 3 or 4), got {_short(state)}")
        _, endian, subarray, names, fields, elsize, alignment, _flags = state
        if subarray is not None or names is not None or fields is not None:
            raise UnsafePickleError("structured or sub-array dtypes are not accepted from pickles")
        if endian not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"dtype byte order must be one of '<', '>', '|', '=', got {_short(endian)}")
        dtype = np.dtype(self.spec)
        if endian in "<>" and dtype.byteorder != "|":
            dtype = dtype.newbyteorder(endian)
        if not isinstance(elsize, int) or (elsize != -1 and elsize != dtype.itemsize):
            raise UnsafePickleError(f"dtype {self.spec!r} with item size {_short(elsize)}, expected {dtype.itemsize}")
        return dtype


def _safe_dtype(spec: Any, align: Any = False, copy: Any = True) -> _PendingDtype:
    """Stand-in for ``numpy.dtype`` as numpy's pickles call it: dtype(spec, False, True)."""
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec) or not isinstance(align, bool):
        raise UnsafePickleError(f"dtype({_short(spec)}, {_short(align)}): only plain numeric, string and object "
                                "dtypes are accepted from pickles")
    return _PendingDtype(spec)


def _element_count(shape: Any, what: str) -> tuple[tuple[int, ...], int]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if (
        not isinstance(shape, tuple)
        or len(shape) > 32
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise UnsafePickleError(f"{what}: shape must be a tuple of at most 32 non-negative ints, got {_short(shape)}")
    return shape, math.prod(shape)


def _array_from_bytes(data: Any, dtype: Any, shape: Any, fortran: bool, what: str) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"{what}: a raw buffer can only hold a numeric or string dtype, got {_short(dtype)}")
    shape, count = _element_count(shape, what)
    if isinstance(data, str):  # numpy 1.x / Python 2 pickles store the buffer as a latin-1 str
        data = data.encode("latin-1")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError(f"{what}: data must be bytes, got {type(data).__name__}")
    if count * dtype.itemsize > MAX_BYTES or len(data) != count * dtype.itemsize:
        raise UnsafePickleError(
            f"{what}: shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, the stream holds {len(data)}"
        )
    flat = np.frombuffer(bytes(data), dtype=dtype, count=count).copy()
    return flat.reshape(shape, order="F" if fortran else "C")


class _PendingArray(_Pending):
    def finish(self, state: Any) -> np.ndarray:
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise UnsafePickleError(f"ndarray state must be (version, shape, dtype, fortran, data), got {_short(state)}")
        shape, dtype, fortran, data = state
        if not isinstance(fortran, bool):
            raise UnsafePickleError(f"ndarray state: fortran flag must be a bool, got {_short(fortran)}")
        if isinstance(dtype, np.dtype) and dtype.hasobject:
            if dtype.kind != "O":
                raise UnsafePickleError(f"ndarray state: dtype {dtype} mixes objects with raw data")
            shape, count = _element_count(shape, "object ndarray")
            if not isinstance(data, list) or len(data) != count or count > MAX_ITEMS:
                raise UnsafePickleError(
                    f"object ndarray of shape {shape} must be built from a list of {count} elements, got "
                    f"{type(data).__name__}" + (f" of {len(data)}" if isinstance(data, list) else "")
                )
            flat = np.empty(count, dtype=object)
            for i, value in enumerate(data):
                flat[i] = value
            return flat.reshape(shape, order="F" if fortran else "C")
        return _array_from_bytes(data, dtype, shape, fortran, "ndarray")


def _safe_reconstruct(subtype: Any, shape: Any, typecode: Any) -> _PendingArray:
    """Stand-in for numpy's ``_reconstruct``: only the exact call numpy's pickles make."""
    if subtype is not _NDARRAY or shape not in ((0,), 0) or typecode not in (b"b", "b"):
        raise UnsafePickleError(
            f"_reconstruct({_short(subtype)}, {_short(shape)}, {_short(typecode)}): only numpy's own "
            "_reconstruct(numpy.ndarray, (0,), b'b') is accepted"
        )
    return _PendingArray()


def _safe_frombuffer(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for numpy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)``: copies, checks the size."""
    if order not in ("C", "F"):
        raise UnsafePickleError(f"_frombuffer: order must be 'C' or 'F', got {_short(order)}")
    return _array_from_bytes(data, dtype, shape, order == "F", "_frombuffer")


def _safe_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for numpy's ``scalar(dtype, bytes)``: numeric and string scalars from exactly itemsize bytes."""
    array = _array_from_bytes(data, dtype, (1,), False, "scalar")
    return array[0]


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Map both the numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) spellings: files written by either major
    # version must load under the other.
    table: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _safe_dtype,
        ("_codecs", "encode"): _latin1_encode,
        # complex numbers have no pickle opcode of their own (protocol 2 spells the module `__builtin__`)
        ("builtins", "complex"): _complex,
        ("__builtin__", "complex"): _complex,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = _safe_reconstruct
        table[(f"{core}.multiarray", "scalar")] = _safe_scalar
        table[(f"{core}.numeric", "_frombuffer")] = _safe_frombuffer
    return table


_ALLOWED_GLOBALS = _numpy_globals()


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, _Pending) else f"<unfinished {type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


class _TrackingMemo(dict):
    """The unpickler's memo; remembers under which keys an unfinished numpy object was stored."""

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, _Pending):
            value.memo_keys.append(key)
        super().__setitem__(key, value)


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that builds only numpy arrays/dtypes/scalars and built-in containers, strings and numbers.

    Based on the pure-Python unpickler, so that ``BUILD`` can be restricted to numpy's own reconstruction.

    Args:
        file: binary file object positioned at the start of a pickle stream.
        source: name of the file or stream, used in error messages.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, *, source: str = "<pickle stream>") -> None:
        super().__init__(file, fix_imports=False, encoding="latin1")
        self.memo = _TrackingMemo()
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load global '{module}.{name}'. Only numpy arrays, dtypes and scalars, "
                "dicts, lists, tuples, strings and numbers are accepted from pickled files; this file asks for "
                "something else and was not loaded."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent id in the pickle stream")

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, _Pending):
            raise UnsafePickleError(
                f"{self._source}: refused to set the state of a {type(inst).__name__}; only numpy's own array and "
                "dtype reconstruction uses BUILD"
            )
        built = inst.finish(state)
        self.stack[-1] = built
        for key in inst.memo_keys:
            if self.memo.get(key) is inst:
                dict.__setitem__(self.memo, key, built)

    dispatch[pickle.BUILD[0]] = load_build


_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic)


def _check_plain_data(
    root: Any, source: str, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES
) -> None:
    """Refuse cycles, deep nesting, unexpected objects and a total expanded size above the bounds.

    Iterative (a 200,000-deep nest must not hit Python's recursion limit) and linear in the number of distinct
    objects: each container's expanded (items, bytes) is computed once and reused for every reference to it.
    """

    def leaf_cost(obj: Any) -> tuple[int, int] | None:
        if isinstance(obj, _LEAF_TYPES):
            size = len(obj) if isinstance(obj, (str, bytes, bytearray)) else 0
            return 1, size
        if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
            return 1, int(obj.nbytes)
        return None

    def children(obj: Any) -> Any:
        if isinstance(obj, dict):
            return iter([x for kv in obj.items() for x in kv])
        if isinstance(obj, (list, tuple, set, frozenset)):
            return iter(obj)
        if isinstance(obj, np.ndarray):  # object dtype
            return iter(obj.ravel(order="K").tolist())
        raise UnsafePickleError(
            f"{source}: the pickle holds a {type(obj).__name__} ({_short(obj)}); only plain data and numpy arrays "
            "are accepted"
        )

    def over(items: int, nbytes: int) -> None:
        if items > max_items or nbytes > max_bytes:
            raise UnsafePickleError(
                f"{source}: the pickled data expands to more than {max_items} objects or {max_bytes} bytes (shared "
                "references counted as copies); refused"
            )

    cost = leaf_cost(root)
    if cost is not None:
        over(*cost)
        return
    done: dict[int, tuple[int, int]] = {}
    on_path = {id(root)}
    stack: list[tuple[Any, Any, list[int]]] = [(root, children(root), [1, 0])]
    while stack:
        obj, it, acc = stack[-1]
        child = next(it, _END)
        if child is _END:
            stack.pop()
            on_path.discard(id(obj))
            done[id(obj)] = (acc[0], acc[1])
            if stack:
                parent = stack[-1][2]
                parent[0] += acc[0]
                parent[1] += acc[1]
                over(*parent)
            continue
        cost = leaf_cost(child) or done.get(id(child))
        if cost is not None:
            acc[0] += cost[0]
            acc[1] += cost[1]
            over(*acc)
            continue
        if id(child) in on_path:
            raise UnsafePickleError(f"{source}: the pickled data contains a reference cycle; refused")
        if len(stack) >= max_depth:
            raise UnsafePickleError(f"{source}: the pickled data nests deeper than {max_depth} levels; refused")
        on_path.add(id(child))
        stack.append((child, children(child), [1, 0]))


_END = object()


def safe_loads(
    data: bytes,
    *,
    source: str = "<pickle stream>",
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
    max_bytes: int = MAX_BYTES,
) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` and check the result's shape (see the module doc).

    Raises:
        UnsafePickleError: the stream names a global outside the allow-list, misuses numpy's reconstruction,
            or its data nests deeper than ``max_depth`` or expands beyond ``max_items`` / ``max_bytes``.
        pickle.UnpicklingError: the stream is malformed (message names ``source``).
    """
    try:
        result = RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError as exc:
        if str(exc).startswith(source):
            raise
        raise UnsafePickleError(f"{source}: {exc}") from None
    except Exception as exc:  # truncated / corrupt streams raise a zoo of types
        raise pickle.UnpicklingError(
            f"{source}: corrupt pickle stream ({type(exc).__name__}: {exc})"
        ) from exc
    _check_plain_data(result, source, max_depth, max_items, max_bytes)
    return result


def check_npy_size(shape: tuple[int, ...], dtype: np.dtype, available: int, source: str) -> None:
    """Raise ValueError naming ``source`` if a ``.npy`` header claims more data than the ``available`` bytes.

    A header is a promise about the bytes that follow it; checking it against the file (or zip member) size
    turns a header claiming terabytes into a one-line error instead of an attempted allocation.
    """
    needed = math.prod(shape) * dtype.itemsize
    if needed > available:
        raise ValueError(
            f"{source}: the .npy header claims shape {tuple(shape)} of {dtype} ({needed} bytes) but only "
            f"{available} bytes of data follow it"
        )


def read_npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Read the header of an open ``.npy`` file (format 1.0 or 2.0); returns (shape, dtype), leaves ``fh`` at
    the data. Raises ValueError for anything else."""
    version = npy_format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}, expected 1.0 or 2.0")
    return tuple(shape), dtype


def safe_load_npy(path: str | PathLike[str]) -> np.ndarray:
    """Load a ``.npy`` file; object arrays are unpickled with :class:`RestrictedUnpickler`.

    Numeric arrays are read by ``np.load(..., allow_pickle=False)``. For an object array the header is parsed
    with :mod:`numpy.lib.format` and the payload that follows it is unpickled under the allow-list; the result
    must be an ndarray whose shape matches the header.

    Args:
        path: the ``.npy`` file.

    Returns:
        The array (for a pickled dict, a 0-d object array: call ``.item()``).

    Raises:
        UnsafePickleError: the payload asks for anything but plain data; nothing from it was executed.
        ValueError: the file is not a valid ``.npy`` file (message names the file).
    """
    path = Path(path)
    with path.open("rb") as fh:
        try:
            shape, dtype = read_npy_header(fh)
        except ValueError as exc:
            raise ValueError(f"{path}: not a valid .npy file ({exc})") from exc
        if not dtype.hasobject:
            available = path.stat().st_size - fh.tell()
            check_npy_size(shape, dtype, available, str(path))
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        payload = fh.read()
    array = safe_loads(payload, source=str(path))
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: pickled payload is a {type(array).__name__}, expected an ndarray")
    if array.shape != tuple(shape):
        raise ValueError(f"{path}: pickled array has shape {array.shape}, header says {tuple(shape)}")
    return array
