"""Parts of Parley fail while messages flow; afterwards every message sent is at every
device exactly once, in seq order (docs/reliability.md).

Three users with two devices each, in two direct conversations and a group; five
devices send at once while the others read. Mid-flow one fault: a Daphne process is
killed (SIGKILL) with sockets open on it, the Redis behind the channel layer, cache and
broker is restarted empty, or the Celery worker is killed. The devices (tests/faults.py)
behave as apps do: reconnect, sync after hello, sync on a gap, resend until
acknowledged. Nothing forces a last sync: a device must get everything through what
an app does anyway. Each test prints its counts (``pytest -s``).

On loopback only, with bounded loops. The Redis and worker faults need the real parts
(`make test-services`); the Daphne one runs in both suites.
"""

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from django.db import connection

from accounts.services import user_follow
from common.testing import (
    SERVICES_MODE,
    WORKER_VISIBILITY_TIMEOUT_SECONDS,
    CeleryWorker,
    LiveServer,
    free_port,
    stop_process,
    wait_for_worker_idle,
)
from messaging import services as messaging
from messaging.models import Conversation, Membership, Message
from messaging.tests.support import Person, Phone, person
from notifications.models import Notification
from tests.faults import FaultDevice, Outgoing, outgoing

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES_PER_SENDER = 40
SEND_INTERVAL_SECONDS = 0.08
FAULT_AFTER_SECONDS = 1.2
SETTLE_TIMEOUT_SECONDS = 45

needs_services = pytest.mark.skipif(
    not SERVICES_MODE, reason="needs Redis and a Celery worker (make test-services)"
)


@dataclass
class World:
    people: list[Person]
    conversations: dict[str, list[Person]]  # conversation id -> members
    senders: list[tuple[Phone, str]]  # (device, conversation id)
    servers: list[str] = field(default_factory=list)  # live servers' base URLs, kept current


@pytest.fixture
def world() -> World:
    alice, bob, carol = (person(f"fault{name}", phones=2, history_key=False) for name in "abc")
    people = [alice, bob, carol]
    for one in people:
        for other in people:
            if one is not other:
                user_follow(follower=one.user, followee=other.user)
    ab, _ = messaging.conversation_get_or_create_direct(user=alice.user, other=bob.user)
    bc, _ = messaging.conversation_get_or_create_direct(user=bob.user, other=carol.user)
    group = messaging.conversation_create_group(
        creator=carol.user, name="Faults", members=[alice.user, bob.user]
    )
    conversations = {str(ab.pk): [alice, bob], str(bc.pk): [bob, carol]}
    conversations[str(group.pk)] = people
    senders = [
        (alice.phones[0], str(ab.pk)),
        (bob.phones[1], str(ab.pk)),
        (carol.phones[0], str(bc.pk)),
        (bob.phones[0], str(group.pk)),
        (carol.phones[1], str(group.pk)),
    ]
    return World(people, conversations, senders)


@dataclass
class Outcome:
    devices: list[FaultDevice]
    sent: dict[str, list[Outgoing]]  # conversation id -> what was sent into it
    seconds: float

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for device in self.devices:
            total.update(device.counts)
        return total

    def report(self, fault: str) -> str:
        sent = sum(len(items) for items in self.sent.values())
        deliveries = sum(len(rows) for device in self.devices for rows in device.log.values())
        counts = dict(sorted(self.totals().items()))
        return json.dumps(
            {"fault": fault, "messages": sent, "device_copies": deliveries,
             "seconds": round(self.seconds, 1), **counts},
        )  # fmt: skip


def _stored(conversation_id: str) -> list[tuple[int, str, str]]:
    """(seq, id, client_id) of every stored message of the conversation, by seq."""
    try:
        return [
            (seq, str(message_id), str(client_id))
            for seq, message_id, client_id in Message.objects.filter(
                conversation_id=conversation_id
            )
            .order_by("seq")
            .values_list("seq", "id", "client_id")
        ]
    finally:
        connection.close()


def _last_seqs(conversation_ids: list[str]) -> dict[str, int]:
    try:
        rows = Conversation.objects.filter(pk__in=conversation_ids).values_list("pk", "last_seq")
        return {str(pk): seq for pk, seq in rows}
    finally:
        connection.close()


Plan = dict[tuple[str, str], list[Outgoing]]  # (device id, conversation id) -> messages


def _plan(world: World) -> Plan:
    """Every message to send, encrypted before the flow starts."""
    return {
        (str(phone.device.pk), conversation_id): [
            outgoing(phone, conversation_id, world.conversations[conversation_id])
            for _ in range(MESSAGES_PER_SENDER)
        ]
        for phone, conversation_id in world.senders
    }


async def _flow(world: World, plan: Plan, fault: Callable[[], Awaitable[None]]) -> Outcome:
    """Connect every device, send the plan, run ``fault`` mid-flow, and wait (bounded)
    until every device holds every message of its conversations."""
    progress = asyncio.Event()  # set whenever a device takes a message
    devices = {
        str(phone.device.pk): FaultDevice(phone, lambda: world.servers, progress)
        for someone in world.people
        for phone in someone.phones
    }
    for device in devices.values():
        device.start()
    started = time.monotonic()
    try:
        for device in devices.values():
            await device.wait_connected()

        async def send_all(device: FaultDevice, items: list[Outgoing]) -> None:
            for item in items:
                await device.send(item)
                await asyncio.sleep(SEND_INTERVAL_SECONDS)

        async def fault_later() -> None:
            await asyncio.sleep(FAULT_AFTER_SECONDS)
            await fault()

        await asyncio.gather(
            fault_later(),
            *(send_all(devices[device_id], items) for (device_id, _), items in plan.items()),
        )
        sent: dict[str, list[Outgoing]] = {}
        for (_, conversation_id), items in plan.items():
            sent.setdefault(conversation_id, []).extend(items)
        last = await asyncio.to_thread(_last_seqs, list(world.conversations))

        def settled() -> bool:
            return all(
                device.last_seq(conversation_id) >= last[conversation_id]
                for conversation_id, members in world.conversations.items()
                for someone in members
                for device in devices.values()
                if device.phone.user.pk == someone.user.pk
            )

        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while True:
            progress.clear()
            if settled() or time.monotonic() > deadline:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(progress.wait(), max(0.0, deadline - time.monotonic()))
    finally:
        for device in devices.values():
            await device.stop()
    return Outcome(list(devices.values()), sent, time.monotonic() - started)


def _assert_everything_everywhere_once(world: World, outcome: Outcome) -> None:
    for device in outcome.devices:
        assert device.problems == [], device.problems
    # A part that is down is a 503 (or an "unavailable" event) to try again, never a 500.
    totals = outcome.totals()
    assert totals["sync_status:500"] == totals["send_error:server_error"] == 0, totals
    for conversation_id, members in world.conversations.items():
        stored = _stored(conversation_id)
        sent = outcome.sent[conversation_id]
        # Stored once each: a resend whose first answer was lost did not store again.
        assert sorted(client_id for _, _, client_id in stored) == sorted(
            item.client_id for item in sent
        )
        assert [seq for seq, _, _ in stored] == list(range(1, len(sent) + 1))
        expected = [(seq, message_id) for seq, message_id, _ in stored]
        member_ids = {someone.user.pk for someone in members}
        for device in outcome.devices:
            if device.phone.user.pk in member_ids:
                # Every message, once, in seq order, at every device of every member.
                assert device.log.get(conversation_id, []) == expected, (
                    f"device {device.device_id} in {conversation_id}: "
                    f"{len(device.log.get(conversation_id, []))} of {len(expected)}"
                )
            else:
                assert conversation_id not in device.log


@pytest.fixture
def live_servers(start_daphne: Callable[..., LiveServer]) -> Iterator[Callable[..., LiveServer]]:
    """Daphne processes of this test only, stopped at its end (they may be killed)."""
    started: list[LiveServer] = []

    def start(env: dict[str, str] | None = None) -> LiveServer:
        server = start_daphne(env)
        started.append(server)
        return server

    yield start
    for server in started:
        stop_process(server.process)


def test_killing_a_daphne_process_loses_no_message(
    world: World, live_servers: Callable[..., LiveServer]
) -> None:
    """Two processes share the channel layer on the real parts; the embedded default has
    one (its channel layer is in-process), so a new one takes the place of the dead."""
    doomed = live_servers()
    survivor = live_servers() if SERVICES_MODE else None
    world.servers = [doomed.url] + ([survivor.url] if survivor else [])

    async def kill_one() -> None:
        doomed.process.kill()
        await asyncio.to_thread(doomed.process.wait)
        if survivor is None:
            replacement = await asyncio.to_thread(live_servers)
            world.servers = [replacement.url]
        else:
            world.servers = [survivor.url]

    outcome = asyncio.run(_flow(world, _plan(world), kill_one))
    print(outcome.report("daphne killed"))
    _assert_everything_everywhere_once(world, outcome)
    # The devices of the dead process came back through a new socket and a sync.
    assert outcome.totals()["reconnects"] >= 1


@dataclass
class RedisServer:
    """A redis-server of this test's own, on another port, keeping nothing on disk (as
    the shared one): a restart loses every key."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.folder)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def keys(self) -> int:
        import redis

        return sum(
            int(redis.Redis(port=self.port, db=db, socket_timeout=0.5).dbsize()) for db in (1, 2)
        )

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path)
    server.start()
    yield server
    server.stop()


@needs_services
def test_restarting_redis_loses_no_message(
    world: World,
    live_servers: Callable[..., LiveServer],
    own_redis: RedisServer,
) -> None:
    """The channel layer, the cache and the broker all on one Redis, restarted empty
    mid-flow: every event published while it is down is lost, and every server's
    subscriptions with it. (No worker takes this broker's tasks; the worker's own fault
    is a test below.)"""
    env = {"REDIS_URL": own_redis.url(1), "CACHE_REDIS_URL": own_redis.url(2)}
    servers = [live_servers(env), live_servers(env)]
    world.servers = [server.url for server in servers]

    keys_before: list[int] = []
    down_ms: list[int] = []  # while Redis was down (Unix ms, as server_ts)

    async def restart_redis() -> None:
        keys_before.append(await asyncio.to_thread(own_redis.keys))
        await asyncio.to_thread(own_redis.stop)
        down_ms.append(int(time.time() * 1000))
        await asyncio.sleep(1)
        down_ms.append(int(time.time() * 1000))
        await asyncio.to_thread(own_redis.start)

    outcome = asyncio.run(_flow(world, _plan(world), restart_redis))
    print(outcome.report("redis restarted"))
    _assert_everything_everywhere_once(world, outcome)
    # The fault hit: the servers kept their cache and queue in this Redis, and messages
    # were stored while it was down, their events lost with it (the channel layer keeps
    # nothing); the devices got them all the same.
    assert keys_before[0] > 0
    stored_while_down = Message.objects.filter(
        conversation_id__in=list(world.conversations), server_ts__range=(down_ms[0], down_ms[1])
    ).count()
    assert stored_while_down >= 1


@needs_services
def test_a_redis_restart_closes_sockets_to_reconnect_and_they_hear_what_comes_after(
    live_servers: Callable[..., LiveServer], own_redis: RedisServer
) -> None:
    """The channel layer is pub/sub: Redis keeps nothing for a process while its
    connection is down, a sign-out's close among what is lost. When the connection
    comes back, the process closes its sockets with 4008 ("reconnect"); the client
    reconnects (checked again), and hears later messages on the new socket."""
    alice, bob = (person(f"restart{name}", phones=1, history_key=False) for name in "ab")
    user_follow(follower=alice.user, followee=bob.user)
    user_follow(follower=bob.user, followee=alice.user)
    direct, _ = messaging.conversation_get_or_create_direct(user=alice.user, other=bob.user)
    env = {"REDIS_URL": own_redis.url(1), "CACHE_REDIS_URL": own_redis.url(2)}
    sending, listening = live_servers(env), live_servers(env)
    frames = [outgoing(alice.phones[0], direct.pk, [alice, bob]).frame for _ in range(20)]

    async def open_socket(server: LiveServer, phone: Phone) -> Any:
        socket = await websockets.connect(
            f"{server.url.replace('http://', 'ws://', 1)}/ws/?device={phone.device.pk}",
            additional_headers={"Authorization": f"Bearer {phone.key}"},
            ping_interval=None,
        )
        assert json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] == "hello"
        return socket

    async def closing_of(socket: Any) -> tuple[dict[str, Any], int | None]:
        closing: dict[str, Any] = {}
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                event = json.loads(await asyncio.wait_for(socket.recv(), 20))
                if event.get("type") == "closing":
                    closing = event
        return closing, socket.close_code

    async def restart_and_hear() -> tuple[list[Any], int]:
        writer = await open_socket(sending, alice.phones[0])
        reader = await open_socket(listening, bob.phones[0])
        await asyncio.to_thread(own_redis.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_redis.start)
        closings = [await closing_of(writer), await closing_of(reader)]
        writer = await open_socket(sending, alice.phones[0])
        reader = await open_socket(listening, bob.phones[0])
        try:
            for attempts, frame in enumerate(frames, start=1):
                await writer.send(json.dumps(frame))
                with contextlib.suppress(TimeoutError):
                    while True:  # until this message's event, or a quiet second
                        event = json.loads(await asyncio.wait_for(reader.recv(), 1))
                        if (
                            event.get("type") == "message.new"
                            and event["client_id"] == frame["envelope"]["client_id"]
                        ):
                            return closings, attempts
            raise AssertionError(f"no event reached the new socket in {len(frames)} messages")
        finally:
            await writer.close()
            await reader.close()

    closings, attempts = asyncio.run(restart_and_hear())
    for closing, code in closings:
        assert (closing.get("code"), closing.get("reason"), code) == (4008, "reconnect", 4008)
    assert attempts == 1  # the new sockets' subscriptions were in place at hello
    print(json.dumps({"fault": "redis restarted, sockets told to reconnect", "closed": 2}))


def _queued_tasks() -> int:
    from config.celery import app

    with app.connection_for_read() as conn:
        return int(conn.default_channel.client.llen("celery"))  # type: ignore[attr-defined]


@needs_services
def test_killing_the_celery_worker_loses_no_message_and_no_count(
    world: World, live_servers: Callable[..., LiveServer], celery_worker: CeleryWorker
) -> None:
    """The worker counts messages into notifications: killed mid-flow and started again,
    every message is still delivered once, and every count ends right."""
    servers = [live_servers(), live_servers()]
    world.servers = [server.url for server in servers]

    queued_while_dead: list[int] = []

    async def kill_worker() -> None:
        await asyncio.to_thread(celery_worker.kill)
        # Past the visibility timeout, so that the new worker's first look (kombu looks
        # for tasks of dead workers at start, then only every 100 s) takes back
        # whatever the dead one held.
        await asyncio.sleep(WORKER_VISIBILITY_TIMEOUT_SECONDS + 1)
        queued_while_dead.append(await asyncio.to_thread(_queued_tasks))
        await asyncio.to_thread(celery_worker.start)

    outcome = asyncio.run(_flow(world, _plan(world), kill_worker))
    print(outcome.report("celery worker killed"), f"queued while dead: {queued_while_dead}")
    _assert_everything_everywhere_once(world, outcome)
    # The fault hit: counts waited in the broker for the next worker.
    assert queued_while_dead[0] > 0
    wait_for_worker_idle(timeout=30)
    counted = 0
    for conversation_id, members in world.conversations.items():
        for someone in members:
            membership = Membership.objects.get(user=someone.user, conversation_id=conversation_id)
            theirs = Message.objects.filter(conversation_id=conversation_id).exclude(
                sender=someone.user
            )
            newest = theirs.order_by("-seq").values_list("seq", flat=True).first()
            if newest is None or membership.last_read_seq >= newest:
                continue  # they sent after the last message from others: nothing unread
            # The count of the newest message from others: every message from others
            # since their own last one (sending reads up to it), none lost, none twice.
            unread = theirs.filter(seq__gt=membership.last_read_seq).count()
            notification = Notification.objects.get(
                user=someone.user, conversation_id=conversation_id, read_at__isnull=True
            )
            assert (notification.count, notification.last_seq) == (unread, newest)
            counted += 1
    # Alice and Bob only read the group and the second direct conversation.
    assert counted >= 2


def test_an_api_request_while_redis_is_down_gets_a_503_to_try_again(settings: Any) -> None:
    """Throttles count in the cache: with its Redis down, the answer says "try again in
    a moment", and the client's own data is not touched."""
    someone = person("faultdown", phones=1, history_key=False)
    phone = someone.phones[0]
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    response = phone.api.post("/api/v1/sync", {"cursor": None}, format="json")
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert response.json()["error"]["code"] == "unavailable"
