"""The socket through a live Daphne server process, driven over real HTTP and WebSocket
connections, the way an app uses it. On `make test-services` the servers share
PostgreSQL and Redis, and one test runs two Daphne processes."""

import asyncio
import json
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
from nacl.signing import SigningKey

from accounts.tests.factories import PASSWORD, DeviceKeys
from common.encoding import b64u_encode
from common.testing import SERVICES_MODE, LiveServer

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class App:
    """One app install of one user, talking to a live server over HTTP."""

    server: LiveServer
    user_id: uuid.UUID
    handle: str
    key: str
    aik: SigningKey

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"{self.server.url}/api/v1", headers={"Authorization": f"Bearer {self.key}"}
        )

    async def login_again(self, server: LiveServer | None = None) -> "App":
        server = server or self.server
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as client:
            response = await client.post(
                "/auth/login", json={"login": self.handle, "password": PASSWORD}
            )
        response.raise_for_status()
        return App(server, self.user_id, self.handle, response.json()["token"]["key"], self.aik)

    async def register_device(self) -> DeviceKeys:
        keys = DeviceKeys(user_id=self.user_id)
        async with self.http() as client:
            response = await client.post("/devices", json=keys.payload(self.aik))
        assert response.status_code == 201, response.text
        return keys

    def socket(self, device_id: uuid.UUID, server: LiveServer | None = None) -> Any:
        server = server or self.server
        return websockets.connect(
            f"{server.ws_url}/ws/?device={device_id}",
            additional_headers={"Authorization": f"Bearer {self.key}"},
            open_timeout=10,
        )


async def sign_up(server: LiveServer) -> App:
    handle = f"u{uuid.uuid4().hex[:10]}"
    aik = SigningKey.generate()
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as client:
        response = await client.post(
            "/auth/signup",
            json={"handle": handle, "email": f"{handle}@example.com", "password": PASSWORD},
        )
        assert response.status_code == 201, response.text
        body = response.json()
        headers = {"Authorization": f"Bearer {body['token']['key']}"}
        response = await client.put(
            "/keys/identity", json={"aik_pub": b64u_encode(bytes(aik.verify_key))}, headers=headers
        )
        assert response.status_code == 200, response.text
    return App(server, uuid.UUID(body["user"]["id"]), handle, body["token"]["key"], aik)


async def receive(ws: Any, timeout: float = 10) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def receive_until(ws: Any, event_type: str, timeout: float = 10) -> dict[str, Any]:
    async def scan() -> dict[str, Any]:
        while True:
            event = json.loads(await ws.recv())
            if event["type"] == event_type:
                return event

    return await asyncio.wait_for(scan(), timeout)


async def expect_closed(ws: Any, code: int) -> None:
    async def drain() -> None:
        while True:
            await ws.recv()

    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), 10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == code


async def test_app_connects_with_its_token_and_keeps_the_socket_through_bad_frames(
    daphne_server: LiveServer,
) -> None:
    alice = await sign_up(daphne_server)
    device = await alice.register_device()
    async with alice.socket(device.device_id) as ws:
        hello = await receive(ws)
        assert hello == {
            "type": "hello",
            "user_id": str(alice.user_id),
            "device_id": str(device.device_id),
            "notifications_unread": 0,
            "account_warnings": [],
        }
        await ws.send("{broken")
        assert (await receive(ws))["error"]["code"] == "invalid_json"
        await ws.send(json.dumps({"type": "nope"}))
        assert (await receive(ws))["error"]["code"] == "unknown_type"
        await ws.send(json.dumps({"type": "ping", "id": 1}))
        assert await receive(ws) == {"type": "pong", "ref": 1}


async def test_socket_is_refused_for_a_revoked_device(daphne_server: LiveServer) -> None:
    alice = await sign_up(daphne_server)
    device = await alice.register_device()
    async with alice.http() as client:
        assert (await client.delete(f"/devices/{device.device_id}")).status_code == 200
    other = await alice.login_again()
    async with other.socket(device.device_id) as ws:
        closing = await receive(ws)
        assert (closing["type"], closing["code"], closing["reason"]) == (
            "closing",
            4005,
            "device_revoked",
        )
        await expect_closed(ws, 4005)


async def test_socket_is_refused_without_credentials(daphne_server: LiveServer) -> None:
    async with websockets.connect(f"{daphne_server.ws_url}/ws/?device={uuid.uuid4()}") as ws:
        closing = await receive(ws)
        assert closing["code"] == 4003  # no token and no same-origin cookie
        await expect_closed(ws, 4003)


async def test_socket_closes_at_once_when_its_device_is_revoked(daphne_server: LiveServer) -> None:
    alice = await sign_up(daphne_server)
    phone = await alice.register_device()
    laptop_app = await alice.login_again()
    laptop = await laptop_app.register_device()
    async with alice.socket(phone.device_id) as ws:
        await receive(ws)  # hello
        async with laptop_app.http() as client:
            assert (await client.delete(f"/devices/{phone.device_id}")).status_code == 200
        closing = await receive_until(ws, "closing")
        assert (closing["code"], closing["reason"]) == (4005, "device_revoked")
        await expect_closed(ws, 4005)
    # The token that the phone registered with was revoked with it.
    async with alice.http() as client:
        assert (await client.get("/me")).status_code == 401
    async with laptop_app.socket(laptop.device_id) as ws:
        assert (await receive(ws))["type"] == "hello"


@pytest.mark.skipif(
    not SERVICES_MODE, reason="needs Redis as the shared channel layer (make test-services)"
)
async def test_events_cross_daphne_processes_through_redis(start_daphne: Any) -> None:
    first, second = start_daphne(), start_daphne()
    alice = await sign_up(first)
    phone = await alice.register_device()
    async with alice.socket(phone.device_id, server=second) as ws:
        assert (await receive(ws))["type"] == "hello"
        # A device registered through the first process is announced on the second.
        tablet_app = await alice.login_again(first)
        tablet = await tablet_app.register_device()
        added = await receive_until(ws, "device.added")
        assert added["device_id"] == str(tablet.device_id)
        # And revoking the phone through the first process closes its socket on the second.
        async with tablet_app.http() as client:
            assert (await client.delete(f"/devices/{phone.device_id}")).status_code == 200
        closing = await receive_until(ws, "closing")
        assert closing["code"] == 4005
        await expect_closed(ws, 4005)


async def test_an_idle_socket_stays_open_and_still_gets_events(daphne_server: LiveServer) -> None:
    """Longer idle than the channel layer's blocking read (5 s): with Redis, a client
    timeout shorter than that read closed every idle socket with 1011."""
    alice = await sign_up(daphne_server)
    device = await alice.register_device()
    async with alice.socket(device.device_id) as ws:
        assert (await receive(ws))["type"] == "hello"
        await asyncio.sleep(7)
        bob = await sign_up(daphne_server)
        async with bob.http() as client:
            response = await client.post(f"/users/{alice.handle}/follow")
        assert response.status_code == 204, response.text
        event = await receive_until(ws, "follow.new")
        assert event["follower"]["handle"] == bob.handle
