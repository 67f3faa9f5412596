"""Every client endpoint against the real local server over HTTP."""

from __future__ import annotations

import hashlib
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse_ray.backend import BackendClient, BackendValidationError, LocalPathError, NotFoundError
from synapse_ray.localbackend import LocalBackendServer, register_dataset


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def dataset(tmp_path: Path, server: LocalBackendServer) -> tuple[int, Path]:
    src = tmp_path / "dataset"
    (src / "images").mkdir(parents=True)
    (src / "labels.csv").write_text("id,label\n1,cat\n")
    (src / "images" / "a.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 10)
    return register_dataset(server.data_dir, "pets", [src]), src


def test_get_data_collection_shape(client: BackendClient, server: LocalBackendServer, dataset) -> None:
    collection_id, src = dataset
    collection = client.get_data_collection(collection_id)
    assert collection["id"] == collection_id and collection["name"] == "pets"
    specs = {s["name"]: s for s in collection["file_specifications"]}
    assert set(specs) == {"labels.csv", "images/a.png"}
    spec = specs["images/a.png"]
    assert set(spec) == {"name", "url", "size", "checksum"}
    assert spec["url"] == f"{server.url}files/data_collections/{collection_id}/images/a.png"
    assert spec["size"] == (src / "images" / "a.png").stat().st_size
    assert spec["checksum"] == _md5(src / "images" / "a.png")


def test_download_data_collection(client: BackendClient, tmp_path: Path, dataset) -> None:
    collection_id, src = dataset
    dest = tmp_path / "out"
    paths = client.download_data_collection(collection_id, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in paths) == ["images/a.png", "labels.csv"]
    for path in paths:
        assert path.read_bytes() == (src / path.relative_to(dest)).read_bytes()
    assert not list(dest.rglob("*.part"))
    # a collection dict works as well as an id
    again = client.download_data_collection(client.get_data_collection(collection_id), tmp_path / "o2")
    assert len(again) == 2


def test_missing_data_collection_is_not_found(client: BackendClient) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_data_collection(424242)
    assert info.value.status == 404
    assert "data collection 424242" in str(info.value)
    assert "data_collections/424242/" in info.value.url


def test_create_model_with_file_argument(client: BackendClient, make_file, tmp_path: Path) -> None:
    path = make_file("weights.pt", size=700_000)  # 3 chunks of 256 KiB
    model = client.create_model(
        {
            "name": "resnet",
            "plugin": "yolo",
            "version": "1.0",
            "checkpoint": 12,
            "configuration": {"lr": 0.1},
            "description": "first",
        },
        file=path,
    )
    assert model["name"] == "resnet" and model["plugin"] == "yolo" and model["version"] == "1.0"
    assert model["checkpoint"] == 12 and model["configuration"] == {"lr": 0.1}
    assert model["description"] == "first"
    assert model["file_name"] == "weights.pt" and model["file_size"] == 700_000
    assert model["checksum"] == _md5(path)
    assert "/files/models/" in model["file"] and model["file"].endswith("/weights.pt")
    assert client.get_model(model["id"]) == model
    downloaded = client.download_model(model["id"], tmp_path / "dl")
    assert downloaded == (tmp_path / "dl" / "weights.pt").resolve()
    assert downloaded.read_bytes() == path.read_bytes()


def test_create_model_older_shape_with_file_key(client: BackendClient, make_file) -> None:
    path = make_file("m.bin", size=1000)
    model = client.create_model({"file": str(path), "name": "legacy", "plugin": "p"})
    assert model["name"] == "legacy" and model["checksum"] == _md5(path)
    assert model["plugin"] == "p" and model["file_name"] == "m.bin"
    assert client.list_models(name="legacy") == [model]


def test_directory_is_zipped(client: BackendClient, tmp_path: Path) -> None:
    model_dir = tmp_path / "ckpt"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "config.json").write_text('{"a": 1}')
    (model_dir / "sub" / "w.bin").write_bytes(b"\x00\x01" * 5000)
    model = client.create_model({"name": "dir-model"}, file=model_dir)
    assert model["file_name"] == "ckpt.zip"
    path = client.download_model(model["id"], tmp_path / "dl")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["config.json", "sub/w.bin"]
        assert zf.read("sub/w.bin") == b"\x00\x01" * 5000


@pytest.mark.parametrize("kind", ["missing", "empty-file", "empty-dir"])
def test_bad_model_path_creates_nothing(
    client: BackendClient, server: LocalBackendServer, tmp_path: Path, kind: str
) -> None:
    path = tmp_path / kind
    if kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "empty-dir":
        (path / "nested").mkdir(parents=True)
    with pytest.raises(LocalPathError) as info:
        client.create_model({"name": "x"}, file=path)
    assert str(path) in str(info.value)
    assert client.list_models() == []
    assert server.store.count("models") == 0
    assert server.store.count("chunked_uploads") == 0
    assert server.faults.requests == [("GET", "/models/")]  # only the listing above


def test_model_without_name_is_refused_before_upload(
    client: BackendClient, server: LocalBackendServer, make_file
) -> None:
    with pytest.raises(BackendValidationError) as info:
        client.create_model({"plugin": "p"}, file=make_file())
    assert info.value.errors == {"name": ["This field is required."]}
    with pytest.raises(LocalPathError):
        client.create_model({"name": "no-file"})
    assert server.faults.requests == []


def test_server_validates_models(client: BackendClient) -> None:
    with pytest.raises(BackendValidationError) as info:
        client.request("POST", "models/", json={"chunked_upload": "nope"})
    assert set(info.value.errors) == {"name", "chunked_upload"}
    assert info.value.status == 400


def test_missing_model_is_not_found(client: BackendClient) -> None:
    with pytest.raises(NotFoundError, match="model 999"):
        client.get_model(999)


def test_jobs(client: BackendClient) -> None:
    job = client.create_job({"action": "train", "params": {"epochs": 2}})
    assert job["status"] == "pending" and job["action"] == "train" and job["params"] == {"epochs": 2}
    assert client.get_job(job["id"]) == job
    running = client.update_job(job["id"], status="running")
    assert running["status"] == "running" and "progress_record" not in running
    progressed = client.update_job(job["id"], progress_record={"train": 50})
    assert progressed["status"] == "running"  # untouched: only given fields are sent
    assert progressed["progress_record"] == {"train": 50}
    done = client.update_job(job["id"], status="succeeded", metrics_record={"acc": 0.9}, result={"m": 1})
    assert (done["status"], done["metrics_record"], done["result"]) == ("succeeded", {"acc": 0.9}, {"m": 1})
    assert done["progress_record"] == {"train": 50}
    with pytest.raises(BackendValidationError) as info:
        client.update_job(job["id"], status="exploded")
    assert "status" in info.value.errors
    with pytest.raises(NotFoundError, match="job 777"):
        client.get_job(777)
    with pytest.raises(NotFoundError):
        client.update_job(777, status="running")


def test_logs(client: BackendClient) -> None:
    job = client.create_job({"action": "train"})
    entries = [{"job": job["id"], "message": f"line {i}", "level": "info"} for i in range(3)]
    assert client.create_logs(entries) == {"count": 3}
    page = client.request("GET", "logs/", params={"job": job["id"]}).json()
    assert page["count"] == 3
    assert [e["message"] for e in page["results"]] == ["line 0", "line 1", "line 2"]
    with pytest.raises(BackendValidationError):
        client.request("POST", "logs/", json={"not": "a list"})


def test_tenant_header_is_sent_and_recorded(server: LocalBackendServer, spec) -> None:
    with BackendClient(spec.model_copy(update={"tenant": "acme"})) as tenant_client:
        job = tenant_client.create_job({"action": "x"})
    assert job["tenant"] == "acme"


def test_files_outside_store_are_not_served(client: BackendClient, server: LocalBackendServer) -> None:
    (server.data_dir / "secret.txt").write_text("x")
    with pytest.raises(NotFoundError):
        client.request("GET", "files/../secret.txt")
    with pytest.raises(NotFoundError):
        client.request("GET", "files/%2E%2E/secret.txt")


def test_concurrent_requests(
    server: LocalBackendServer, client: BackendClient, make_file: Callable[..., Path]
) -> None:
    """Requests overlap: while one is held in the server, others are answered."""
    from concurrent.futures import ThreadPoolExecutor

    held = client.create_job({"action": "held"})
    server.faults.clear()
    server.faults.add("stall", seconds=3.0, count=1, path_prefix=f"jobs/{held['id']}/")
    path = make_file("big.bin", size=4_000_000)
    with ThreadPoolExecutor(8) as pool:
        slow = pool.submit(client.get_job, held["id"])
        deadline = time.monotonic() + 10
        while ("GET", f"/jobs/{held['id']}/") not in server.faults.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        upload = pool.submit(client.create_model, {"name": "big"}, path)
        jobs = list(pool.map(lambda i: client.create_job({"action": f"a{i}"}), range(40)))
        model = upload.result(timeout=30)
        assert not slow.done()  # 41 requests answered while the held one was still in the server
        assert slow.result(timeout=30)["id"] == held["id"]
    assert len({j["id"] for j in jobs}) == 40
    assert model["checksum"] == _md5(path)


def test_list_endpoints(client: BackendClient, dataset, make_file) -> None:
    collection_id, _ = dataset
    collections = client.request("GET", "data_collections/").json()
    assert collections["count"] == 1 and collections["results"][0]["id"] == collection_id
    client.create_job({"action": "a"})
    client.create_job({"action": "b"})
    jobs = client.request("GET", "jobs/").json()
    assert [j["action"] for j in jobs["results"]] == ["a", "b"] and jobs["count"] == 2
    client.create_model({"name": "m1"}, file=make_file("a.bin", size=10))
    client.create_model({"name": "m2"}, file=make_file("b.bin", size=10))
    assert [m["name"] for m in client.list_models()] == ["m1", "m2"]
    assert [m["name"] for m in client.list_models(name="m2")] == ["m2"]


def test_start_embedded(tmp_path: Path) -> None:
    from synapse_ray.localbackend import start_embedded

    with start_embedded(tmp_path / "emb") as server:
        assert server.url.startswith("http://127.0.0.1:") and server.port > 0
        assert server.spec.base_url == server.url
        with BackendClient(server.spec) as c:
            assert c.create_job({"action": "x"})["status"] == "pending"
        assert not server.test_mode
    assert (tmp_path / "emb" / "backend.sqlite3").exists()
