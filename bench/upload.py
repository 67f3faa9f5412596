"""Upload benchmark: ``create_model`` (chunked, resumable, md5-verified) vs one raw PUT.

Starts the local backend in a subprocess (so the server's CPU and memory are
not counted in this process), writes a test file, then uploads it both ways
to the same server and prints throughput, the ratio, and the peak RSS growth
of this (uploading) process during each upload.

    .venv/bin/python bench/upload.py --size-mb 256

Goals: ratio >= 0.8 and RSS growth <= 2 chunks. An info arm, "by hand", does the
least a correct upload must: one PUT hashed as it streams, complete (the API needs
the file's md5), create the model. It shows what our client adds over that.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import structlog

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from synapse_ray.backend import BackendClient, BackendSpec  # noqa: E402
from synapse_ray.backend.spec import DEFAULT_CHUNK_SIZE  # noqa: E402

MiB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Linux lets a process reset its own VmHWM (peak RSS) via clear_refs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _cpu_of(pid: int) -> float:
    """utime + stime of another process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(action: Callable[[], object], server_pid: int) -> tuple[float, float, float, float]:
    """(wall s, peak RSS growth MiB, client CPU s, server CPU s) of one call."""
    server_before = _cpu_of(server_pid)
    _reset_peak_rss()
    before = _proc_kib("VmRSS")
    cpu_before = time.process_time()
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    growth = max(0, _proc_kib("VmHWM") - before) / 1024
    return elapsed, growth, cpu, _cpu_of(server_pid) - server_before


def _write_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, MiB))
            fh.write(block)
            remaining -= len(block)


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while block := fh.read(MiB):
            yield block


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-W", "ignore::RuntimeWarning", "-m", "synapse_ray.cli.backend", "serve"]
    cmd += ["--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        token_file = data_dir / "token"
        if token_file.exists() and token_file.read_text().strip():
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
                return proc
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("server did not start within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--chunk-mb", type=int, default=DEFAULT_CHUNK_SIZE // MiB, help="default: ours")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each; the median is reported")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    parser.add_argument(
        "--workdir",
        default=None,
        help="where the file and the server's data dir go (e.g. /dev/shm to leave the disk out)",
    )
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))

    size = args.size_mb * MiB
    chunk = args.chunk_mb * MiB
    with tempfile.TemporaryDirectory(prefix="synapse-bench-", dir=args.workdir) as tmp:
        root = Path(tmp)
        source = root / "model.bin"
        _write_file(source, size)
        port = _free_port()
        server = _start_server(root / "data", port)
        try:
            token = (root / "data" / "token").read_text().strip()
            spec = BackendSpec(base_url=f"http://127.0.0.1:{port}/", token=token, chunk_size=chunk)
            client = BackendClient(spec)
            raw = httpx.Client(base_url=spec.base_url, timeout=spec.timeout(), trust_env=False)

            def chunked() -> object:
                return client.create_model({"name": "bench"}, file=source)

            def single_put() -> object:
                response = raw.put(
                    "chunked_upload/",
                    params={"filename": "raw.bin"},
                    content=_blocks(source),
                    headers={
                        **spec.headers(),
                        "Content-Range": f"bytes 0-{size - 1}/{size}",
                        "Content-Length": str(size),
                    },
                )
                response.raise_for_status()
                return response

            def by_hand() -> object:
                """The least a correct upload does: one PUT hashed as it streams, complete, model."""
                md5 = hashlib.md5()

                def hashed() -> Iterator[bytes]:
                    for block in _blocks(source):
                        md5.update(block)
                        yield block

                headers = spec.headers()
                put = raw.put(
                    "chunked_upload/",
                    params={"filename": "by_hand.bin"},
                    content=hashed(),
                    headers={
                        **headers,
                        "Content-Range": f"bytes 0-{size - 1}/{size}",
                        "Content-Length": str(size),
                    },
                )
                put.raise_for_status()
                upload_id = put.json()["id"]
                done = raw.post(
                    f"chunked_upload/{upload_id}/complete/", json={"md5": md5.hexdigest()}, headers=headers
                )
                done.raise_for_status()
                model = raw.post(
                    "models/", json={"name": "by hand", "chunked_upload": upload_id}, headers=headers
                )
                model.raise_for_status()
                return model

            single_put()  # warm up connections and the page cache
            results: dict[str, list[tuple[float, float, float, float]]] = {
                "raw PUT": [],
                "create_model": [],
                "by hand": [],
            }
            for i in range(args.repeat):
                order = [("raw PUT", single_put), ("create_model", chunked), ("by hand", by_hand)]
                for name, action in order[i % 3 :] + order[: i % 3]:  # each arm first in turn
                    results[name].append(_measure(action, server.pid))
                    if args.verbose:
                        seconds, _, cpu, server_cpu = results[name][-1]
                        print(
                            f"    run {i} {name:<13} {size / MiB / seconds:7.1f} MiB/s  "
                            f"client CPU {cpu:.2f} s  server CPU {server_cpu:.2f} s"
                        )
            client.close()
            raw.close()
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=30)

    where = args.workdir or tempfile.gettempdir()
    print(f"file {args.size_mb} MiB, chunk {args.chunk_mb} MiB, in {where}, median of {args.repeat} runs")
    throughput = {}
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        server_cpu = statistics.median(r[3] for r in runs)
        throughput[name] = size / MiB / seconds
        print(
            f"  {name:<13} {throughput[name]:7.1f} MiB/s  ({seconds:.2f} s; CPU client {cpu:.2f} s, "
            f"server {server_cpu:.2f} s)  peak RSS growth {rss:4.1f} MiB ({rss / args.chunk_mb:.2f} chunks)"
        )
    ratio = throughput["create_model"] / throughput["raw PUT"]
    print(f"  ratio create_model / raw PUT = {ratio:.2f} (goal >= 0.8)")
    print(
        f"  info: create_model / by hand (one PUT hashed as it streams, complete, model) = "
        f"{throughput['create_model'] / throughput['by hand']:.2f}"
    )


if __name__ == "__main__":
    main()
