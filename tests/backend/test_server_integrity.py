"""Crash safety, locking, leftovers and local safety of the local backend."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from synapse_ray.backend import BackendClient, BackendValidationError, LocalPathError, ServerError
from synapse_ray.backend.upload import chunked_upload
from synapse_ray.cli.backend import backend as backend_cli
from synapse_ray.localbackend import LocalBackendServer, Store, load_or_create_token, register_dataset
from synapse_ray.localbackend.server import _connectable

# -- the SQLite write lock ------------------------------------------------------------------


def test_a_held_write_lock_does_not_freeze_the_server(
    server: LocalBackendServer, client: BackendClient
) -> None:
    other = sqlite3.connect(server.data_dir / "backend.sqlite3", isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # what another process's write transaction holds
    result: list[object] = []
    writer = threading.Thread(target=lambda: result.append(client.create_job({"action": "w"})))
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while ("POST", "/jobs/") not in server.faults.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        answer = httpx.get(f"{server.url}jobs/", timeout=5)  # no token: no database needed
        assert answer.status_code == 401
        assert time.monotonic() - started < 1.0
    finally:
        other.execute("ROLLBACK")
        other.close()
    writer.join(timeout=10)
    assert result and result[0]["action"] == "w"  # the waiting write went through afterwards


def test_add_dataset_copies_outside_the_write_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil as shutil_module

    data_dir = tmp_path / "d"
    Store(data_dir).close()
    src = tmp_path / "f.bin"
    src.write_bytes(b"x" * 1000)
    lock_free_during_copy: list[bool] = []
    real_copy = shutil_module.copyfile

    def copy_and_probe(a: object, b: object) -> object:
        probe = sqlite3.connect(data_dir / "backend.sqlite3", isolation_level=None, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            lock_free_during_copy.append(True)
        except sqlite3.OperationalError:
            lock_free_during_copy.append(False)
        finally:
            probe.close()
        return real_copy(a, b)

    monkeypatch.setattr("synapse_ray.localbackend.store.shutil.copyfile", copy_and_probe)
    collection_id = register_dataset(data_dir, "ds", [src])
    assert lock_free_during_copy == [True]
    assert (
        data_dir / "files" / "data_collections" / str(collection_id) / "f.bin"
    ).read_bytes() == b"x" * 1000


# -- crashes around POST models/ -------------------------------------------------------------


def test_crash_between_file_move_and_commit_is_recovered_on_retry(
    server: LocalBackendServer, client: BackendClient, make_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_file("m.bin", size=5000)
    expected = path.read_bytes()
    upload = chunked_upload(client, path, "m.bin")
    real = Store._record_model
    calls: list[int] = []

    def crash_once(self: Store, *args: object) -> int:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("simulated crash after the move")
        return real(self, *args)

    monkeypatch.setattr(Store, "_record_model", crash_once)
    with pytest.raises(ServerError):
        client.request("POST", "models/", json={"name": "m", "chunked_upload": upload["id"]})
    model = client.request("POST", "models/", json={"name": "m", "chunked_upload": upload["id"]}).json()
    assert server.store.count("models") == 1
    out = client.download_model(model["id"], path.parent / "dl")
    assert out.read_bytes() == expected


def test_crash_before_the_idempotency_record_still_returns_the_model(
    server: LocalBackendServer, client: BackendClient, make_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = chunked_upload(client, make_file(size=5000), "m.bin")
    real = Store.put_idempotent
    calls: list[str] = []

    def crash_on_models(self: Store, key: str, method: str, path: str, *args: object) -> None:
        calls.append(path)
        if path == "/models/" and calls.count("/models/") == 1:
            raise OSError("simulated crash after the model commit")
        real(self, key, method, path, *args)

    monkeypatch.setattr(Store, "put_idempotent", crash_on_models)
    headers = {"Idempotency-Key": "k-123"}
    body = {"name": "m", "chunked_upload": upload["id"]}
    with pytest.raises(ServerError):
        client.request("POST", "models/", json=body, headers=headers)
    again = client.request("POST", "models/", json=body, headers=headers)
    assert again.status_code == 201 and server.store.count("models") == 1
    other = client.request(
        "POST", "models/", json=body, headers={"Idempotency-Key": "k-999"}, allow_status=(400,)
    )
    assert other.status_code == 400 and "consumed" in other.text  # a new key does not get a second model


# -- idempotency keys ---------------------------------------------------------------------------


def test_a_key_reused_with_another_body_or_tenant_is_422(
    server: LocalBackendServer, client: BackendClient
) -> None:
    headers = {"Idempotency-Key": "same"}
    first = client.request("POST", "jobs/", json={"action": "a"}, headers=headers).json()
    replay = client.request("POST", "jobs/", json={"action": "a"}, headers=headers)
    assert replay.json() == first and replay.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(BackendValidationError) as info:
        client.request("POST", "jobs/", json={"action": "b"}, headers=headers)
    assert info.value.status == 422
    with pytest.raises(BackendValidationError):
        client.request("POST", "jobs/", json={"action": "a"}, headers={**headers, "Synapse-Tenant": "t2"})
    assert server.store.count("jobs") == 1


def test_keys_are_pruned_while_the_server_runs(tmp_path: Path) -> None:
    with LocalBackendServer(data_dir=tmp_path / "d", prune_interval=0.1) as srv:
        with BackendClient(srv.spec) as client:
            client.create_job({"action": "a"})
        db = sqlite3.connect(srv.data_dir / "backend.sqlite3", timeout=5)
        with db:
            db.execute("UPDATE idempotency SET created = '2000-01-01T00:00:00.000Z'")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if db.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0] == 0:
                break
            time.sleep(0.05)
        remaining = db.execute("SELECT COUNT(*) FROM idempotency").fetchone()[0]
        db.close()
    assert remaining == 0


# -- upload verification and leftovers --------------------------------------------------------


def test_complete_needs_an_md5_and_a_failed_upload_stays_failed(client: BackendClient) -> None:
    first = client.request(
        "PUT",
        "chunked_upload/",
        params={"filename": "a.bin"},
        content=b"abc",
        headers={"Content-Range": "bytes 0-2/3"},
    ).json()
    url = f"chunked_upload/{first['id']}/complete/"
    with pytest.raises(BackendValidationError) as info:
        client.request("POST", url, json={})
    assert "md5" in info.value.errors
    with pytest.raises(BackendValidationError):
        client.request("POST", url, json={"md5": "0" * 32})  # wrong: the upload fails
    with pytest.raises(BackendValidationError, match="failed"):
        client.request("POST", url, json={"md5": "900150983cd24fb0d6963f7d28e17f72"})  # right, too late
    with pytest.raises(BackendValidationError):
        client.request("POST", "models/", json={"name": "m", "chunked_upload": first["id"]})


def _age(path: Path, days: float = 30) -> None:
    old = time.time() - days * 86400
    os.utime(path, (old, old))


def test_every_kind_of_leftover_is_pruned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    orphan = store.upload_path("no-record")
    orphan.write_bytes(b"half a first chunk")
    _age(orphan)
    fresh_orphan = store.upload_path("in-flight")
    fresh_orphan.write_bytes(b"a first chunk being written right now")
    for upload_id, status in (("done", "complete"), ("bad", "failed"), ("open", "uploading")):
        store.create_upload(upload_id, "f.bin", 10, 10)
        store.set_upload(upload_id, status=status)
        store.upload_path(upload_id).write_bytes(b"0123456789")
    moved = store.model_dir("done") / "f.bin"  # a crash after the move, before the record
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"0123456789")
    staging = store.files_dir / "data_collections" / ".staging-abc"
    staging.mkdir(parents=True)
    _age(staging)
    with store.db:
        store.db.execute("UPDATE chunked_uploads SET created = '2000-01-01T00:00:00.000Z'")
    store.prune()
    assert store.count("chunked_uploads") == 0
    assert sorted(p.name for p in store.uploads_dir.iterdir()) == ["in-flight.part"]
    assert not store.model_dir("done").exists() and not staging.exists()
    store.close()


# -- local safety ------------------------------------------------------------------------------


def test_links_out_of_a_dataset_dir_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "outside.txt"
    secret.write_text("not for the dataset")
    src = tmp_path / "data"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (src / "inner.txt").symlink_to(src / "a.txt")
    (src / "leak.txt").symlink_to(secret)
    with pytest.raises(LocalPathError, match="--follow-symlinks"):
        register_dataset(tmp_path / "d", "ds", [src])
    assert Store(tmp_path / "d").count("data_collections") == 0
    assert register_dataset(tmp_path / "d", "ds", [src], follow_symlinks=True) == 1


def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "home"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    (data_dir / "token").write_text("existing-token\n")
    (data_dir / "token").chmod(0o644)
    assert load_or_create_token(data_dir) == "existing-token"
    assert data_dir.stat().st_mode & 0o777 == 0o700
    assert (data_dir / "token").stat().st_mode & 0o777 == 0o600


def test_serve_on_a_public_interface_needs_allow_remote(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        backend_cli, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "--allow-remote" in result.output and "cleartext" in result.output
    assert not (tmp_path / "d").exists()  # refused before anything started
    assert _connectable("0.0.0.0") == "127.0.0.1" and _connectable("::") == "::1"


def test_printed_export_lines_survive_a_hostile_data_dir(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data_dir = tmp_path / f"my data $(touch {marker})"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synapse_ray.cli.backend",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum("export " in line for line in lines) < 2:
            lines.append(proc.stderr.readline() if proc.stderr else "")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    exports = [line.strip() for line in lines if line.strip().startswith("export ")]
    assert len(exports) == 2
    # Run the token line with the command replaced by an echo of its arguments.
    script = (
        exports[1].replace("synapse-ray backend token", "printf %s") + '; printf %s "$SYNAPSE_ACCESS_TOKEN"'
    )
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert shown == f"--data-dir{data_dir}"
    assert not marker.exists()
