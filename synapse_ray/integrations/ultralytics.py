"""Autolog for ultralytics YOLO: per-epoch progress and metrics, artifacts at the end.

``enable(action)`` makes the action the target and patches ``YOLO`` once:
every model built afterwards gets our callbacks (``on_train_epoch_end``,
``on_fit_epoch_end``, ``on_train_end``), and ``YOLO.train`` records the epoch
count it is called with. The callbacks read only plain trainer attributes
(``epoch``, ``epochs``, ``loss_items``, ``metrics``, ``save_dir``), so any
trainer that fires the same callback names works with them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from synapse_ray.runtime.autolog import AutologState, current, set_current

DEFAULT_EPOCHS = 100  # ultralytics' own default
_patched: dict[str, Any] = {}


def on_train_epoch_end(trainer: Any) -> None:
    """Progress ``epoch/epochs`` (category ``train``) and the epoch's losses."""
    state = current()
    if state is None:
        return
    epoch = int(trainer.epoch) + 1
    total = state.total_epochs or int(getattr(trainer, "epochs", 0) or DEFAULT_EPOCHS)
    state.action.set_progress(epoch, total, "train")
    losses = getattr(trainer, "loss_items", None)
    if losses is None:
        return
    if hasattr(losses, "cpu"):
        losses = losses.cpu().numpy()
    values = [float(v) for v in losses]
    names = ("box_loss", "cls_loss", "dfl_loss")
    state.action.set_metrics({"epoch": epoch, **dict(zip(names, values, strict=False))}, category="train")


def on_fit_epoch_end(trainer: Any) -> None:
    """Validation mAP of the epoch, and its prediction sample images."""
    state = current()
    metrics = getattr(trainer, "metrics", None)
    if state is None or not metrics:
        return
    epoch = int(trainer.epoch) + 1
    state.action.set_metrics(
        {
            "epoch": epoch,
            "mAP50": metrics.get("metrics/mAP50(B)", 0),
            "mAP50_95": metrics.get("metrics/mAP50-95(B)", 0),
        },
        category="validation",
    )
    save_dir = Path(trainer.save_dir)
    for index in range(3):
        image = save_dir / f"val_batch{index}_pred.jpg"
        if image.exists():
            state.action.log("validation_samples", {"group": epoch, "index": index}, file=str(image))


def on_train_end(trainer: Any) -> None:
    """The best weights and the results table, logged with their files; the weights dir is noted."""
    state = current()
    if state is None:
        return
    save_dir = Path(trainer.save_dir)
    best = save_dir / "weights" / "best.pt"
    if best.exists():
        state.action.log("model_weights", {"type": "best"}, file=str(best))
        state.extra["model_path"] = str(best.parent)
    results = save_dir / "results.csv"
    if results.exists():
        state.action.log("training_results", {}, file=str(results))


CALLBACKS = {
    "on_train_epoch_end": on_train_epoch_end,
    "on_fit_epoch_end": on_fit_epoch_end,
    "on_train_end": on_train_end,
}


def attach(model: Any) -> None:
    """Add our callbacks to a model (or trainer) that has ``add_callback``."""
    for name, callback in CALLBACKS.items():
        model.add_callback(name, callback)


def enable(action: Any) -> None:
    try:
        from ultralytics import YOLO
    except ImportError:
        raise ImportError("autolog('ultralytics') needs ultralytics: pip install ultralytics") from None
    set_current(AutologState(action=action))
    _patch(YOLO)


def _patch(yolo: Any) -> None:
    """Wrap ``YOLO.__init__`` and ``YOLO.train`` once per class."""
    if _patched.get("cls") is yolo:
        return
    init, train = yolo.__init__, yolo.train

    @functools.wraps(init)
    def patched_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if current() is not None:
            attach(self)

    @functools.wraps(train)
    def patched_train(self: Any, *args: Any, **kwargs: Any) -> Any:
        state = current()
        if state is not None:
            epochs = kwargs.get("epochs")
            data = kwargs.get("data")
            if epochs is None and isinstance(data, dict):
                epochs = data.get("epochs")
            state.total_epochs = int(epochs) if epochs is not None else DEFAULT_EPOCHS
        return train(self, *args, **kwargs)

    yolo.__init__, yolo.train = patched_init, patched_train
    _patched["cls"] = yolo
