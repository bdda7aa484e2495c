"""A lean MQTT 3.1.1 publisher for the benchmark's simulated gateways: QoS 1, nothing else.

paho-mqtt spends about 150 µs of Python per QoS 1 publish (message objects, locks, its own loop), so at
5,000 single-reading messages a second two paho publishers took most of a core of the two this machine
has, away from the broker, the service and InfluxDB under test. This client writes PUBLISH packets
straight to the socket, many per `sendall`, and counts PUBACKs in a reader thread: the broker and the
subscriber see exactly the same protocol (QoS 1, one packet id per message, a PUBACK for each), at a few
microseconds per message. Gateways in production use paho (`ingest/edge.py`); this is load generation.
"""

import socket
import struct
import threading


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class LitePublisher:
    """Connect, `publish(topic, payload)` QoS 1, `flush()` the buffered packets; `acked` counts PUBACKs."""

    def __init__(self, host: str, port: int, client_id: str, flush_bytes: int = 64 * 1024):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _utf8(client_id)  # clean session, no keepalive
        self.sock.sendall(b"\x10" + _remaining_length(len(body)) + body)
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: CONNACK {connack.hex()}")
        self.acked = 0
        self._buf: list[bytes] = []
        self._size = 0
        self._mid = 0
        self.flush_bytes = flush_bytes
        self._topics: dict[str, bytes] = {}
        self.error: str | None = None
        self._reader = threading.Thread(target=self._read_acks, name="bench-pubacks", daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
                n = len(pending) // 4 * 4
                for i in range(0, n, 4):  # PUBACK: 0x40, 2, packet id (the only packet the broker sends us)
                    if pending[i] != 0x40:
                        raise ConnectionError(f"unexpected packet type 0x{pending[i]:02x}")
                self.acked += n // 4
                pending = pending[n:]
        except OSError as e:
            self.error = str(e)
        except ConnectionError as e:
            self.error = str(e)

    def publish(self, topic: str, payload: bytes) -> None:
        t = self._topics.get(topic)
        if t is None:
            t = self._topics[topic] = _utf8(topic)
        self._mid = self._mid % 65535 + 1
        n = len(t) + 2 + len(payload)
        packet = b"".join((b"\x32", _remaining_length(n), t, struct.pack("!H", self._mid), payload))
        self._buf.append(packet)
        self._size += len(packet)
        if self._size >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.sock.sendall(b"".join(self._buf))
            self._buf.clear()
            self._size = 0

    def close(self) -> None:
        self.flush()
        try:
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        except OSError:
            pass
        self.sock.close()
