"""The Jobs parts that need no cluster: the signed channel, packaging, address and auth."""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path

import pytest

from synapse_ray import BackendSpec, ConfigurationError, TargetError
from synapse_ray.executors.ray.jobs_channel import (
    FINAL,
    MARK,
    PROGRESS,
    STARTED,
    RecordReader,
    RecordWriter,
    new_key,
)
from synapse_ray.executors.ray.jobs_client import auth_headers, resolve_jobs_address
from synapse_ray.executors.ray.jobs_packaging import (
    DEFAULT_EXCLUDES,
    package_name,
    preflight,
    read_private_package,
    read_requirements,
    remove_private_package,
    scan,
    write_private_package,
)


def records(key: str, sid: str, *items: tuple[str, dict]) -> str:
    out = io.StringIO()
    writer = RecordWriter(key, sid, out)
    for kind, body in items:
        writer.emit(kind, body)
    return out.getvalue()


def test_records_round_trip_and_user_lines_pass_through():
    key = new_key()
    out = io.StringIO()
    writer = RecordWriter(key, "s1", out)
    out.write("hello\n")
    writer.emit(STARTED, {"run_id": "r"})
    writer.emit(PROGRESS, {"overall": 50.0})
    out.write("partial print without newline")
    writer.emit(FINAL, {"status": "SUCCEEDED", "result": 3})
    text = out.getvalue()
    reader = RecordReader(key, "s1")
    lines = []
    for i in range(0, len(text), 7):  # any chunking
        lines += reader.feed(text[i : i + 7])
    lines += reader.flush()
    assert lines == ["hello", "partial print without newline"]
    assert reader.started == {"run_id": "r"} and reader.final == {"status": "SUCCEEDED", "result": 3}
    assert reader.progress == {"overall": 50.0} and reader.rejected == 0


def test_forged_replayed_and_foreign_records_are_refused():
    key = new_key()
    genuine = records(key, "s1", (FINAL, {"status": "SUCCEEDED", "result": 1}))
    forged_key = records(new_key(), "s1", (FINAL, {"status": "SUCCEEDED", "result": -1}))
    other_submission = records(key, "s2", (FINAL, {"status": "SUCCEEDED", "result": -2}))
    tampered = genuine.replace(genuine.split()[4], genuine.split()[4][:-4] + "AAA=")
    fake = f"{MARK} v1 9 final eyJyZXN1bHQiOiAtM30= {'0' * 64}\n"
    worker_prefixed = f"(run_action pid=1) {fake}"
    reader = RecordReader(key, "s1")
    shown = reader.feed(forged_key + other_submission + tampered + fake + worker_prefixed)
    assert reader.final is None and reader.rejected == 5
    assert shown == ["(run_action pid=1) "]  # the user's prefix stays, the record-shaped rest does not
    reader.feed(genuine)
    assert reader.final == {"status": "SUCCEEDED", "result": 1}
    reader.feed(genuine)  # the same record again: a replay
    assert reader.rejected == 6


def test_without_a_key_nothing_verifies():
    text = records(new_key(), "s1", (FINAL, {"status": "SUCCEEDED"}))
    reader = RecordReader(None, "s1")
    assert reader.feed(text) == [] and reader.final is None and reader.rejected == 1
    assert "key" not in repr(RecordWriter("secret-key", "s1"))


def test_private_package_is_0600_unique_and_read_once(monkeypatch):
    spec = BackendSpec(base_url="http://127.0.0.1:1/", token="tok-123")
    pkg = write_private_package("synapse-abc", {"x": 1}, spec, "k", {"run_id": "abc"})
    try:
        assert pkg.name == package_name("synapse-abc") == "synapse_job_synapse_abc"
        private = pkg / "private.json"
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        monkeypatch.syspath_prepend(str(pkg.parent))
        data = read_private_package(pkg.name)
        assert data["params"] == {"x": 1} and data["backend"]["token"] == "tok-123" and data["key"] == "k"
        assert BackendSpec.model_validate(data["backend"]) == spec
        assert not private.exists()  # deleted once read
        with pytest.raises(ConfigurationError, match="already read"):
            read_private_package(pkg.name)
    finally:
        remove_private_package(pkg)
        sys.modules.pop(pkg.name, None)
    assert not pkg.parent.exists()


def test_scan_applies_default_user_and_gitignore_excludes(tmp_path):
    (tmp_path / "train.py").write_text("x = 1\n")
    for folder in (".git", ".venv", "__pycache__", "data", "outputs"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "blob").write_bytes(b"0" * 1000)
    (tmp_path / ".gitignore").write_text("outputs/\n")
    (tmp_path / "notes.tmp").write_text("scratch")
    report = scan(tmp_path, [*DEFAULT_EXCLUDES, "*.tmp"])
    assert sorted(rel for _, rel in report.largest) == [".gitignore", "train.py"]
    with pytest.raises(ConfigurationError, match=r"too large.*train\.py"):
        preflight(tmp_path, DEFAULT_EXCLUDES, limit=5)


def test_requirements_lines_and_an_empty_file(tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("# pinned\nnumpy==1.26  # comment\n\nrich\n")
    assert read_requirements(req) == ["numpy==1.26", "rich"]
    req.write_text("# nothing\n\n")
    assert read_requirements(req) == []
    with pytest.raises(ConfigurationError, match="requirements file not found"):
        read_requirements(tmp_path / "missing.txt")


def test_empty_requirements_add_no_pip_and_targets_must_be_inside_the_working_dir(tmp_path):
    from synapse_ray.executors.ray.jobs import RayJobExecutor

    (tmp_path / "requirements.txt").write_text("\n")
    runner = RayJobExecutor(working_dir=tmp_path)
    assert "pip" not in runner._runtime_env()
    (tmp_path / "requirements.txt").write_text("rich\n")
    assert runner._runtime_env()["pip"] == ["rich"]
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "act.py").write_text("")
    assert runner._target_in_working_dir(str(tmp_path / "pkg" / "act.py") + ":A") == "pkg/act.py:A"
    assert runner._target_in_working_dir("pkg/act.py:A") == "pkg/act.py:A"
    assert runner._target_in_working_dir("some.module:A") == "some.module:A"
    with pytest.raises(TargetError, match="outside working_dir"):
        runner._target_in_working_dir(f"{Path(__file__)}:A")
    with pytest.raises(TargetError, match="not found inside working_dir"):
        runner._target_in_working_dir("pkg/nope.py:A")


def test_secrets_in_runtime_env_are_refused(tmp_path):
    from synapse_ray.executors.ray.jobs import RayJobExecutor

    with pytest.raises(ConfigurationError, match="must not carry secrets"):
        RayJobExecutor(working_dir=tmp_path, runtime_env={"env_vars": {"SYNAPSE_ACCESS_TOKEN": "x"}})


def test_jobs_address_and_auth_header_sources(monkeypatch, tmp_path):
    for name in (
        "RAY_API_SERVER_ADDRESS",
        "RAY_ADDRESS",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "RAY_AUTH_MODE",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="RAY_API_SERVER_ADDRESS"):
        resolve_jobs_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a GCS address is not the Jobs API
    with pytest.raises(ConfigurationError):
        resolve_jobs_address(None)
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265")
    assert resolve_jobs_address(None) == "http://10.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "127.0.0.1:8265")
    assert resolve_jobs_address(None) == "http://127.0.0.1:8265"
    assert resolve_jobs_address("https://ray.example.com/") == "https://ray.example.com"

    assert auth_headers() == {}
    token_file = tmp_path / "tok"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
    assert auth_headers() == {"Authorization": "Bearer from-file"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_headers() == {"Authorization": "Bearer from-env"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="RAY_AUTH_TOKEN_PATH"):
        auth_headers()


def test_final_record_body_round_trips_a_typed_error():
    from synapse_ray.entrypoint import _error_data, _pickled
    from synapse_ray.errors import StepError
    from synapse_ray.executors.ray.jobs_source import _rebuild_error

    err = StepError("Step 'train' failed: nan loss", step="train", attempt=2)
    final = {"status": "FAILED", "error": _error_data(err), "error_pickle": _pickled(err)}
    rebuilt = _rebuild_error(json.loads(json.dumps(final)))
    assert isinstance(rebuilt, StepError) and rebuilt.step == "train" and rebuilt.attempt == 2
    final["error_pickle"] = None  # the JSON form alone still gives our type back
    rebuilt = _rebuild_error(final)
    assert type(rebuilt) is StepError and rebuilt.step == "train" and "nan loss" in str(rebuilt)
