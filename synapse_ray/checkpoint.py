"""Resolving a train action's checkpoint (``get_checkpoint()``), as upstream does.

Order: a checkpoint already on the run's context (``RuntimeContext.checkpoint``,
handed in by whoever started the run), else ``params.checkpoint`` as a model
id: the model is fetched with the action's ``get_model``, its archive
downloaded (checksum-verified) and extracted once into a cache directory
keyed by the model's id and checksum. The answer is upstream's
``{category, path, id, name}`` (``category`` defaults to ``'base'``).
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from synapse_ray.errors import ConfigurationError


def cache_root() -> Path:
    """Where extracted checkpoints are kept (``SYNAPSE_RAY_CACHE_DIR``, else the temp dir)."""
    base = os.environ.get("SYNAPSE_RAY_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "synapse-ray-cache")
    return Path(base)


def resolve_checkpoint(action: Any) -> dict[str, Any] | None:
    ready = action.runtime_ctx.checkpoint
    if ready is not None:
        return dict(ready)
    model_id = getattr(action.params, "checkpoint", None)
    if model_id is None:
        return None
    model = action.get_model(model_id)
    if not isinstance(model, dict) or not model.get("file"):
        raise ConfigurationError(f"Checkpoint model {model_id!r} has no file to start from")
    tag = str(model.get("checksum") or "")[:12] or "nochecksum"
    target = cache_root() / "models" / f"{model.get('id', model_id)}-{tag}"
    if not target.exists():
        _materialize(action, model, target)
    return {
        "category": model.get("category") or "base",
        "path": target,
        "id": model.get("id", model_id),
        "name": model.get("name"),
    }


def _materialize(action: Any, model: dict[str, Any], target: Path) -> None:
    """Download (unless ``file`` is a local path) and extract into ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=target.parent))
    try:
        source = Path(str(model["file"]))
        if not source.is_file():
            source = action.client.download(
                model["file"], work / "download", name=model.get("file_name"), checksum=model.get("checksum")
            )
        unpacked = work / "unpacked"
        extract_archive(source, unpacked)
        try:
            os.replace(unpacked, target)
        except OSError:
            if not target.exists():  # another run won the race: theirs is the same content
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def extract_archive(source: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest``; any other file is copied in as is.

    Members that would land outside ``dest`` are refused.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            for name in archive.namelist():
                _check_inside(root, name)
            archive.extractall(dest)
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            archive.extractall(dest, filter="data")
    else:
        shutil.copy2(source, dest / source.name)


def _check_inside(root: Path, name: str) -> None:
    if not (root / name).resolve().is_relative_to(root):
        raise ConfigurationError(f"Checkpoint archive member {name!r} would be written outside its directory")
