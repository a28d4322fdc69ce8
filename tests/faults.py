"""Devices that keep talking while parts of Parley fail (tests/test_faults.py).

Each device behaves as an app should (docs/messages.md, docs/realtime.md): it keeps one
socket open, to whichever server answers (as behind a load balancer); after every
hello it syncs from its cursor; an event whose seq skips ahead makes it sync; an
event or sync row it already has is dropped by seq. A sending device sends each
message over its socket until the server acknowledges it, with the same ``client_id``
every time, so that a send whose answer was lost is not stored twice.

Every delivery is counted, so that the test can say what the faults cost: events,
events dropped as already had, syncs and the rows they brought, reconnects, resends.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

from messaging.tests.support import Person, Phone, envelope

RECONNECT_PAUSE_SECONDS = 0.2
ANSWER_TIMEOUT_SECONDS = 5


@dataclass
class Outgoing:
    """One message a device sends, built once so that every resend is the same."""

    conversation_id: str
    client_id: str
    frame: dict[str, Any]


@dataclass
class FaultDevice:
    """One app install: its socket, its copy of every conversation, and its counts."""

    phone: Phone
    servers: Callable[[], list[str]]  # the live servers' base URLs, as of now
    progress: asyncio.Event  # set whenever this device takes a message
    log: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # conv -> (seq, id)
    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    cursor: str | None = None
    _server_turn: int = 0
    _socket: Any = None
    _connected: asyncio.Event = field(default_factory=asyncio.Event)
    _answers: dict[str, "asyncio.Future[dict[str, Any]]"] = field(default_factory=dict)
    _task: "asyncio.Task[None] | None" = None
    _stopping: bool = False

    @property
    def device_id(self) -> str:
        return str(self.phone.device.pk)

    # --- What the device holds -------------------------------------------------------------

    def last_seq(self, conversation_id: str) -> int:
        rows = self.log.get(conversation_id)
        return rows[-1][0] if rows else 0

    def _take(self, conversation_id: str, seq: int, message_id: str, source: str) -> bool:
        """Add one message in seq order. False if it skips ahead (the caller syncs)."""
        last = self.last_seq(conversation_id)
        if seq <= last:
            self.counts[f"{source}_already_had"] += 1
            had = dict(self.log[conversation_id]).get(seq)
            if had is not None and had != message_id:
                self.problems.append(f"seq {seq} of {conversation_id} is {had} and {message_id}")
            return True
        if seq != last + 1:
            return False
        self.log.setdefault(conversation_id, []).append((seq, message_id))
        self.progress.set()
        self.counts[f"{source}_taken"] += 1
        return True

    # --- The connection --------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_connected(self, within: float = 30) -> None:
        await asyncio.wait_for(self._connected.wait(), within)

    def _next_server(self) -> str:
        servers = self.servers()
        self._server_turn += 1
        return servers[self._server_turn % len(servers)]

    async def _run(self) -> None:
        server = self.servers()[hash(self.device_id) % len(self.servers())]
        while not self._stopping:
            try:
                await self._session(server)
            except (OSError, websockets.WebSocketException, httpx.HTTPError, TimeoutError) as exc:
                self.counts[f"connection_lost:{type(exc).__name__}"] += 1
            self._connected.clear()
            self._socket = None
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_exception(ConnectionError("the socket closed"))
            self._answers.clear()
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
            server = self._next_server()
            self.counts["reconnects"] += 1

    async def _session(self, server: str) -> None:
        ws_url = server.replace("http://", "ws://", 1)
        async with websockets.connect(
            f"{ws_url}/ws/?device={self.device_id}",
            additional_headers={"Authorization": f"Bearer {self.phone.key}"},
            open_timeout=5,
            ping_interval=None,  # the server pings; answering is enough
        ) as socket:
            hello = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if hello.get("type") != "hello":
                self.counts[f"refused:{hello.get('reason', hello.get('type'))}"] += 1
                return
            # Sync before reading on: whatever happened while away is in the database.
            await self._sync(server)
            self._socket = socket
            self._connected.set()
            async for text in socket:
                await self._on_event(server, json.loads(text))

    async def _on_event(self, server: str, event: dict[str, Any]) -> None:
        kind = event.get("type")
        ref = event.get("ref")
        if isinstance(ref, str) and ref in self._answers:
            answer = self._answers.pop(ref)
            if not answer.done():
                answer.set_result(event)
        if kind in {"message.new", "message.sent"}:
            self.counts[f"{kind}_events"] += 1
            conversation_id, seq, message_id = event["conversation_id"], event["seq"], event["id"]
            if not self._take(conversation_id, seq, message_id, "event"):
                self.counts["gaps"] += 1
                await self._sync(server)
                if not self._take(conversation_id, seq, message_id, "event"):
                    self.problems.append(
                        f"{conversation_id}: seq {seq} arrived, sync stopped at "
                        f"{self.last_seq(conversation_id)}"
                    )

    async def _sync(self, server: str) -> None:
        async with httpx.AsyncClient(
            base_url=f"{server}/api/v1",
            headers={"Authorization": f"Bearer {self.phone.key}"},
            timeout=10,
        ) as client:
            while True:
                response = await client.post("/sync", json={"cursor": self.cursor, "limit": 200})
                if response.status_code != 200:
                    self.counts[f"sync_status:{response.status_code}"] += 1
                    raise httpx.HTTPError(f"sync answered {response.status_code}")
                page = response.json()
                self.counts["syncs"] += 1
                for row in page["messages"]:
                    if not self._take(row["conversation_id"], row["seq"], row["id"], "sync"):
                        self.problems.append(
                            f"sync skipped from {self.last_seq(row['conversation_id'])} to "
                            f"{row['seq']} in {row['conversation_id']}"
                        )
                self.cursor = page["cursor"]
                if not page["has_more"]:
                    return

    # --- Sending ---------------------------------------------------------------------------

    async def send(self, outgoing: Outgoing, *, give_up_after: float = 60) -> dict[str, Any]:
        """Send until acknowledged, the same frame every time."""
        deadline = time.monotonic() + give_up_after
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            if attempt > 1:
                self.counts["resends"] += 1
            try:
                await asyncio.wait_for(self._connected.wait(), ANSWER_TIMEOUT_SECONDS)
            except TimeoutError:
                continue
            socket = self._socket
            ref = uuid.uuid4().hex
            answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._answers[ref] = answer
            try:
                await socket.send(json.dumps({**outgoing.frame, "id": ref}))
                reply = await asyncio.wait_for(answer, ANSWER_TIMEOUT_SECONDS)
            except (OSError, websockets.WebSocketException, TimeoutError):
                self._answers.pop(ref, None)
                await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
                continue
            if reply.get("type") == "message.sent":
                return reply
            self.counts[f"send_error:{reply.get('code')}"] += 1
            await asyncio.sleep(RECONNECT_PAUSE_SECONDS)
        raise AssertionError(f"{outgoing.client_id} was never acknowledged")


def outgoing(sender: Phone, conversation_id: Any, members: list[Person]) -> Outgoing:
    client_id = uuid.uuid4()
    body, _ = envelope(
        sender=sender, conversation_id=conversation_id, recipients=members, client_id=client_id
    )
    frame = {"type": "message.send", "conversation_id": str(conversation_id), "envelope": body}
    return Outgoing(str(conversation_id), str(client_id), frame)
