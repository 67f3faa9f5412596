"""What a step changed in its context: found where the step ran, merged where the run is.

A context crosses to a step's worker whole, but only the attributes the step
set, changed in place or deleted travel back. Each attribute is pickled once
(``Pickled``: protocol 5, buffers out of band) to fingerprint it before the
step and once after; the pickle made after the step is what travels, so a
changed value is not pickled again to ship it. An immutable value (str,
bytes, numbers, None) is not pickled at all unless the step replaced it.

A fingerprint is a digest of the pickle stream plus, per out-of-band buffer,
its address and size when it is read-only (its bytes cannot change: Ray's
zero-copy arrays) or a digest of its bytes when it is writable. A large
array therefore costs a few microseconds to fingerprint, not a pass over
its data.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from dataclasses import dataclass, field
from typing import Any

from synapse_ray.errors import ContextPicklingError
from synapse_ray.runtime.pickling import ByReference, Pickled

# Attributes that never travel back: the driver owns them (or they are per process).
NOT_TRACKED = frozenset({"runtime_ctx", "current_step", "attempt", "step_results", "_opened_artifacts"})

Fingerprint = tuple[Any, ...]


@dataclass
class ContextChanges:
    """The attributes a step set or changed (``values``) and the ones it deleted (``removed``)."""

    values: dict[str, Any] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.values or self.removed)


def pickle_attribute(owner: str, key: str, value: Any) -> Pickled:
    """Pickle one context attribute; a failure names it (``ContextPicklingError``)."""
    try:
        return Pickled.of(value)
    except Exception as exc:  # noqa: BLE001 - named below
        raise ContextPicklingError(
            f"{owner} attribute '{key}' ({type(value).__name__}) cannot be pickled: {exc}. "
            "Contexts cross process boundaries; keep plain values (paths, ids, arrays) in them "
            "and rebuild live objects (clients, locks, open files) inside the step.",
            attribute=key,
            owner=owner,
        ) from None


def tracked(ctx: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(ctx).items() if k not in NOT_TRACKED}


def fingerprint(pickled: Pickled) -> Fingerprint:
    marks: list[Any] = [hashlib.blake2b(pickled.header, digest_size=16).digest()]
    marks.extend(id(ref) for ref in pickled.refs)
    for buf in pickled.buffers:
        view = _flat(buf)
        address = _address(view) if view.readonly else None
        if address is not None:
            marks.append(("at", address, view.nbytes))
        else:
            marks.append(("bytes", view.nbytes, hashlib.blake2b(view, digest_size=16).digest()))
    return tuple(marks)


def _flat(buf: Any) -> memoryview:
    """The buffer's bytes as one flat view (a copy only for a non-contiguous buffer)."""
    if isinstance(buf, pickle.PickleBuffer):
        try:
            return buf.raw()
        except BufferError:
            pass
    view = memoryview(buf)
    if view.c_contiguous:
        return view.cast("B")
    return memoryview(view.tobytes())


# Exact types whose values cannot change in place. An attribute that still names
# the same such object after the step is unchanged: no pickle and no digest,
# which for a large str or bytes meant a copy and a pass over it, twice a step.
_IMMUTABLE = frozenset({type(None), bool, int, float, complex, str, bytes})
_SAME = object()  # marks a fingerprint that is the value itself


def _mark(owner: str, key: str, value: Any) -> Fingerprint:
    if type(value) in _IMMUTABLE:
        return (_SAME, value)  # holds the value, so its id is not reused while the step runs
    return fingerprint(pickle_attribute(owner, key, value))


def snapshot(ctx: Any) -> dict[str, tuple[int, Fingerprint]]:
    """Identity and fingerprint of each attribute a step may change, taken before it runs."""
    owner = type(ctx).__name__
    return {k: (id(v), _mark(owner, k, v)) for k, v in tracked(ctx).items()}


def diff(ctx: Any, before: dict[str, tuple[int, Fingerprint]]) -> tuple[dict[str, Pickled], list[str]]:
    """Attributes set or changed since ``before`` (pickled, ready to travel), and those deleted.

    An attribute that is new or now names another object was set: it is only
    pickled (no fingerprint: hashing a large writable buffer is not free). One
    still naming the same object is fingerprinted again to see in-place changes,
    unless that object is immutable.
    """
    owner = type(ctx).__name__
    now = tracked(ctx)
    changed: dict[str, Pickled] = {}
    for key, value in now.items():
        old = before.get(key)
        if isinstance(value, ByReference) and old is not None:
            continue  # still the reference it arrived as
        if old is not None and old[1][0] is _SAME and old[1][1] is value:
            continue  # the same immutable object
        pickled = pickle_attribute(owner, key, value)
        if old is None or old[0] != id(value) or old[1] != fingerprint(pickled):
            changed[key] = pickled
    return changed, [k for k in before if k not in now]


def apply(ctx: Any, changes: ContextChanges) -> None:
    """Merge a step's changes into the driver's context."""
    for key, value in changes.values.items():
        if key in NOT_TRACKED:
            raise TypeError(f"a step's changes may not replace '{key}'")
        setattr(ctx, key, value)
    for key in changes.removed:
        if key in vars(ctx):
            delattr(ctx, key)


def _address(view: memoryview) -> int | None:
    """Where a read-only buffer's bytes start (numpy, if loaded, can tell without copying)."""
    np = sys.modules.get("numpy")
    if np is not None:
        try:
            return int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
        except (TypeError, ValueError):
            return None
    import ctypes  # only without numpy: rare

    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except TypeError:
        return None
