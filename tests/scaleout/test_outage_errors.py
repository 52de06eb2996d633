"""While PostgreSQL is unreachable, no answer of an API replica names the infrastructure: not the
database's address, port or name, not the driver, not its message.

The replica reaches the (shared) PostgreSQL through a TCP proxy of the test's own; closing the
proxy is the outage: first refused connections, then a database that accepts and never answers.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.acceptance.server import submit, wait_for_status
from tests.scaleout.conftest import Cluster

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


class Proxy:
    """127.0.0.1:<port> forwarded to ``target``; ``refuse()`` closes it (and every connection
    through it); ``hang()`` listens again on the same port but never forwards a byte."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._forward = True
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._sockets.append(client)
                forward = self._forward
            if not forward:
                continue  # accepted, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _stop_listening(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        self._listener.close()
        self._thread.join(5)

    def refuse(self) -> None:
        self._stop_listening()
        self._close_all()

    def hang(self) -> None:
        with self._lock:
            self._forward = False
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop_listening()
        self._close_all()


@pytest.fixture
def proxied(cluster: Cluster) -> Iterator[tuple[Cluster, Proxy, str]]:
    """The cluster's database URL through a proxy; the URL's database name, to look for."""
    url = urlsplit(cluster.env["INTERPRETER_DATABASE_URL"])
    assert url.hostname is not None and url.port is not None
    proxy = Proxy((url.hostname, url.port))
    netloc = url.netloc.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    cluster.env["INTERPRETER_DATABASE_URL"] = urlunsplit(url._replace(netloc=netloc))
    try:
        yield cluster, proxy, url.path.strip("/")
    finally:
        proxy.close()


ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/jobs/{job}/status", {}),
    ("GET", "/jobs/{job}/status", {"params": {"wait": 1}}),
    ("GET", "/jobs/{unknown}/status", {}),
    ("GET", "/results/{job}", {}),
    ("GET", "/jobs/{job}/results", {}),
    ("GET", "/jobs", {}),
    ("GET", "/jobs", {"params": {"status": "running", "limit": 5}}),
    ("POST", "/execute", {"json": {"code": "print(1)", "language": "python"}}),
    ("POST", "/jobs/{job}/cancel", {}),
    ("DELETE", "/jobs/{job}", {}),
    ("GET", "/health", {}),
    ("GET", "/metrics", {}),
    ("GET", "/languages", {}),
    ("GET", "/sandbox", {}),
]


def every_route(client: httpx.Client, job_id: str) -> tuple[list[httpx.Response], list[str]]:
    """Each route's answer, and the routes that gave none within the client's timeout."""
    unknown = str(uuid.uuid4())
    responses, silent = [], []
    for method, path, kwargs in ROUTES:
        url = path.format(job=job_id, unknown=unknown)
        try:
            response = client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            silent.append(f"{method} {url}")
            continue
        print(method, url, response.status_code, response.elapsed, response.text[:200])
        responses.append(response)
    return responses, silent


def leaks(responses: list[httpx.Response], words: list[str]) -> list[str]:
    found = []
    for response in responses:
        text = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
        for word in words:
            # a port is a number of its own, not digits inside a figure (/metrics: 0.0054321)
            pattern = (
                rf"(?<![\w.]){re.escape(word)}(?![\w.])" if word.isdigit() else re.escape(word)
            )
            if re.search(pattern, text, re.IGNORECASE):
                found.append(
                    f"{response.request.method} {response.request.url.path} "
                    f"{response.status_code}: {word!r} in {response.text[:300]!r}"
                )
    return found


def test_no_answer_names_the_database_while_it_is_unreachable(
    proxied: tuple[Cluster, Proxy, str],
) -> None:
    cluster, proxy, database = proxied
    api = cluster.api(INTERPRETER_DATABASE_TIMEOUT="3")  # refused routes answer within it
    client = api.client(timeout=35)
    job_id = submit(client, "import time; time.sleep(30)")  # no worker: it stays pending
    wait_for_status(client, job_id, {"pending"}, deadline_s=5)
    words = ["127.0.0.1", str(proxy.port), "5432", database, "psycopg", "connection", "Errno"]
    words.append("sqlalchemy")  # (the queue's backend and database kinds are no secret)

    proxy.refuse()
    refused, silent = every_route(client, job_id)
    assert silent == []
    assert any(r.status_code == 503 for r in refused), [r.status_code for r in refused]
    assert leaks(refused, words) == []

    # A database that accepts and never answers: /health must still answer, and say nothing
    # of it. (Other routes wait for the store's own timeouts there: see the report.)
    proxy.hang()
    started = time.monotonic()
    health = client.get("/health", timeout=30)
    print("health while the database hangs:", health.status_code, health.text[:300])
    assert time.monotonic() - started < 30
    assert leaks([health], words) == []
