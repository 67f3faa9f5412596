"""Ray Data inside a step: run a ``ray.data.Dataset`` pipeline with its progress in ours.

A step builds a pipeline (read, ``map_batches``, ...) and calls
``materialize_dataset(ctx, ds, category="decode")``. The streaming executor
runs it as usual; each output block that comes out counts its rows under the
step's category through the run's reporter (so the aggregator, the snapshot
and the live display show it), and Ray Data's own progress bars are turned
off for this dataset. The result is a ``MaterializedDataset`` whose blocks sit
in the object store: the step keeps only references, never the rows.

Needs Ray Data's dependencies (``pip install 'synapse-ray[data]'``). The
dataset's blocks are owned by the process that ran the pipeline: hand the
materialized dataset to a later step that runs in the same worker (task mode,
or steps sharing one actor), or consume it in this step.

Built on ``Dataset.iter_internal_ref_bundles`` and the same plan classes
``Dataset.materialize`` uses (Ray is pinned to one minor version).
"""

from __future__ import annotations

from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.runtime.context import RuntimeContext

DEFAULT_CATEGORY = "rows"


def materialize_dataset(
    ctx: Any, ds: Any, *, category: str | None = None, total_rows: int | None = None
) -> Any:
    """Execute ``ds``, reporting rows done of ``total_rows`` (default: Ray Data's own estimate
    from the plan's metadata, when it has one) under ``category``; return it materialized."""
    try:
        from ray.data import Dataset
    except ImportError as exc:
        raise ConfigurationError(
            f"Ray Data is not installed ({exc}); install it with: pip install 'synapse-ray[data]'"
        ) from None
    runtime = getattr(ctx, "runtime_ctx", ctx)
    if not isinstance(runtime, RuntimeContext):
        raise ConfigurationError(f"materialize_dataset needs a step context or a RuntimeContext, got {ctx!r}")
    if not isinstance(ds, Dataset):
        raise ConfigurationError(f"materialize_dataset needs a ray.data.Dataset, got {type(ds).__name__}")
    if total_rows is not None and (not isinstance(total_rows, int) or total_rows < 0):
        raise ConfigurationError(f"total_rows must be an integer >= 0 (or None), got {total_rows!r}")
    category = category or DEFAULT_CATEGORY
    ds.context.enable_progress_bars = False  # its rows show in our progress instead
    total = total_rows if total_rows is not None else estimate_rows(ds)
    bundles: list[Any] = []
    rows = 0
    for bundle in ds.iter_internal_ref_bundles():
        runtime.raise_if_cancelled()
        bundles.append(bundle)
        rows += bundle.num_rows() or 0
        if total:
            runtime.progress.update(category, min(rows, total), total)
    runtime.progress.update(category, rows, rows if rows else 1)  # the exact count, now known
    return _materialized(ds, bundles)


def estimate_rows(ds: Any) -> int | None:
    """Rows the pipeline will produce, from metadata alone (nothing runs).

    When the plan's own count is unknown (a ``map_batches`` may change it), the source's
    count is the guess: right for one-to-one transforms, the usual preprocessing case.
    """
    try:
        count = ds._meta_count()
        if count is not None:
            return int(count)
        op = ds._logical_plan.dag
        while op.input_dependencies:
            op = op.input_dependencies[0]
        source = op.infer_metadata().num_rows
        return int(source) if source is not None else None
    except Exception:  # noqa: BLE001 - an estimate only: without one, the percent shows at the end
        return None


def _materialized(ds: Any, bundles: list[Any]) -> Any:
    """A ``MaterializedDataset`` over blocks already computed (as ``Dataset.materialize`` builds it)."""
    from ray.data._internal.execution.interfaces import RefBundle
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators import InputData
    from ray.data.dataset import MaterializedDataset

    ref_bundles = [
        RefBundle(blocks=[entry], owns_blocks=False, schema=bundle.schema)
        for bundle in bundles
        for entry in bundle.blocks
    ]
    out = MaterializedDataset(
        LogicalPlan(InputData(input_data=ref_bundles), ds.context), ds.context, ds._raw_stats()
    )
    out._execute()  # fills the cache from the input blocks; nothing is recomputed
    return out
