"""Reading pickled ``.npy`` files without running code from them.

A ``.npy`` file that holds an object array (CALVIN's ``auto_lang_ann.npy`` is a 0-d object array wrapping a
dict) stores a pickle stream after its header. ``np.load(path, allow_pickle=True)`` would hand that stream to
the standard unpickler, which imports and calls whatever the stream names: a crafted file can run any command.

:class:`RestrictedUnpickler` resolves only the handful of globals that numpy itself writes when it pickles
arrays, dtypes and scalars; everything else that a pickle of plain data needs (dict, list, tuple, str, bytes,
int, float, bool, None) is built by pickle opcodes and never goes through a global lookup. Any other global
(``os.system``, ``builtins.eval``, a user class, ...) stops the load with :class:`UnsafePickleError` before it
is imported, let alone called.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

logger = logging.getLogger(__name__)

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "safe_loads", "safe_load_npy"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle stream asked for a global outside the allow-list (or is otherwise not plain data)."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles spell ``bytes`` as ``encode(str, 'latin1')``.

    Only the latin-1 round trip that pickle itself emits is accepted; any other codec is refused.
    """
    if not isinstance(text, str) or encoding.replace("-", "").replace("_", "").lower() not in {"latin1"}:
        raise UnsafePickleError(
            f"_codecs.encode is only allowed as pickle's latin-1 bytes encoding, got encoding {encoding!r}"
        )
    return text.encode("latin-1")


def _numpy_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    # Take the callables from numpy's own reduce output, so the table follows whatever numpy version is
    # installed, and map both the numpy 1.x (`numpy.core`) and 2.x (`numpy._core`) spellings onto them:
    # files written by either major version must load under the other.
    reconstruct = np.ndarray((0,)).__reduce__()[0]
    scalar = np.float64(0.0).__reduce__()[0]
    table: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        # complex numbers have no pickle opcode of their own (protocol 2 spells the module `__builtin__`)
        ("builtins", "complex"): complex,
        ("__builtin__", "complex"): complex,
    }
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
    # Protocol-5 pickles of arrays go through `_frombuffer(buffer, dtype, shape, order)`.
    frombuffer = np.ndarray((0,)).__reduce_ex__(5)[0]
    if getattr(frombuffer, "__name__", "") == "_frombuffer":
        for core in ("numpy.core", "numpy._core"):
            table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


_ALLOWED_GLOBALS = _numpy_globals()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays/dtypes/scalars and built-in containers, strings and numbers.

    Args:
        file: binary file object positioned at the start of a pickle stream.
        source: name of the file or stream, used in error messages.
    """

    def __init__(self, file: io.BufferedIOBase | io.BytesIO, *, source: str = "<pickle stream>") -> None:
        super().__init__(file, fix_imports=False, encoding="latin1")
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


def safe_loads(data: bytes, *, source: str = "<pickle stream>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the stream names a global outside the allow-list.
        pickle.UnpicklingError: the stream is malformed (message names ``source``).
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated / corrupt streams raise a zoo of types
        raise pickle.UnpicklingError(
            f"{source}: corrupt pickle stream ({type(exc).__name__}: {exc})"
        ) from exc


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
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
        payload = fh.read()
    array = safe_loads(payload, source=str(path))
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: pickled payload is a {type(array).__name__}, expected an ndarray")
    if array.shape != tuple(shape):
        raise ValueError(f"{path}: pickled array has shape {array.shape}, header says {tuple(shape)}")
    return array
