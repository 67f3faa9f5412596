"""Large context values in Ray's object store: the worker and driver halves of a step's trip.

A step's worker sends back only what the step changed (``steps/changes.py``).
A changed value whose pickle reaches ``store_threshold`` bytes (and every
changed artifact whose packed files do) stays in the worker, and the driver
takes it with one more actor call whose return values are those payloads: Ray
stores them in the object store of the worker's node, owned by the driver, so
they outlive the worker (an actor per step is killed once its step is done),
and the driver holds only ``StoredValue`` references, never the bytes.

The next step's worker resolves each reference with ``ray.get``: from its own
node's store, or pulled node to node, never through the driver. Numpy arrays
(and anything else that pickles its memory out of band) come back as views of
the object store's shared memory: no copy, and read-only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from synapse_ray.errors import ContextPicklingError, ValueTransferError
from synapse_ray.executors.ray.errors import first_line
from synapse_ray.runtime.pickling import ByReference, Pickled
from synapse_ray.steps.artifacts import ArtifactRecord, artifact_path, pack, scan
from synapse_ray.steps.changes import ContextChanges, Fingerprint, diff, pickle_attribute, snapshot, tracked

DEFAULT_STORE_THRESHOLD = 1 << 20  # 1 MiB: below it a value rides back with the step's result
INLINE = math.inf  # a threshold that keeps everything inline (rollback)


class StoredValue(ByReference):
    """A context value that lives in Ray's object store; what the driver holds in its place."""

    def __init__(self, slot: str, nbytes: int, type_name: str, ref: Any = None) -> None:
        self.slot = slot
        self.nbytes = nbytes
        self.type_name = type_name
        self.ref = ref

    def get(self) -> Any:
        """The value (numpy arrays zero-copy and read-only). On the driver this copies it here."""
        import ray

        if self.ref is None:
            raise ValueTransferError(f"Context value '{self.slot}' was never stored", attribute=self.slot)
        with _fetching([self.slot]):
            return ray.get(self.ref)

    def __repr__(self) -> str:
        return f"<StoredValue {self.slot!r}: {self.type_name}, {self.nbytes} bytes in Ray's object store>"


# -- worker side -------------------------------------------------------------
def receive(ctx: Any) -> dict[str, tuple[int, Fingerprint]]:
    """Turn references back into values (one ``ray.get``), then fingerprint what the step may change."""
    import ray

    stored = {k: v for k, v in tracked(ctx).items() if isinstance(v, StoredValue)}
    if stored:
        with _fetching(list(stored)):
            values = ray.get([v.ref for v in stored.values()])
        for key, value in zip(stored, values, strict=True):
            setattr(ctx, key, value)
    return snapshot(ctx)


@contextmanager
def _fetching(slots: list[str]) -> Iterator[None]:
    """A stored value Ray lost (its owner or every copy gone) is a failed transfer, named."""
    from ray.exceptions import ObjectLostError

    try:
        yield
    except ObjectLostError as exc:
        names = ", ".join(repr(s) for s in slots)
        raise ValueTransferError(
            f"Context value {names} is lost from Ray's object store ({first_line(exc)}): the process "
            "that owned it died before the next step read it.",
            attribute=slots[0],
        ) from exc


def collect(
    ctx: Any, before: dict[str, tuple[int, Fingerprint]], step: str, threshold: float
) -> tuple[ContextChanges, dict[str, Pickled]]:
    """The step's changes, large payloads replaced by ``StoredValue``s, and those payloads by slot."""
    try:
        changed, removed = diff(ctx, before)
    except ContextPicklingError as exc:
        raise ContextPicklingError(
            f"Step '{step}': {exc.message}", attribute=exc.fields.get("attribute"), step=step
        ) from None
    pending: dict[str, Pickled] = {}
    values: dict[str, Any] = {}
    for key, pickled in changed.items():
        if pickled.nbytes >= threshold:
            pending[key] = pickled
            values[key] = StoredValue(key, pickled.nbytes, type(getattr(ctx, key)).__name__)
        else:
            values[key] = pickled
    records = _artifacts(ctx, step, threshold, pending)
    if records is not None:
        values["artifacts"] = records
    return ContextChanges(values, removed), pending


def _artifacts(
    ctx: Any, step: str, threshold: float, pending: dict[str, Pickled]
) -> dict[str, ArtifactRecord] | None:
    """New records for the artifact dirs this step opened and changed (None: none changed)."""
    opened = vars(ctx).get("_opened_artifacts") or ()
    records = dict(getattr(ctx, "artifacts", {}))
    changed = False
    for name in sorted(opened):
        path = artifact_path(ctx.runtime_ctx.work_dir, name)
        files = scan(path, name, step)
        old = records.get(name)
        if old is not None and old.files == files:
            continue
        packed = Pickled.of(pack(path, name, files, step))
        payload: Any = packed
        if packed.nbytes >= threshold:
            slot = f"artifact:{name}"
            pending[slot] = packed
            payload = StoredValue(slot, packed.nbytes, "artifact")
        records[name] = ArtifactRecord(name, files, step, payload)
        changed = True
    return records if changed else None


# -- driver side ---------------------------------------------------------------
def stored_in(changes: ContextChanges) -> list[StoredValue]:
    """The references in a step's changes that still wait for their payload."""
    found = [v for v in changes.values.values() if isinstance(v, StoredValue) and v.ref is None]
    for record in (changes.values.get("artifacts") or {}).values():
        payload = getattr(record, "payload", None)
        if isinstance(payload, StoredValue) and payload.ref is None:
            found.append(payload)
    return found


def store_large(ctx: Any, step: str, threshold: float) -> None:
    """Put the large values a context starts with into the object store (once, from the driver)."""
    import ray

    owner = type(ctx).__name__
    for key, value in tracked(ctx).items():
        if isinstance(value, ByReference):
            continue
        try:
            pickled = pickle_attribute(owner, key, value)
        except ContextPicklingError as exc:
            raise ContextPicklingError(f"Step '{step}': {exc.message}", attribute=key, step=step) from None
        if pickled.nbytes >= threshold:
            with store_errors(step, key, pickled.nbytes):
                ref = ray.put(pickled)
            setattr(ctx, key, StoredValue(key, pickled.nbytes, type(value).__name__, ref))


@contextmanager
def store_errors(step: str, what: str, nbytes: int) -> Iterator[None]:
    """An object store that cannot take a value fails the step, naming it and the size."""
    from ray.exceptions import ObjectStoreFullError, OutOfDiskError, RayTaskError

    try:
        yield
    except (ObjectStoreFullError, OutOfDiskError, RayTaskError) as exc:
        cause = exc.cause if isinstance(exc, RayTaskError) else exc
        if not isinstance(cause, ObjectStoreFullError | OutOfDiskError):
            raise
        raise ValueTransferError(
            f"Step '{step}': context value '{what}' ({_size(nbytes)}) does not fit in Ray's object "
            f"store: {type(cause).__name__}. Give the cluster more object store memory or disk for "
            "spilling, or keep less data in the context.",
            step=step,
            attribute=what,
            nbytes=nbytes,
        ) from exc


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} bytes"
    size = float(nbytes)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"
