"""Raw HTTP/1.1 on a socket: for requests httpx refuses to send (bad bytes, bad Host)."""

from __future__ import annotations

import socket
import time


def raw_request(port: int, head: bytes, body: bytes = b"", *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, CRLF-separated, no blank line) and ``body``;
    return the status and the whole answer (the connection is closed after one request)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer
