"""The two floors the load test measures Parley against, speaking the same frames as
the real socket (docs/realtime.md), so the one load generator drives all three.

- ``relay``: a bare ``websockets`` server. It trusts the ``device`` in the URL, keeps
  the conversations in a dict, and forwards ``message.send`` as ``message.new`` to the
  other member's socket: the transport limit of one Python process.
- ``durable``: the same, plus one PostgreSQL ``INSERT`` and commit per message before
  it is acknowledged and forwarded: what any design that stores before delivering
  must pay.

Run as ``python -m bench.floors --port P --pairs pairs.json [--durable DSN]``.
"""

import argparse
import asyncio
import base64
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from websockets.asyncio.server import ServerConnection, serve

TABLE = "bench_floor_message"
# Enough connections that commits overlap (group commit), as Parley's two server
# processes and their thread pools let them.
DURABLE_CONNECTIONS = 8

Store = Callable[[dict[str, Any], str, int, int], Awaitable[None]]


def _b64u(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


async def durable_store(dsn: str) -> Store:
    """An insert-and-commit per message, over a small pool of connections."""
    setup = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    async with setup:
        await setup.execute(f"DROP TABLE IF EXISTS {TABLE}")
        await setup.execute(
            f"CREATE TABLE {TABLE} (id uuid PRIMARY KEY, conversation_id uuid NOT NULL,"
            " seq bigint NOT NULL, sender_device uuid NOT NULL, client_id uuid NOT NULL,"
            " nonce bytea NOT NULL, ciphertext bytea NOT NULL, keys jsonb NOT NULL,"
            " server_ts bigint NOT NULL, UNIQUE (conversation_id, seq))"
        )
    pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    for _ in range(DURABLE_CONNECTIONS):
        pool.put_nowait(await psycopg.AsyncConnection.connect(dsn, autocommit=True))

    async def store(envelope: dict[str, Any], conversation_id: str, seq: int, ts: int) -> None:
        connection = await pool.get()
        try:
            await connection.execute(
                f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
                (
                    uuid.uuid4(), conversation_id, seq, envelope["sender_device"],
                    envelope["client_id"], _b64u(envelope["nonce"]),
                    _b64u(envelope["ciphertext"]), json.dumps(envelope["keys"]), ts,
                ),
            )  # fmt: skip
        finally:
            pool.put_nowait(connection)

    return store


class Relay:
    def __init__(self, members: dict[str, list[str]], store: Store | None) -> None:
        self.members = members  # conversation id -> device ids
        self.store = store
        self.sockets: dict[str, ServerConnection] = {}
        self.seqs: dict[str, count[int]] = {}

    async def handle(self, socket: ServerConnection) -> None:
        request = socket.request
        query = parse_qs(urlsplit(request.path).query) if request is not None else {}
        device_id = (query.get("device") or [""])[0]
        self.sockets[device_id] = socket
        await socket.send(json.dumps({"type": "hello", "device_id": device_id}))
        try:
            async for raw in socket:
                frame = json.loads(raw)
                if frame.get("type") == "message.send":
                    await self.send(socket, device_id, frame)
                elif frame.get("type") == "ping":
                    await socket.send(json.dumps({"type": "pong", "ref": frame.get("id")}))
        finally:
            if self.sockets.get(device_id) is socket:
                del self.sockets[device_id]

    async def send(self, socket: ServerConnection, device_id: str, frame: dict[str, Any]) -> None:
        conversation_id = frame["conversation_id"]
        envelope = frame["envelope"]
        seq = next(self.seqs.setdefault(conversation_id, count(1)))
        server_ts = int(time.time() * 1000)
        if self.store is not None:
            await self.store(envelope, conversation_id, seq, server_ts)
        fields = {
            "conversation_id": conversation_id, "seq": seq, "client_id": envelope["client_id"],
            "sender_device": device_id, "nonce": envelope["nonce"],
            "ciphertext": envelope["ciphertext"], "server_ts": server_ts,
        }  # fmt: skip
        await socket.send(json.dumps({"type": "message.sent", "ref": frame.get("id"), **fields}))
        for member in self.members.get(conversation_id, []):
            peer = self.sockets.get(member)
            if member != device_id and peer is not None:
                wrap = envelope["keys"].get(member)
                await peer.send(json.dumps({"type": "message.new", **fields, "key": wrap}))


async def serve_relay(port: int, members: dict[str, list[str]], dsn: str | None) -> None:
    store = await durable_store(dsn) if dsn else None
    relay = Relay(members, store)
    async with serve(relay.handle, "127.0.0.1", port, max_size=2**20, ping_interval=20):
        print("ready", flush=True)
        await asyncio.Future()  # until killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pairs", required=True, help="JSON: conversation id -> device ids")
    parser.add_argument("--durable", help="PostgreSQL DSN: insert and commit each message")
    args = parser.parse_args()
    with open(args.pairs) as handle:
        members = json.load(handle)
    asyncio.run(serve_relay(args.port, members, args.durable))


if __name__ == "__main__":
    main()
