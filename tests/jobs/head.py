"""A real ``ray start --head`` on 127.0.0.1 with its own ports, temp dir and auth token.

Started in its own process session, stopped by killing that session only (never
``ray stop``, which would stop every Ray on the machine), and any
current-cluster pointer naming its port is removed. Used by the Jobs tests and
``bench/submit.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PORT_FLAGS = (
    "--port",
    "--dashboard-port",
    "--ray-client-server-port",
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class RayHead:
    def __init__(self, num_cpus: int = 4, token_auth: bool = True) -> None:
        self.num_cpus = num_cpus
        self.token_auth = token_auth
        self.temp_dir = Path(tempfile.mkdtemp(prefix="srj-", dir="/tmp"))
        self.token = secrets.token_hex(16) if token_auth else None
        self.token_path = self.temp_dir / "auth_token"
        ports = free_ports(len(PORT_FLAGS) + 1)
        self.ports = dict(zip(PORT_FLAGS, ports, strict=False))
        base = 20000 + (ports[-1] % 20000)
        while any(base <= port <= base + 200 for port in ports):  # Ray refuses overlapping ranges
            base = 20000 + (base + 211) % 20000
        self.min_worker_port = base
        self.gcs_address = f"127.0.0.1:{self.ports['--port']}"
        self.dashboard = f"http://127.0.0.1:{self.ports['--dashboard-port']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The cluster's environment: loopback only, our venv's python first on PATH."""
        env = dict(os.environ)
        for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_TOKEN"):
            env.pop(name, None)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if self.token_auth:
            env["RAY_AUTH_MODE"] = "token"
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        else:
            env["RAY_AUTH_MODE"] = "disabled"
            env.pop("RAY_AUTH_TOKEN_PATH", None)
        return env

    def start(self, timeout: float = 90.0) -> RayHead:
        if self.token:
            self.token_path.write_text(self.token)
            self.token_path.chmod(0o600)
        args = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
        args += ["--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1"]
        args += ["--include-dashboard", "true", "--num-cpus", str(self.num_cpus)]
        args += ["--temp-dir", str(self.temp_dir), "--disable-usage-stats"]
        for flag, port in self.ports.items():
            args += [flag, str(port)]
        args += [
            "--min-worker-port",
            str(self.min_worker_port),
            "--max-worker-port",
            str(self.min_worker_port + 200),
        ]
        log = open(self.temp_dir / "ray-start.log", "wb")  # noqa: SIM115 - lives as long as the head
        self.proc = subprocess.Popen(
            args, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = (self.temp_dir / "ray-start.log").read_text()[-3000:]
                self.stop()
                raise RuntimeError(f"ray start exited: {text}")
            if self._jobs_api_up():
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ray start --head did not come up in {timeout} s")

    def _jobs_api_up(self) -> bool:
        req = urllib.request.Request(f"{self.dashboard}/api/version")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=1) as resp:  # noqa: S310 - loopback
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Kill what we started (our process session), and a pointer naming our port."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(3)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc = None
        pointer = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        try:
            if str(self.ports["--port"]) in pointer.read_text():
                pointer.unlink()
        except OSError:
            pass
        for _ in range(3):  # a process that was still exiting may have written one more file
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            if not self.temp_dir.exists():
                break
            time.sleep(0.5)
