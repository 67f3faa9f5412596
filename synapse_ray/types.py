"""Type markers an action declares as ``input_type`` / ``output_type``.

Upstream plugins write ``input_type = YOLODataset`` and ``output_type =
ModelWeights``. They are declarations only: nothing here converts data. Kept so
those plugins import and so pipelines can check that one action's output fits
the next one's input (``is_compatible_with``).
"""

from __future__ import annotations

from typing import ClassVar


class DataType:
    """Base marker. Two markers fit when one is (a subclass of) the other."""

    name: ClassVar[str] = "data"
    format: ClassVar[str | None] = None
    description: ClassVar[str] = ""

    @classmethod
    def is_compatible_with(cls, other: type[DataType]) -> bool:
        return issubclass(cls, other) or issubclass(other, cls)


class Dataset(DataType):
    name = "dataset"
    description = "Generic dataset"


class DMDataset(Dataset):
    name = "dm_dataset"
    format = "dm"
    description = "Datamaker format dataset"


class DMv1Dataset(DMDataset):
    name = "dm_v1_dataset"
    format = "dm_v1"
    description = "Datamaker v1 dataset"


class DMv2Dataset(DMDataset):
    name = "dm_v2_dataset"
    format = "dm_v2"
    description = "Datamaker v2 dataset"


class YOLODataset(Dataset):
    name = "yolo_dataset"
    format = "yolo"
    description = "YOLO dataset with dataset.yaml"


class COCODataset(Dataset):
    name = "coco_dataset"
    format = "coco"
    description = "COCO dataset"


class PascalVOCDataset(Dataset):
    name = "pascal_voc_dataset"
    format = "pascal"
    description = "Pascal VOC dataset"


class Model(DataType):
    name = "model"
    description = "Generic model"


class ModelWeights(Model):
    name = "model_weights"
    format = "weights"
    description = "Trained model weights"


class ONNXModel(Model):
    name = "onnx_model"
    format = "onnx"
    description = "ONNX model"


class TensorRTModel(Model):
    name = "tensorrt_model"
    format = "tensorrt"
    description = "TensorRT model"


class Result(DataType):
    name = "result"
    description = "Generic result"


class TestResults(Result):
    name = "test_results"
    format = "metrics"
    description = "Test results with metrics"
    __test__ = False  # not a pytest test class


class InferenceResults(Result):
    name = "inference_results"
    format = "predictions"
    description = "Inference predictions"


__all__ = [
    "COCODataset",
    "DMDataset",
    "DMv1Dataset",
    "DMv2Dataset",
    "DataType",
    "Dataset",
    "InferenceResults",
    "Model",
    "ModelWeights",
    "ONNXModel",
    "PascalVOCDataset",
    "Result",
    "TensorRTModel",
    "TestResults",
    "YOLODataset",
]
