"""A stand-in for the ultralytics package (not installed in tests).

``YOLO`` keeps callbacks by name and ``train`` fires them as ultralytics'
trainer does (``on_train_epoch_end`` and ``on_fit_epoch_end`` each epoch,
``on_train_end`` at the end), writing the files ultralytics writes
(``weights/best.pt``, ``results.csv``, validation sample images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class _Trainer:
    def __init__(self, epochs: int, save_dir: Path) -> None:
        self.epoch = 0
        self.epochs = epochs
        self.save_dir = save_dir
        self.loss_items: list[float] | None = None
        self.metrics: dict[str, float] = {}


class YOLO:
    def __init__(self, model: str = "yolov8n.pt") -> None:
        self.model = model
        self.callbacks: dict[str, list[Any]] = {}

    def add_callback(self, event: str, func: Any) -> None:
        self.callbacks.setdefault(event, []).append(func)

    def _fire(self, event: str, trainer: _Trainer) -> None:
        for func in self.callbacks.get(event, []):
            func(trainer)

    def train(self, data: str = "", epochs: int = 100, project: str = ".", **kwargs: Any) -> dict[str, Any]:
        save_dir = Path(project) / "train"
        (save_dir / "weights").mkdir(parents=True, exist_ok=True)
        trainer = _Trainer(epochs, save_dir)
        for epoch in range(epochs):
            trainer.epoch = epoch
            trainer.loss_items = [1.0 / (epoch + 1), 0.5 / (epoch + 1), 0.25 / (epoch + 1)]
            self._fire("on_train_epoch_end", trainer)
            trainer.metrics = {
                "metrics/mAP50(B)": 0.1 * (epoch + 1),
                "metrics/mAP50-95(B)": 0.05 * (epoch + 1),
            }
            (save_dir / "val_batch0_pred.jpg").write_bytes(b"\xff\xd8jpeg" + bytes([epoch]))
            self._fire("on_fit_epoch_end", trainer)
        (save_dir / "weights" / "best.pt").write_bytes(b"best-weights")
        (save_dir / "results.csv").write_text("epoch,loss\n")
        self._fire("on_train_end", trainer)
        return {"save_dir": str(save_dir)}
