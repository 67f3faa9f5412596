"""How context values are pickled, and the pickler, injected by the layer that ships them.

``runtime/`` and ``steps/`` know nothing of Ray; the Ray wing installs Ray's
cloudpickle here (it honours ``register_pickle_by_value``, which is how
classes from file targets reach workers that cannot import them).

A value is pickled once, with protocol 5 and out-of-band buffers
(``Pickled``): the pickle stream (``header``) holds the structure, and large
contiguous memory (numpy arrays, Arrow and pandas columns, ``bytearray``)
stays in ``buffers`` as views of the original memory. Whatever pickles a
``Pickled`` next (Ray's serializer, a plain ``pickle.dumps``) copies the
header and hands the buffers on out of band when it can: the payload is never
pickled a second time, and Ray puts it into its object store with one copy.
"""

from __future__ import annotations

import io
import pickle
import sys
from collections.abc import Callable
from typing import Any

_dumps: Callable[..., bytes] = pickle.dumps
_pickler: type[pickle.Pickler] = pickle.Pickler


def use_dumps(dumps: Callable[..., bytes], pickler: type[pickle.Pickler] | None = None) -> None:
    """Install the pickling function for contexts (idempotent).

    ``pickler`` is the matching ``Pickler`` class; by default the one of the
    module ``dumps`` comes from (``pickle.Pickler``, cloudpickle's ``Pickler``).
    """
    global _dumps, _pickler
    _dumps = dumps
    if pickler is None:
        pickler = getattr(sys.modules.get(getattr(dumps, "__module__", "") or ""), "Pickler", pickle.Pickler)
    _pickler = pickler


def dumps(value: Any) -> bytes:
    return _dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


loads = pickle.loads


class ByReference:
    """Base of values that live elsewhere (say, in Ray's object store).

    Contexts never pickle such a value into their own bytes: it travels as
    itself, so the layer that made it (and knows how to track it) pickles it.
    ``get()`` returns the value it stands for.
    """

    nbytes: int = 0

    def get(self) -> Any:
        raise NotImplementedError


_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})


class Pickled:
    """A value pickled once: the pickle stream plus its out-of-band buffers.

    ``ByReference`` values inside it are kept aside (``refs``) rather than
    pickled into the stream: the pickler that ships the ``Pickled`` pickles
    them itself (Ray must see every object ref it ships to track it).
    """

    __slots__ = ("buffers", "header", "refs")

    def __init__(self, header: bytes, buffers: list[Any], refs: list[ByReference] | None = None) -> None:
        self.header = header
        self.buffers = buffers
        self.refs = refs or []

    @classmethod
    def of(cls, value: Any) -> Pickled:
        if type(value) in _ATOMIC:  # no buffers, no refs, no classes: the C pickler, 10x cheaper
            return cls(pickle.dumps(value, protocol=5), [])
        buffers: list[pickle.PickleBuffer] = []
        refs: list[ByReference] = []
        out = io.BytesIO()
        _pickler_for(out, buffers, refs).dump(value)
        return cls(out.getvalue(), buffers, refs)

    @property
    def nbytes(self) -> int:
        """Bytes this value occupies once pickled (stream plus buffers)."""
        return len(self.header) + sum(memoryview(b).nbytes for b in self.buffers)

    def load(self) -> Any:
        """The value again; arrays are views of the buffers (no copy)."""
        return _load(self.header, self.buffers, self.refs)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        if isinstance(protocol, int) and protocol >= 5:
            buffers: list[Any] = [_as_pickle_buffer(b) for b in self.buffers]
        else:
            buffers = [bytes(memoryview(b)) for b in self.buffers]
        return (_load, (self.header, buffers, self.refs))


def _as_pickle_buffer(buf: Any) -> pickle.PickleBuffer:
    return buf if isinstance(buf, pickle.PickleBuffer) else pickle.PickleBuffer(buf)


_subclasses: dict[type, type] = {}


def _ref_slot(index: int) -> Any:
    """Where a kept-aside ref stood in a pickle stream; ``_Unpickler`` resolves it."""
    raise pickle.UnpicklingError(f"ref #{index} of a Pickled loaded without its refs")


def _refs_aside(base: type[pickle.Pickler]) -> type[pickle.Pickler]:
    """``base`` with a ``reducer_override`` that leaves a slot in the stream for a ``ByReference``.

    Not ``persistent_id``: the pickler calls that for every object, ints and
    strings included, and that one Python call per object was most of the
    cost of pickling a context of lists and dicts. ``reducer_override`` is
    called only for objects the C pickler has no fast path for.
    """
    parent = getattr(base, "reducer_override", None)  # cloudpickle has one; pickle.Pickler none

    def reducer_override(self: Any, obj: Any) -> Any:
        if isinstance(obj, ByReference):
            self.refs.append(obj)
            return (_ref_slot, (len(self.refs) - 1,))
        return parent(self, obj) if parent is not None else NotImplemented

    return type("RefsAside", (base,), {"reducer_override": reducer_override})


def _pickler_for(out: io.BytesIO, buffers: list[Any], refs: list[ByReference]) -> pickle.Pickler:
    """The installed pickler, protocol 5, buffers out of band, ``ByReference`` kept aside."""
    cls = _subclasses.get(_pickler)
    if cls is None:
        cls = _subclasses[_pickler] = _refs_aside(_pickler)
    pickler = cls(out, protocol=5, buffer_callback=buffers.append)
    pickler.refs = refs  # type: ignore[attr-defined]
    return pickler


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, buffers: list[Any], refs: list[ByReference]) -> None:
        super().__init__(io.BytesIO(data), buffers=buffers)
        self._refs = refs

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_ref_slot":
            return self._refs.__getitem__
        return super().find_class(module, name)


def _load(header: bytes, buffers: list[Any], refs: list[ByReference] | None = None) -> Any:
    if not refs:
        return pickle.loads(header, buffers=buffers)
    return _Unpickler(header, buffers, refs).load()
