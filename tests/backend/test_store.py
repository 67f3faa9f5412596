"""The store without a server: dataset registration, data dir defaults, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse_ray.backend import LocalPathError
from synapse_ray.localbackend import Store, default_data_dir, register_dataset


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SYNAPSE_RAY_HOME", raising=False)
    assert default_data_dir() == Path.home() / ".synapse_ray"
    monkeypatch.setenv("SYNAPSE_RAY_HOME", str(tmp_path / "h"))
    assert default_data_dir() == tmp_path / "h"


def test_register_dataset_copies_files(tmp_path: Path) -> None:
    src = tmp_path / "a.txt"
    src.write_text("one")
    data_dir = tmp_path / "d"
    collection_id = register_dataset(data_dir, "ds", [src])
    src.write_text("changed later")  # the store keeps its own copy
    store = Store(data_dir)
    try:
        record = store.get_data_collection(collection_id)
    finally:
        store.close()
    assert record is not None and record["name"] == "ds"
    (spec,) = record["files"]
    assert (data_dir / "files" / spec["path"]).read_text() == "one"
    assert spec["size"] == 3


def test_register_dataset_refuses_bad_input(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "same.txt").write_text("1")
    (tmp_path / "y" / "same.txt").write_text("2")
    with pytest.raises(LocalPathError, match="same.txt"):
        register_dataset(tmp_path / "d", "dup", [tmp_path / "x", tmp_path / "y"])
    with pytest.raises(LocalPathError, match="no such file"):
        register_dataset(tmp_path / "d", "missing", [tmp_path / "nope"])
    with pytest.raises(LocalPathError, match="name"):
        register_dataset(tmp_path / "d", " ", [tmp_path / "x"])
    store = Store(tmp_path / "d")
    try:
        assert store.count("data_collections") == 0
    finally:
        store.close()


def test_old_keys_and_abandoned_uploads_are_pruned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_idempotent("k", "POST", "/jobs/", 201, b"{}", "application/json")
    store.create_upload("old", "f.bin", 10, 5)
    store.upload_path("old").write_bytes(b"12345")
    with store.db:
        store.db.execute("UPDATE idempotency SET created = '2000-01-01T00:00:00.000Z'")
        store.db.execute("UPDATE chunked_uploads SET created = '2000-01-01T00:00:00.000Z'")
    store.close()
    again = Store(tmp_path)
    try:
        assert again.get_idempotent("k", "POST", "/jobs/") is None
        assert again.get_upload("old") is None
        assert not again.upload_path("old").exists()
    finally:
        again.close()
