"""Ray Data inside a step: run a ``ray.data.Dataset`` pipeline with its progress in ours.

A step builds a pipeline (read, ``map_batches``, ...) and calls
``materialize_dataset(ctx, ds, category="decode")``. The streaming executor
runs it as usual; each output block that comes out counts its rows under the
step's category through the run's reporter (so the aggregator, the snapshot
and the live display show it; when Ray cannot estimate the rows, blocks done
of the blocks expected show instead until the exact rows at the end), and Ray
Data's own progress bars are turned off for this dataset. The result is a
``MaterializedDataset`` whose blocks sit in the object store: the step keeps
only references, never the rows.

Needs Ray Data's dependencies (``pip install 'synapse-ray[data]'``). The
dataset's blocks are owned by the process that ran the pipeline: in task mode
later steps run there; in actor mode the step actor that leaves one in the
context is kept until the run ends (``owns_blocks``), so later steps on other
actors can read it.

Built on ``Dataset._execute_to_iterator`` (what ``iter_internal_ref_bundles`` runs,
with the executor kept so it is shut down when the step stops early) and the same
plan classes ``Dataset.materialize`` uses (Ray is pinned to one minor version).
"""

from __future__ import annotations

import sys
from typing import Any

from synapse_ray.errors import ConfigurationError
from synapse_ray.runtime.context import RuntimeContext

DEFAULT_CATEGORY = "rows"


def materialize_dataset(
    ctx: Any, ds: Any, *, category: str | None = None, total_rows: int | None = None
) -> Any:
    """Execute ``ds``, reporting rows done of ``total_rows`` (default: Ray Data's own estimate
    from the plan's metadata, when it has one) under ``category``; return it materialized.

    When Ray cannot estimate the rows (a read whose files' row counts are unknown until
    read), the category counts output blocks of the blocks expected while it runs, then
    the exact rows at the end, so the step is never blind until its last block.
    """
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
    planned_blocks = None if total else estimate_blocks(ds)
    # the executor is ours to stop: its iterator shuts it down only once exhausted, so a
    # step that is cancelled (or fails) midway would leave the pipeline running until GC
    bundle_iter, _, executor = ds._execute_to_iterator(capture_executor=False)
    bundles: list[Any] = []
    rows = 0
    failure: BaseException | None = None
    try:
        for bundle in bundle_iter:
            runtime.raise_if_cancelled()
            bundles.append(bundle)
            rows += bundle.num_rows() or 0
            if total:
                runtime.progress.update(category, min(rows, total), total)
            else:
                _report_blocks(runtime, category, len(bundles), executor, planned_blocks)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        _shutdown(executor, failure)
    runtime.progress.update(category, rows, rows if rows else 1)  # the exact count, now known
    return _materialized(ds, bundles)


def _report_blocks(runtime: Any, category: str, done: int, executor: Any, planned: int | None) -> None:
    """Without a row estimate: blocks done out of the blocks Ray Data expects.

    The running executor's own count for the last operator (what Ray Data's progress
    bar shows; it refines as tasks finish) comes first, else the plan's. Either may be
    low, so a running pipeline never shows its category complete: the exact row count
    replaces this at the end.
    """
    expected = _expected_outputs(executor) or planned
    if expected and expected > 1:
        runtime.progress.update(category, min(done, expected - 1), expected)


def _expected_outputs(executor: Any) -> int | None:
    try:
        last_op = list(executor._topology)[-1]
        count = last_op.num_outputs_total()
        return int(count) if count else None
    except Exception:  # noqa: BLE001 - no executor (a cached result) or not started: use the plan
        return None


def _shutdown(executor: Any, failure: BaseException | None) -> None:
    """Stop the pipeline's executor now (a no-op when the iterator ran to its end).

    ``force``: on a cancel or an error its running tasks are stopped, not left to finish.
    """
    if executor is None:  # the dataset was already materialized: nothing ran
        return
    try:
        executor.shutdown(force=True, exception=failure if isinstance(failure, Exception) else None)
    except Exception:  # noqa: BLE001 - the pipeline's own error (or result) is what counts
        if failure is None:
            raise


def estimate_blocks(ds: Any) -> int | None:
    """Output blocks the plan expects, from metadata alone (nothing runs); None if unknown."""
    try:
        count = ds._logical_plan.initial_num_blocks()
        return int(count) if count else None
    except Exception:  # noqa: BLE001 - an estimate only
        return None


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


def owns_blocks(value: Any) -> bool:
    """A materialized dataset: its blocks live in the object store, owned by the process
    that ran its pipeline, and go when that process does. (Checked without importing Ray
    Data: a process that never imported it holds none.)"""
    module = sys.modules.get("ray.data.dataset")
    return module is not None and isinstance(value, module.MaterializedDataset)
