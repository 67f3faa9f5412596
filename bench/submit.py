"""Ray Jobs overhead: ``RayJobExecutor`` / ``synapse-ray submit`` against raw Ray Jobs.

Starts its own ``ray start --head`` on 127.0.0.1 (own ports, temp dir, token
auth; the same helper the tests use), then, in alternating rounds, for a
trivial action and the equivalent plain Ray script (one task doubling a
number) measures:

- submit -> RUNNING: from the submit call until the status reads RUNNING
  (ours: ``handle.status()``; raw: ``JobSubmissionClient.get_job_status``),
  both polled every 50 ms;
- submit -> SUCCEEDED with the result in hand: ours ``handle.result()``, raw
  polling ``get_job_status`` then ``get_job_logs``;
- the CLIs end to end: ``synapse-ray submit -q`` against ``ray job submit``
  (both wait for the end; process start-up included).

Prints medians and the ratios ours / raw. Goal: <= 1.2x.

    .venv/bin/python bench/submit.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RAW_SCRIPT = """\
import json, ray
ray.init()

@ray.remote
def double(v):
    return {"value": v * 2}

print(json.dumps(ray.get(double.remote(21))))
"""

ACTION = """\
from pydantic import BaseModel
from synapse_ray import BaseTrainAction


class P(BaseModel):
    value: int = 21


class Double(BaseTrainAction[P]):
    action_name = "bench_double"

    def execute(self):
        return {"value": self.params.value * 2}
"""


def poll_until(predicate, timeout: float = 300.0, interval: float = 0.05) -> float:
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("no progress")
        time.sleep(interval)
    return time.perf_counter()


def raw_once(client, workdir: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    sid = client.submit_job(entrypoint="python raw_job.py", runtime_env={"working_dir": str(workdir)})
    running = poll_until(
        lambda: (
            str(client.get_job_status(sid)) in ("JobStatus.RUNNING", "RUNNING")
            or client.get_job_status(sid).is_terminal()
        )
    )
    poll_until(lambda: client.get_job_status(sid).is_terminal())
    assert '"value": 42' in client.get_job_logs(sid)
    return running - t0, time.perf_counter() - t0


def ours_once(workdir: Path) -> tuple[float, float]:
    from synapse_ray.executors.ray.jobs import RayJobExecutor
    from synapse_ray.runtime.status import RunStatus

    t0 = time.perf_counter()
    handle = RayJobExecutor(working_dir=workdir).submit("action.py:Double", {"value": 21})
    running = poll_until(lambda: handle.status() is not RunStatus.PENDING)
    assert handle.result(timeout=300) == {"value": 42}
    return running - t0, time.perf_counter() - t0


def cli_once(args: list[str], env: dict[str, str], workdir: Path) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(args, env=env, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and '"value": 42' in out.stdout, out.stderr[-2000:]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from ray.job_submission import JobSubmissionClient

    from tests.jobs.head import RayHead

    workdir = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    (workdir / "raw_job.py").write_text(RAW_SCRIPT)
    (workdir / "action.py").write_text(ACTION)
    head = RayHead(num_cpus=2).start()
    try:
        os.environ["RAY_API_SERVER_ADDRESS"] = head.dashboard
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(head.token_path)
        client = JobSubmissionClient(head.dashboard, headers={"Authorization": f"Bearer {head.token}"})
        bin_dir = Path(sys.executable).parent
        cli_env = {**head.env(), "RAY_API_SERVER_ADDRESS": head.dashboard, "RAY_ADDRESS": head.dashboard}
        raw_cli = [str(bin_dir / "ray"), "job", "submit", "--working-dir", ".", "--", "python", "raw_job.py"]
        our_cli = [str(bin_dir / "synapse-ray"), "submit", "action.py:Double", "-q"]
        raw_once(client, workdir)  # warm-up: worker pool, package cache
        ours_once(workdir)
        rows: dict[str, list[float]] = {
            k: [] for k in ("raw_run", "raw_done", "our_run", "our_done", "raw_cli", "our_cli")
        }
        for _ in range(args.rounds):
            r_run, r_done = raw_once(client, workdir)
            o_run, o_done = ours_once(workdir)
            rows["raw_run"].append(r_run)
            rows["raw_done"].append(r_done)
            rows["our_run"].append(o_run)
            rows["our_done"].append(o_done)
            rows["raw_cli"].append(cli_once(raw_cli, cli_env, workdir))
            rows["our_cli"].append(cli_once(our_cli, cli_env, workdir))
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"rounds={args.rounds} (medians, seconds)")
        print(
            f"submit -> RUNNING    raw {med['raw_run']:.2f}  ours {med['our_run']:.2f}  "
            f"ratio {med['our_run'] / med['raw_run']:.2f}x"
        )
        print(
            f"submit -> SUCCEEDED  raw {med['raw_done']:.2f}  ours {med['our_done']:.2f}  "
            f"ratio {med['our_done'] / med['raw_done']:.2f}x"
        )
        print(
            f"CLI end to end       ray job submit {med['raw_cli']:.2f}  "
            f"synapse-ray submit {med['our_cli']:.2f}  "
            f"ratio {med['our_cli'] / med['raw_cli']:.2f}x"
        )
    finally:
        head.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
