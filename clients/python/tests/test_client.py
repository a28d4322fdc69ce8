"""The reference client's own checks, offline: its state file, and what it makes of a
key directory or a message that a misbehaving server altered."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from parley_client import crypto as c
from parley_client.client import DirectoryMismatch, ParleyClient, State

SERVER = "http://parley.invalid"
CONVERSATION = "c0c0c0c0-0000-4000-8000-00000000c0c0"


# --- The state file ---------------------------------------------------------------------------


@pytest.fixture
def no_umask() -> Iterator[None]:
    """Permissions exactly as asked for, so the test sees what the client asks for."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_file_and_its_folder_are_the_owners_only(
    tmp_path: Path, no_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    chmods: list[Any] = []
    # A chmod after writing comes too late (the secrets were readable in between).
    monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: chmods.append(args))
    state_file = tmp_path / "parley" / "state.json"
    client = ParleyClient(SERVER, state_file=state_file)
    client.state.token = "secret token"
    client.state.aik_seed = c.b64u_encode(c.IdentityKey.generate().seed)
    client.save()
    client.close()

    assert mode(state_file) == 0o600
    assert mode(state_file.parent) == 0o700
    assert mode(state_file) & (stat.S_IRWXG | stat.S_IRWXO) == 0
    assert mode(state_file.parent) & (stat.S_IRWXG | stat.S_IRWXO) == 0
    assert chmods == []
    assert not state_file.with_suffix(".tmp").exists()

    # A leftover temporary file readable by all does not lend the state its mode.
    leftover = state_file.with_suffix(".tmp")
    leftover.write_text("{}")
    leftover.chmod(0o666)
    reopened = ParleyClient(SERVER, state_file=state_file)
    assert reopened.state.token == "secret token"
    reopened.save()
    reopened.close()
    assert mode(state_file) == 0o600


# --- A fake key directory ---------------------------------------------------------------------


@dataclass
class Account:
    """A user as the server would list them in the key directory."""

    handle: str
    user_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    aik: c.IdentityKey = field(default_factory=c.IdentityKey.generate)
    hk: c.HistoryKey = field(default_factory=c.HistoryKey.generate)
    device: c.DeviceKeys = field(default_factory=lambda: c.DeviceKeys.generate(1_763_660_000))

    def device_entry(self, device: c.DeviceKeys | None = None) -> dict[str, Any]:
        """A device listed under this account, certified by its identity key."""
        d = device or self.device
        return {
            "device_id": d.device_id,
            "sign_pub": c.b64u_encode(d.sign_public),
            "box_pub": c.b64u_encode(d.box_public),
            "created_at": d.created_at,
            "certificate": c.b64u_encode(d.certificate(self.aik, self.user_id)),
        }

    def directory(self, *extra_devices: c.DeviceKeys) -> dict[str, Any]:
        certificate = c.history_key_certificate(self.aik, self.user_id, self.hk.public)
        return {
            "user_id": self.user_id,
            "handle": self.handle,
            "aik_pub": c.b64u_encode(self.aik.public),
            "devices": [self.device_entry(), *(self.device_entry(d) for d in extra_devices)],
            "history_key": {
                "hk_pub": c.b64u_encode(self.hk.public),
                "certificate": c.b64u_encode(certificate),
            },
        }


class FakeServer:
    """Answers the client's requests from a table; records what was asked."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.asked: list[str] = []

    def list(self, account: Account, entry: dict[str, Any] | None = None) -> None:
        """Serve ``entry`` (by default the account's own) for the account's id and handle."""
        entry = entry if entry is not None else account.directory()
        self.answers[f"/keys/{account.user_id}"] = entry
        self.answers[f"/users/{account.handle}/keys"] = entry

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.asked.append(path)
        answer = self.answers[path]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def reader() -> Account:
    return Account("reader")


@pytest.fixture
def bob() -> Account:
    return Account("bob")


@pytest.fixture
def carol() -> Account:
    return Account("carol")


@pytest.fixture
def client(
    server: FakeServer, reader: Account, bob: Account, carol: Account
) -> Iterator[ParleyClient]:
    """The reader's device, talking to ``server``, which lists the three accounts."""
    client = ParleyClient(SERVER)
    client.state = State(
        server=SERVER,
        user_id=reader.user_id,
        handle=reader.handle,
        hk_secret=c.b64u_encode(reader.hk.secret),
        device={
            "device_id": reader.device.device_id,
            "sign_seed": c.b64u_encode(reader.device.sign_seed),
            "box_secret": c.b64u_encode(reader.device.box_secret),
            "created_at": reader.device.created_at,
        },
    )
    client.request = server.request  # type: ignore[method-assign]
    for account in (reader, bob, carol):
        server.list(account)
    yield client
    client.close()


def test_the_directory_answers_for_the_user_asked_for(
    client: ParleyClient, server: FakeServer, bob: Account
) -> None:
    by_id = client.directory(bob.user_id.upper())
    assert by_id.user_id == bob.user_id and by_id.handle == "bob"
    assert server.asked[-1] == f"/keys/{bob.user_id}", "asked by the canonical id"
    by_handle = client.directory("@bob")
    assert by_handle.devices == {bob.device.device_id: c.b64u_encode(bob.device.box_public)}
    server.answers["/users/BOB/keys"] = bob.directory()
    assert client.directory("@BOB").user_id == bob.user_id, "handles compare case-insensitively"


def test_another_users_keys_for_the_one_asked_are_refused(
    client: ParleyClient, server: FakeServer, bob: Account, carol: Account
) -> None:
    # The server answers with Carol's own, valid, self-consistent directory entry.
    server.list(bob, carol.directory())
    with pytest.raises(DirectoryMismatch):
        client.directory(bob.user_id)
    with pytest.raises(DirectoryMismatch):
        client.directory("@bob")
    with pytest.raises(DirectoryMismatch):
        client.directory("bob")
    assert client.pin(carol.user_id) is None, "nothing in the answer was used"
    assert client.pin(bob.user_id) is None
    # Nor may it swap only the id, or only the handle.
    server.list(bob, {**bob.directory(), "user_id": carol.user_id})
    with pytest.raises(DirectoryMismatch):
        client.directory(bob.user_id)
    server.list(bob, {**bob.directory(), "handle": "carol"})
    with pytest.raises(DirectoryMismatch):
        client.directory("@bob")
    server.list(bob, {**bob.directory(), "user_id": "not a uuid"})
    with pytest.raises(DirectoryMismatch):
        client.directory("@bob")


def test_a_bad_answer_by_id_is_not_retried_by_handle(
    client: ParleyClient, server: FakeServer, bob: Account
) -> None:
    # As response.json() raises on a body that is not JSON.
    server.answers[f"/keys/{bob.user_id}"] = ValueError("Expecting value")
    with pytest.raises(ValueError, match="Expecting value"):
        client.directory(bob.user_id)
    assert server.asked == [f"/keys/{bob.user_id}"]


# --- Who sent a message -----------------------------------------------------------------------


def message_from(sender: Account, reader: Account, *, device_wrap: bool = True) -> dict[str, Any]:
    """A message from ``sender``'s device to ``reader``, as the server delivers it. Without
    ``device_wrap`` only the reader's history key opens it, as for a device added since."""
    wrapped_to = reader.device if device_wrap else sender.device
    envelope = c.encrypt_message(
        {"type": "text", "body": f"from {sender.handle}"},
        CONVERSATION,
        sender.device.device_id,
        None,
        sender.device.box_secret,
        {wrapped_to.device_id: wrapped_to.box_public},
        {reader.user_id: reader.hk.public},
    )
    return {
        **envelope,
        "id": str(uuid.uuid4()),
        "seq": 1,
        "conversation_id": CONVERSATION,
        "sender_id": sender.user_id,
    }


@pytest.mark.parametrize("device_wrap", [True, False], ids=["device-wrap", "history-key"])
def test_a_message_relabelled_as_another_members_is_not_verified(
    client: ParleyClient, reader: Account, bob: Account, carol: Account, device_wrap: bool
) -> None:
    honest = message_from(bob, reader, device_wrap=device_wrap)
    opened = client.open(honest)
    assert opened.verified, opened.error
    assert opened.text == "from bob"

    client.directory(carol.user_id)  # Carol is a known, verified member too
    relabelled = client.open({**honest, "sender_id": carol.user_id})
    assert not relabelled.verified
    assert relabelled.payload is None and relabelled.text is None
    assert relabelled.payload_bytes is None and relabelled.franking_key is None
    assert relabelled.error and "another user" in relabelled.error


def test_a_message_relabelled_as_a_user_not_yet_fetched_is_not_verified(
    client: ParleyClient, server: FakeServer, reader: Account, bob: Account, carol: Account
) -> None:
    honest = message_from(bob, reader)
    assert client.open(honest).verified  # Bob's device is known from here on
    relabelled = client.open({**honest, "sender_id": carol.user_id})
    assert not relabelled.verified and relabelled.payload is None
    assert f"/keys/{carol.user_id}" not in server.asked, "the device's owner is already known"


def test_a_device_certified_by_a_second_user_stays_its_owners(
    client: ParleyClient, server: FakeServer, reader: Account, bob: Account, carol: Account
) -> None:
    client.directory(bob.user_id)
    # Carol (with the server) certifies Bob's device id and keys as one of hers.
    server.list(carol, carol.directory(bob.device))
    carols = client.directory(carol.user_id)
    assert bob.device.device_id not in carols.devices
    assert carols.rejected_devices == [bob.device.device_id]
    assert carol.device.device_id in carols.devices
    honest = message_from(bob, reader)
    assert client.open(honest).verified
    assert not client.open({**honest, "sender_id": carol.user_id}).verified
