"""Both examples, end to end on the local executor against the real local backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from synapse_ray import LocalExecutor, RunStatus, load_action
from synapse_ray.backend import BackendClient
from tests.conftest import REPO

SIMPLE = str(REPO / "examples/train_simple.py") + ":DigitsTrainAction"
STEPS = str(REPO / "examples/train_steps.py") + ":DigitsStepTrainAction"


def test_simple_example(digits_backend):
    server, dataset_id = digits_backend
    handle = LocalExecutor(backend=server.spec).submit(SIMPLE, {"dataset_id": dataset_id, "epochs": 5})
    result = handle.result(timeout=120)
    assert result["accuracy"] > 0.8
    snap = handle.progress()
    assert snap.overall == 100.0 and snap.status is RunStatus.SUCCEEDED
    assert set(snap.categories) == {"dataset", "train", "model_upload"}
    assert snap.metrics["train.epoch"] == 5
    with BackendClient(server.spec) as client:
        model = client.get_model(result["model_id"])
    assert model["name"] == "digits-sgd" and model["plugin"] == "digits_train"


def test_step_example_reports_every_category_and_uploads(digits_backend, tmp_path):
    server, dataset_id = digits_backend
    handle = LocalExecutor(backend=server.spec).submit(STEPS, {"dataset_id": dataset_id, "epochs": 5})
    result = handle.result(timeout=120)
    assert result["success"] and result["steps_executed"] == 4
    snap = handle.progress()
    assert snap.overall == 100.0
    assert {c: (p.current, p.total) for c, p in snap.categories.items()} == {
        "dataset": (2, 2),
        "preprocess": (8, 8),
        "train": (5, 5),
        "model_upload": (1, 1),
    }
    assert list(snap.steps) == ["load_dataset", "preprocess", "train", "upload_model"]
    assert snap.shards["preprocess"].done == 8 and snap.shards["preprocess"].step == "preprocess"
    with BackendClient(server.spec) as client:
        path = client.download_model(result["model_id"], tmp_path)
    assert path.name == "checkpoint.zip" and path.stat().st_size > 0


def test_step_example_bad_params_name_the_field():
    cls = load_action(STEPS)
    try:
        cls.validate_params({"dataset_id": 1, "epochs": 0})
    except ValueError as exc:
        assert "epochs: Input should be greater than or equal to 1" in str(exc)
    else:
        raise AssertionError("epochs=0 was accepted")


def test_cli_runs_the_step_example_against_a_running_backend(digits_backend):
    server, dataset_id = digits_backend
    env = {**os.environ, "SYNAPSE_HOST": server.url, "SYNAPSE_ACCESS_TOKEN": server.token}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synapse_ray.cli",
            "run",
            STEPS,
            "--params",
            json.dumps({"dataset_id": dataset_id, "epochs": 3}),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["success"] and isinstance(out["model_id"], int)
    assert "100.0% SUCCEEDED" in proc.stderr
    assert server.token not in proc.stdout + proc.stderr


def test_cli_embedded_backend_simple_example(tmp_path):
    """No SYNAPSE_HOST: the CLI starts the embedded backend in the given data dir."""
    npz = tmp_path / "digits.npz"
    subprocess.run([sys.executable, str(REPO / "examples/make_digits_dataset.py"), str(npz)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "synapse_ray.cli",
            "backend",
            "add-dataset",
            "digits",
            str(npz),
            "--data-dir",
            str(tmp_path / "home"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    dataset_id = int(add.stdout.strip())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "synapse_ray.cli",
            "run",
            SIMPLE,
            "--data-dir",
            str(tmp_path / "home"),
            "--params",
            json.dumps({"dataset_id": dataset_id, "epochs": 3}),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model_id"] >= 1
    assert "Using the embedded local backend at http://127.0.0.1:" in proc.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_backend_serve_then_run_from_a_second_shell(tmp_path):
    """`synapse-ray backend serve` in one process, `synapse-ray run` in another."""
    import time

    import httpx

    cli = [sys.executable, "-m", "synapse_ray.cli"]
    home = tmp_path / "home"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNAPSE_")}
    server = subprocess.Popen(
        [*cli, "backend", "serve", "--port", str(port), "--data-dir", str(home)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, timeout=1).status_code in (200, 401, 404):
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "backend serve did not start listening"
            time.sleep(0.1)
        token = subprocess.run(
            [*cli, "backend", "token", "--data-dir", str(home)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        npz = tmp_path / "digits.npz"
        subprocess.run([sys.executable, str(REPO / "examples/make_digits_dataset.py"), str(npz)], check=True)
        dataset_id = int(
            subprocess.run(
                [*cli, "backend", "add-dataset", "digits", str(npz), "--data-dir", str(home)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        run_env = {**env, "SYNAPSE_HOST": url, "SYNAPSE_ACCESS_TOKEN": token}
        proc = subprocess.run(
            [*cli, "run", STEPS, "--params", json.dumps({"dataset_id": dataset_id, "epochs": 2})],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert "embedded" not in proc.stderr  # it used the running server
        model_id = json.loads(proc.stdout)["model_id"]
        models = httpx.get(f"{url}models/{model_id}/", headers={"Synapse-Access-Token": f"Token {token}"})
        assert models.status_code == 200 and models.json()["plugin"] == "digits_train_steps"
        assert token not in proc.stdout + proc.stderr
        wrong = subprocess.run(
            [*cli, "run", STEPS, "--params", json.dumps({"dataset_id": dataset_id})],
            env={**run_env, "SYNAPSE_ACCESS_TOKEN": "wrong-token-123"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert wrong.returncode == 1 and "SYNAPSE_ACCESS_TOKEN" in wrong.stderr
        assert "wrong-token-123" not in wrong.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_step_example_preprocess_standardizes_and_augments_across_shards():
    """The preprocess step's work itself: each shard standardized with the training set's
    statistics, with augment a noisy copy of each row after the shard's own rows."""
    import numpy as np

    from synapse_ray import TrainContext

    example = sys.modules[load_action(STEPS).__module__]
    rng = np.random.default_rng(1)
    x, y, x_test = rng.random((40, 8)), np.arange(40) % 10, rng.random((10, 8))
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    for augment in (False, True):
        params = example.DigitsStepParams(dataset_id=1, shards=4, augment=augment)
        data = {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y[:10]}
        ctx = TrainContext(params=params, dataset=data)
        result = example.PreprocessStep().execute(ctx)
        out = ctx.dataset
        assert result.data == {"shards": 4, "rows": 80 if augment else 40}
        assert np.allclose(out["x_test"], (x_test - mean) / std)  # the training set's statistics
        if not augment:
            assert np.allclose(out["x_train"], (x - mean) / std) and (out["y_train"] == y).all()
            continue
        for i in range(4):  # shard i: its 10 rows, then their noisy copies
            rows, block = slice(10 * i, 10 * i + 10), slice(20 * i, 20 * i + 20)
            got_x, got_y = out["x_train"][block], out["y_train"][block]
            assert np.allclose(got_x[:10], (x[rows] - mean) / std)
            assert (got_y == np.concatenate([y[rows], y[rows]])).all()
            noisy = got_x[10:] * std + mean
            assert not np.allclose(noisy, x[rows]) and np.abs(noisy - x[rows]).max() < 0.5
            assert noisy.min() >= 0.0 and noisy.max() <= 1.0  # clipped to the pixel range
