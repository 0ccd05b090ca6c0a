"""A loopback TCP forwarder that a test can shut: one process's way to a server, cut at a
chosen moment while every other process still reaches it.

Why a gate rather than stopping the server: the split-roles test needs one ingest replica
that has folded records it can never make durable (so it cannot have acked their messages)
when it is killed. Timing a SIGKILL between a fold and the next checkpoint (every 0.5 s) is a
race the checkpoint sometimes wins; a replica whose writes all fail cannot win it. Stopping
the emulator would stall the other replicas too, and a request already in its socket buffer
would still land once it resumed. Bytes that reach a shut gate are dropped, never forwarded.
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpGate:
    """Forwards 127.0.0.1:`port` to 127.0.0.1:`upstream_port` until `shut()`; from then on
    every open connection is cut and new ones are closed as soon as they are accepted, until
    `reopen()`."""

    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = int(self._server.getsockname()[1])
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._shut = threading.Event()
        self._blackholed = threading.Event()
        self._stopped = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, name="tcp-gate", daemon=True)
        self._acceptor.start()

    def shut(self) -> None:
        """Cut every connection now and refuse the next ones."""
        self._shut.set()
        with self._lock:
            for conn in self._open:
                _cut(conn)
            self._open.clear()

    def blackhole(self) -> None:
        """Drop every byte from now on but keep every connection open and accept new ones, as
        a firewall that drops packets does: nothing tells a client its peer has gone."""
        self._blackholed.set()

    def reopen(self) -> None:
        """Forward new connections again (the endpoint is back after an outage)."""
        self._shut.clear()
        self._blackholed.clear()

    def close(self) -> None:
        self.shut()
        self._stopped.set()
        self._acceptor.join(timeout=5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client = self._server.accept()[0]
            except TimeoutError:
                continue
            except OSError:
                return
            if self._shut.is_set():
                _cut(client)
                continue
            try:
                upstream = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                _cut(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._shut.is_set():
                    _cut(client)
                    _cut(upstream)
                    continue
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        """Copy one direction until either side closes or the gate shuts; bytes read once
        the gate is shut are dropped."""
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                if self._shut.is_set():
                    break
                if not self._blackholed.is_set():
                    target.sendall(chunk)
        _cut(source)
        _cut(target)


def _cut(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()
