"""A small WebSocket client (RFC 6455) for the integration tests, standard library only.

It performs the opening handshake (with subprotocols and extra headers), sends masked text
frames, reads fragmented messages, answers pings, and reads a close frame's code and reason.
Every read is bounded by a timeout.

    ws = WSClient.connect("127.0.0.1", port, "/db/main", protocols=["sirannon.v1"])
    ws.send_json({"type": "query", "id": "1", "sql": "SELECT 1"})
    msg = ws.recv_json(timeout=5)
    ws.close()
"""
import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP status instead of 101."""

    def __init__(self, status, headers, body):
        Exception.__init__(self, "upgrade refused with HTTP %d: %r" % (status, body[:200]))
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError:
            return None


class Closed(Exception):
    """The connection closed; code and reason come from the server's close frame (None when the
    socket ended without one)."""

    def __init__(self, code, reason):
        Exception.__init__(self, "closed: %s %r" % (code, reason))
        self.code = code
        self.reason = reason


class WSClient:
    def __init__(self, sock, protocol, headers, leftover=b""):
        self.sock = sock
        self.protocol = protocol          # the subprotocol the server selected, or None
        self.headers = headers            # the 101 response headers (lower-case names)
        self.buf = bytearray(leftover)
        self.close_code = None
        self.close_reason = None
        self.closed = False
        self.pongs = []                   # payloads of the pongs received

    # ---- handshake ----

    @classmethod
    def connect(cls, host, port, path, protocols=None, headers=None, timeout=10.0,
                protocol_header=None):
        """Open a connection. protocols: a list offered in Sec-WebSocket-Protocol (joined with
        ', '); protocol_header: a raw header value instead (to test odd spacing)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path,
                 "Host: %s:%d" % (host, port),
                 "Upgrade: websocket",
                 "Connection: Upgrade",
                 "Sec-WebSocket-Key: %s" % key,
                 "Sec-WebSocket-Version: 13"]
        if protocol_header is not None:
            lines.append("Sec-WebSocket-Protocol: %s" % protocol_header)
        elif protocols:
            lines.append("Sec-WebSocket-Protocol: %s" % ", ".join(protocols))
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        deadline = time.time() + timeout
        while b"\r\n\r\n" not in data:
            if time.time() > deadline:
                sock.close()
                raise TimeoutError("no handshake answer")
            sock.settimeout(max(0.01, deadline - time.time()))
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                raise Closed(None, "connection closed during the handshake")
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        status_line, *hlines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        hdrs = {}
        for ln in hlines:
            if ":" in ln:
                k, v = ln.split(":", 1)
                hdrs[k.strip().lower()] = v.strip()
        if status != 101:
            body = rest
            length = int(hdrs.get("content-length", "-1"))
            while length >= 0 and len(body) < length and time.time() < deadline:
                sock.settimeout(max(0.01, deadline - time.time()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            sock.close()
            raise HandshakeRefused(status, hdrs, body)
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if hdrs.get("sec-websocket-accept") != accept:
            sock.close()
            raise ValueError("bad Sec-WebSocket-Accept")
        return cls(sock, hdrs.get("sec-websocket-protocol"), hdrs, rest)

    # ---- sending ----

    def send_frame(self, opcode, payload, fin=True):
        header = bytearray([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header.append(0x80 | n)
        elif n < 65536:
            header.append(0x80 | 126)
            header += struct.pack("!H", n)
        else:
            header.append(0x80 | 127)
            header += struct.pack("!Q", n)
        mask = os.urandom(4)
        header += mask
        masked = bytearray(payload)
        for i in range(n):
            masked[i] ^= mask[i & 3]
        self.sock.sendall(bytes(header) + bytes(masked))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text.encode("utf-8") if isinstance(text, str) else text)

    def send_json(self, obj):
        self.send_text(json.dumps(obj))

    def send_fragmented(self, text, pieces=3):
        data = text.encode("utf-8")
        step = max(1, len(data) // pieces)
        chunks = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        for i, c in enumerate(chunks):
            self.send_frame(OP_TEXT if i == 0 else OP_CONT, c, fin=(i == len(chunks) - 1))

    # ---- receiving ----

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(262144)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed(self.close_code, self.close_reason)
            self.buf += chunk

    def _frame(self, deadline):
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        if b1 & 0x80:
            raise ValueError("the server masked a frame")
        self._fill(off + n, deadline)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv(self, timeout=10.0):
        """The next data message as text (bytes for a binary one). Pings are answered; a close
        frame raises Closed with its code and reason (after echoing the close)."""
        deadline = time.time() + timeout
        parts, op0 = [], None
        while True:
            fin, op, payload = self._frame(deadline)
            if op == OP_PING:
                self.send_frame(OP_PONG, payload)
                continue
            if op == OP_PONG:
                self.pongs.append(payload)
                continue
            if op == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                self.close_reason = payload[2:].decode("utf-8", "replace")
                try:
                    self.send_frame(OP_CLOSE, payload[:2])
                except OSError:
                    pass
                self.closed = True
                self.sock.close()
                raise Closed(self.close_code, self.close_reason)
            if op in (OP_TEXT, OP_BINARY):
                op0, parts = op, [payload]
            elif op == OP_CONT:
                parts.append(payload)
            if fin:
                data = b"".join(parts)
                return data.decode("utf-8") if op0 == OP_TEXT else data

    def recv_json(self, timeout=10.0):
        return json.loads(self.recv(timeout))

    def wait_close(self, timeout=10.0):
        """Read until the server closes; returns (code, reason) and the messages read before."""
        seen = []
        deadline = time.time() + timeout
        try:
            while True:
                seen.append(self.recv(max(0.01, deadline - time.time())))
        except Closed as c:
            return (c.code, c.reason), seen

    def ping(self, payload=b"hi"):
        self.send_frame(OP_PING, payload)

    def close(self, code=1000, reason=""):
        if self.closed:
            return
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())
            deadline = time.time() + 2.0
            while True:
                try:
                    self.recv(max(0.01, deadline - time.time()))
                except (Closed, TimeoutError, OSError):
                    break
        except OSError:
            pass
        self.closed = True
        self.sock.close()
