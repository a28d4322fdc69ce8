"""The load generator: simulated devices on real sockets, one asyncio process.

Each device is one WebSocket, authenticated with its own token, that says hello
first. In each conversation one member writes and the other reads, with pre-encrypted envelopes
of the protocol's shape (the server cannot tell them from real ones; it checks only
shapes and device sets). Every frame it sends is timed, and every ``message.new`` it
receives is matched to its send by ``client_id``.
"""

import asyncio
import base64
import json
import secrets
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from bench.seed import BenchDevice, BenchPair

# A little under the server's 20 frames a second per socket, so the generator never
# trips the rate limit it is not measuring.
FRAMES_PER_SECOND = 18.0
FRAME_BURST = 50.0
CIPHERTEXT_BYTES = 160  # a short text message, padded (PROTOCOL.md section 3)


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass
class Sender:
    """One direction of one conversation: ``device`` writes to ``peer``."""

    socket: ClientConnection
    device_id: str
    frame_head: str  # the frame up to the client id, pre-encoded
    frame_tail: str
    allowance: float = FRAME_BURST
    refilled: float = field(default_factory=time.perf_counter)

    def take(self, now: float) -> bool:
        self.allowance = min(
            FRAME_BURST, self.allowance + (now - self.refilled) * FRAMES_PER_SECOND
        )
        self.refilled = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True


def _frame_parts(conversation_id: str, sender: BenchDevice, receiver: BenchDevice) -> list[str]:
    envelope = {
        "v": 1,
        "sender_device": sender.device_id,
        "nonce": _b64u(secrets.token_bytes(24)),
        "ciphertext": _b64u(secrets.token_bytes(CIPHERTEXT_BYTES)),
        "franking_tag": _b64u(secrets.token_bytes(32)),
        "keys": {
            sender.device_id: _b64u(secrets.token_bytes(72)),
            receiver.device_id: _b64u(secrets.token_bytes(72)),
        },
        "client_id": "@CLIENT@",
    }
    frame = {"type": "message.send", "conversation_id": conversation_id, "envelope": envelope}
    return json.dumps(frame, separators=(",", ":")).split("@CLIENT@")


class Load:
    """Devices connected to one server under test (``urls`` share them out, as a load
    balancer would)."""

    def __init__(self, pairs: list[BenchPair], urls: list[str], *, paced: bool = True) -> None:
        """``paced``: keep each socket under Parley's frame rate limit. The floors have
        no limit, and unpaced they show the transport's limit, not the generator's."""
        self.pairs = pairs
        self.urls = urls
        self.paced = paced
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []
        self.senders: list[Sender] = []
        self.sent_at: dict[str, float] = {}
        self.acked: set[str] = set()
        self.arrived_at: dict[str, float] = {}
        self.arrivals: list[float] = []
        self.duplicates = 0
        self.errors: Counter[str] = Counter()
        self.inflight: asyncio.Semaphore | None = None
        self._turn = 0

    # --- Connecting ------------------------------------------------------------------------

    async def _open(self, device: BenchDevice, server: int) -> ClientConnection:
        url = f"{self.urls[server % len(self.urls)]}?device={device.device_id}"
        socket = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {device.token}"},
            max_size=2**20,
            ping_interval=None,  # the server pings; answering is enough
            open_timeout=60,
        )
        hello = json.loads(await asyncio.wait_for(socket.recv(), 60))
        if hello.get("type") != "hello":
            raise RuntimeError(f"expected hello, got {hello}")
        return socket

    async def connect(self, concurrency: int = 64) -> float:
        """Open every device's socket; returns the seconds it took."""
        gate = asyncio.Semaphore(concurrency)
        # As a load balancer would: senders spread over every server process, and each
        # pair's reader on the next process, so every message still crosses processes.
        # (Alternating sender, reader over two processes put every sender on the first.)
        placed = [
            (device, pair_index + offset)
            for pair_index, pair in enumerate(self.pairs)
            for offset, device in enumerate((pair.sender, pair.receiver))
        ]
        devices = [device for device, _ in placed]

        async def open_one(device: BenchDevice, server: int) -> ClientConnection:
            async with gate:
                return await self._open(device, server)

        started = time.perf_counter()
        sockets = await asyncio.gather(*(open_one(device, server) for device, server in placed))
        elapsed = time.perf_counter() - started
        self.sockets = list(sockets)
        by_device = dict(zip((device.device_id for device in devices), sockets, strict=True))
        # In each conversation one member writes and the other reads, as in the Synapse
        # workload: a socket that also sends has its events wait behind its own frames
        # (docs/realtime.md), which would measure the generator's pacing, not delivery.
        for pair in self.pairs:
            head, tail = _frame_parts(pair.conversation_id, pair.sender, pair.receiver)
            socket = by_device[pair.sender.device_id]
            self.senders.append(Sender(socket, pair.sender.device_id, head, tail))
        self.readers = [asyncio.create_task(self._read(socket)) for socket in self.sockets]
        return elapsed

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(socket.close() for socket in self.sockets), return_exceptions=True)

    # --- Frames ----------------------------------------------------------------------------

    async def _read(self, socket: ClientConnection) -> None:
        async for raw in socket:
            now = time.perf_counter()
            event = json.loads(raw)
            kind = event.get("type")
            if kind == "message.new":
                client_id = event["client_id"]
                if client_id in self.arrived_at:
                    self.duplicates += 1
                else:
                    self.arrived_at[client_id] = now
                    self.arrivals.append(now)
            elif kind == "message.sent":
                self.acked.add(event["client_id"])
                if self.inflight is not None:
                    self.inflight.release()
            elif kind == "error":
                self.errors[event["error"]["code"]] += 1
                if self.inflight is not None:
                    self.inflight.release()

    def _next_sender(self, now: float) -> Sender | None:
        for _ in range(len(self.senders)):
            sender = self.senders[self._turn]
            self._turn = (self._turn + 1) % len(self.senders)
            if not self.paced or sender.take(now):
                return sender
        return None

    async def _send_one(self) -> bool:
        now = time.perf_counter()
        sender = self._next_sender(now)
        if sender is None:
            return False
        client_id = str(uuid.uuid4())
        self.sent_at[client_id] = now
        await sender.socket.send(sender.frame_head + client_id + sender.frame_tail)
        return True

    # --- Phases ----------------------------------------------------------------------------

    async def saturate(self, seconds: float, *, inflight: int = 256, warmup: float = 3) -> dict:
        """Closed loop: keep ``inflight`` messages unacknowledged for ``warmup`` +
        ``seconds``; the rate is what arrives at the recipients during ``seconds``."""
        self.inflight = asyncio.Semaphore(inflight)
        started = time.perf_counter()
        window_start, window_end = started + warmup, started + warmup + seconds
        sent_before = len(self.sent_at)
        while time.perf_counter() < window_end:
            await self.inflight.acquire()
            if not await self._send_one():
                self.inflight.release()
                await asyncio.sleep(0.005)
        delivered = sum(1 for at in self.arrivals if window_start <= at < window_end)
        await self._drain(10)
        self.inflight = None
        return {
            "sent": len(self.sent_at) - sent_before,
            "delivered_per_second": round(delivered / seconds, 1),
        }

    async def latency(self, rate: float, seconds: float) -> dict:
        """Open loop at ``rate`` messages a second; latency from just before a frame is
        written to its arrival at the recipient device."""
        first = len(self.sent_at)
        ids_before = set(self.sent_at)
        started = time.perf_counter()
        total = int(rate * seconds)
        skipped = 0
        for index in range(total):
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if not await self._send_one():
                skipped += 1
        await self._drain(15)
        ids = [client_id for client_id in self.sent_at if client_id not in ids_before]
        latencies = [
            (self.arrived_at[client_id] - self.sent_at[client_id]) * 1000
            for client_id in ids
            if client_id in self.arrived_at
        ]
        return {
            "rate": round(rate, 1),
            "sent": len(self.sent_at) - first,
            "skipped": skipped,
            "latency_ms": {f"p{pct}": round(percentile(latencies, pct), 1) for pct in (50, 95, 99)},
            "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        }

    async def _drain(self, seconds: float) -> None:
        """Wait (bounded) until every acknowledged message has arrived."""
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            if all(client_id in self.arrived_at for client_id in self.acked) and len(
                self.acked
            ) + sum(self.errors.values()) >= len(self.sent_at):
                return
            await asyncio.sleep(0.05)

    def totals(self) -> dict[str, Any]:
        lost = sum(1 for client_id in self.acked if client_id not in self.arrived_at)
        return {
            "sent": len(self.sent_at),
            "acknowledged": len(self.acked),
            "delivered": len(self.arrived_at),
            "lost": lost,
            "duplicates": self.duplicates,
            "errors": dict(self.errors),
        }
