"""``synapse-ray backend``: add-dataset and token in-process, serve as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

import synapse_ray
from synapse_ray.backend import BackendClient, BackendSpec
from synapse_ray.cli.backend import backend
from synapse_ray.localbackend import LocalBackendServer

REPO_ROOT = Path(synapse_ray.__file__).resolve().parents[1]


def test_add_dataset_prints_only_the_id(tmp_path: Path) -> None:
    data_dir = tmp_path / "home"
    (tmp_path / "a.csv").write_text("x\n1\n")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "b.png").write_bytes(b"png")
    runner = CliRunner()
    first = runner.invoke(
        backend,
        ["add-dataset", "pets", str(tmp_path / "a.csv"), str(tmp_path / "imgs"), "--data-dir", str(data_dir)],
    )
    assert first.exit_code == 0, first.output
    assert first.stdout == "1\n"
    second = runner.invoke(
        backend, ["add-dataset", "more", str(tmp_path / "a.csv"), "--data-dir", str(data_dir)]
    )
    assert second.stdout == "2\n"
    with LocalBackendServer(data_dir=data_dir) as server, BackendClient(server.spec) as client:
        names = [f["name"] for f in client.get_data_collection(1)["file_specifications"]]
    assert names == ["a.csv", "b.png"]


def test_add_dataset_uses_synapse_ray_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SYNAPSE_RAY_HOME", str(tmp_path / "env-home"))
    (tmp_path / "a.csv").write_text("x")
    result = CliRunner().invoke(backend, ["add-dataset", "d", str(tmp_path / "a.csv")])
    assert result.exit_code == 0 and result.stdout == "1\n"
    assert (tmp_path / "env-home" / "backend.sqlite3").exists()


def test_add_dataset_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(
        backend, ["add-dataset", "d", str(tmp_path / "nope"), "--data-dir", str(tmp_path)]
    )
    assert missing.exit_code != 0 and "nope" in missing.output
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(backend, ["add-dataset", "d", str(tmp_path / "empty"), "--data-dir", str(tmp_path)])
    assert empty.exit_code == 1 and "without files" in empty.output


def test_token_is_created_once_and_printed(tmp_path: Path) -> None:
    runner = CliRunner()
    first = runner.invoke(backend, ["token", "--data-dir", str(tmp_path)])
    second = runner.invoke(backend, ["token", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and first.stdout == second.stdout
    token = first.stdout.strip()
    assert len(token) >= 32 and first.stdout.count("\n") == 1
    assert (tmp_path / "token").read_text().strip() == token
    assert stat.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_in_a_subprocess(tmp_path: Path) -> None:
    port = _free_port()
    data_dir = tmp_path / "served"
    env = {**os.environ, "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-W",
            "ignore::RuntimeWarning",
            "-m",
            "synapse_ray.cli.backend",
            "serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            token_file = data_dir / "token"
            if token_file.exists() and token_file.read_text().strip():
                headers = {"Synapse-Access-Token": f"Token {token_file.read_text().strip()}"}
                try:
                    status = httpx.get(
                        f"{url}models/", headers=headers, trust_env=False, timeout=2
                    ).status_code
                except httpx.TransportError:
                    status = None
                if status == 200:
                    break
            time.sleep(0.05)
        assert status == 200, proc.stderr.read() if proc.poll() is not None else "server never answered"
        spec = BackendSpec(base_url=url, token=(data_dir / "token").read_text().strip())
        with BackendClient(spec) as client:
            assert client.create_job({"action": "served"})["id"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"listening on {url}" in err
    assert "export SYNAPSE_HOST=" in err
    assert spec.token is not None and spec.token.get_secret_value() not in err
