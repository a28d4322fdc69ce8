"""Linking a new device from an existing one with a short code (commit-reveal), over the
API. The cryptography here is written straight from docs/keys-and-devices.md with
hashlib's BLAKE2b and PyNaCl, independently of the server and of the reference client,
so each checks the others."""

import hashlib
import json
import secrets
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.utils import timezone
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey
from rest_framework.test import APIClient

from accounts import crypto, services
from accounts.models import ApiToken, Device, DeviceLink, SecurityEvent, User
from accounts.tests.factories import (
    DeviceKeys,
    api_client_for,
    give_identity,
    make_device,
    make_user,
)
from common.encoding import b64u_decode, b64u_encode, signing_input
from common.errors import ApplicationError
from config.asgi import application

pytestmark = pytest.mark.django_db

LINKS = "/api/v1/devices/links"
VECTORS = Path(__file__).resolve().parents[2] / "clients/python/parley_client/vectors.json"


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b-256, from the standard library rather than libsodium."""
    return hashlib.blake2b(data, key=key, digest_size=32).digest()


def link_input(user_id: Any, keys: DeviceKeys) -> bytes:
    return signing_input(
        "parley/link/v1",
        str(user_id),
        str(keys.device_id),
        b64u_encode(bytes(keys.sign.verify_key)),
        b64u_encode(bytes(keys.box.public_key)),
        keys.created_at,
    )


def short_code(existing_nonce: bytes, new_nonce: bytes, user_id: Any, keys: DeviceKeys) -> str:
    data = signing_input(
        "parley/link-code/v1",
        str(user_id),
        str(keys.device_id),
        b64u_encode(bytes(keys.sign.verify_key)),
        b64u_encode(bytes(keys.box.public_key)),
        keys.created_at,
        b64u_encode(new_nonce),
    )
    h = mac(existing_nonce, data)
    return f"{int.from_bytes(h[:4], 'big') % 1_000_000:06d}"


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@dataclass
class Existing:
    """The user's device that already holds the AIK and HK, with a token bound to it."""

    device: Device
    api: APIClient
    token: ApiToken
    key: str  # the bearer token, for its socket


@dataclass
class Account:
    user: User
    aik: SigningKey
    hk: PrivateKey
    phone: Existing


@dataclass
class NewDevice:
    """A fresh sign-in on a new machine: an unbound token, keys, a nonce."""

    user: User
    api: APIClient
    token: ApiToken | None  # None for a website session
    keys: DeviceKeys
    nonce: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def commitment(self) -> bytes:
        return mac(self.nonce, link_input(self.user.pk, self.keys))

    def reveal_body(self, **changes: Any) -> dict[str, Any]:
        body = {
            "device_id": str(self.keys.device_id),
            "name": "Laptop",
            "sign_pub": b64u_encode(bytes(self.keys.sign.verify_key)),
            "box_pub": b64u_encode(bytes(self.keys.box.public_key)),
            "created_at": self.keys.created_at,
            "nonce": b64u_encode(self.nonce),
        }
        return {**body, **changes}


def existing_device(user: User, aik: SigningKey) -> Existing:
    token, key = services.api_token_create(user=user, name="phone")
    device, _ = make_device(user, aik, token=token)
    token.refresh_from_db()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return Existing(device, api, token, key)


def account(handle: str | None = None) -> Account:
    user = make_user(handle)
    aik = give_identity(user)
    hk = PrivateKey.generate()
    services.history_key_set(
        user=user,
        public_key=bytes(hk.public_key),
        certificate=aik.sign(
            signing_input("parley/history-key/v1", str(user.pk), b64u_encode(bytes(hk.public_key)))
        ).signature,
    )
    return Account(user, aik, hk, existing_device(user, aik))


def new_device(user: User) -> NewDevice:
    api, token = api_client_for(user, name="laptop")
    return NewDevice(user, api, token, DeviceKeys(user_id=user.pk))


def bundle_for(owner: Account, new: NewDevice) -> bytes:
    plaintext = json.dumps(
        {"aik_seed": b64u_encode(bytes(owner.aik)), "hk_secret": b64u_encode(bytes(owner.hk))},
        separators=(",", ":"),
    ).encode()
    return bytes(SealedBox(PublicKey(bytes(new.keys.box.public_key))).encrypt(plaintext))


@pytest.fixture
def alice() -> Account:
    return account("alice")


@pytest.fixture
def laptop(alice: Account) -> NewDevice:
    return new_device(alice.user)


def request_link(new: NewDevice) -> str:
    response = new.api.post(LINKS, {"commitment": b64u_encode(new.commitment())}, format="json")
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def challenge(existing: Existing, link_id: str) -> bytes:
    nonce = secrets.token_bytes(32)
    response = existing.api.post(
        f"{LINKS}/{link_id}/challenge", {"nonce": b64u_encode(nonce)}, format="json"
    )
    assert response.status_code == 200, response.content
    return nonce


def reveal(new: NewDevice, link_id: str) -> dict[str, Any]:
    response = new.api.post(f"{LINKS}/{link_id}/reveal", new.reveal_body(), format="json")
    assert response.status_code == 200, response.content
    return dict(response.json())


def approve_body(owner: Account, new: NewDevice, **changes: Any) -> dict[str, Any]:
    body = {
        "certificate": b64u_encode(new.keys.certificate(owner.aik)),
        "bundle": b64u_encode(bundle_for(owner, new)),
    }
    return {**body, **changes}


def revealed_link(owner: Account, new: NewDevice) -> str:
    link_id = request_link(new)
    challenge(owner.phone, link_id)
    reveal(new, link_id)
    return link_id


# --- The whole flow ---------------------------------------------------------------------------


def test_whole_flow_links_the_new_device_binds_its_token_and_hands_it_the_keys(
    alice: Account, laptop: NewDevice
) -> None:
    created = laptop.api.post(
        LINKS, {"commitment": b64u_encode(laptop.commitment())}, format="json"
    )
    assert created.status_code == 201, created.content
    link = created.json()
    link_id = link["id"]
    assert link["state"] == "pending"
    assert link["commitment"] == b64u_encode(laptop.commitment())
    assert link["existing_nonce"] is None and link["revealed"] is None and link["bundle"] is None
    lifetime = DeviceLink.objects.get(pk=link_id).expires_at - timezone.now()
    assert timedelta(minutes=9) < lifetime <= timedelta(minutes=10)

    # The existing device finds the link without a socket, and sees the commitment.
    listed = alice.phone.api.get(LINKS).json()["results"]
    assert [entry["id"] for entry in listed] == [link_id]
    commitment_seen_first = b64u_decode(listed[0]["commitment"])

    existing_nonce = challenge(alice.phone, link_id)
    polled = laptop.api.get(f"{LINKS}/{link_id}").json()
    assert polled["state"] == "challenged"
    assert polled["challenger_device"] == str(alice.phone.device.pk)
    assert b64u_decode(polled["existing_nonce"]) == existing_nonce

    revealed = reveal(laptop, link_id)
    assert revealed["state"] == "revealed"
    seen = alice.phone.api.get(f"{LINKS}/{link_id}").json()["revealed"]
    assert seen == {
        "device_id": str(laptop.keys.device_id),
        "name": "Laptop",
        "sign_pub": b64u_encode(bytes(laptop.keys.sign.verify_key)),
        "box_pub": b64u_encode(bytes(laptop.keys.box.public_key)),
        "created_at": laptop.keys.created_at,
        "nonce": b64u_encode(laptop.nonce),
    }
    # The existing device checks the reveal against the commitment it saw first.
    assert mac(b64u_decode(seen["nonce"]), link_input(alice.user.pk, laptop.keys)) == (
        commitment_seen_first
    )
    code_on_laptop = short_code(
        b64u_decode(polled["existing_nonce"]), laptop.nonce, alice.user.pk, laptop.keys
    )
    code_on_phone = short_code(
        existing_nonce, b64u_decode(seen["nonce"]), alice.user.pk, laptop.keys
    )
    assert code_on_laptop == code_on_phone
    assert len(code_on_phone) == 6 and code_on_phone.isdigit()

    approved = alice.phone.api.post(
        f"{LINKS}/{link_id}/approve", approve_body(alice, laptop), format="json"
    )
    assert approved.status_code == 200, approved.content
    assert approved.json()["state"] == "approved"
    assert approved.json()["approved_by"] == str(alice.phone.device.pk)

    device = Device.objects.get(pk=laptop.keys.device_id)
    assert device.user_id == alice.user.pk and device.name == "Laptop" and device.is_active
    assert bytes(device.sign_public_key) == bytes(laptop.keys.sign.verify_key)
    assert bytes(device.box_public_key) == bytes(laptop.keys.box.public_key)
    assert bytes(device.certificate) == laptop.keys.certificate(alice.aik)
    assert laptop.token is not None
    laptop.token.refresh_from_db()
    assert laptop.token.device_id == device.pk, "the new device's token now speaks for it"
    alice.phone.token.refresh_from_db()
    assert alice.phone.token.device_id == alice.phone.device.pk
    stored = DeviceLink.objects.get(pk=link_id)
    assert stored.approved_by_id == alice.phone.device.pk and stored.device_id == device.pk
    assert SecurityEvent.objects.filter(
        user=alice.user, kind=SecurityEvent.Kind.DEVICE_ADDED, device=device
    ).exists()

    # The new device polls with the same (now bound) token and opens its bundle.
    final = laptop.api.get(f"{LINKS}/{link_id}").json()
    assert final["state"] == "approved" and final["device_id"] == str(device.pk)
    opened = json.loads(SealedBox(laptop.keys.box).decrypt(b64u_decode(final["bundle"])))
    assert b64u_decode(opened["aik_seed"]) == bytes(alice.aik)
    assert b64u_decode(opened["hk_secret"]) == bytes(alice.hk)
    directory = laptop.api.get(f"/api/v1/keys/{alice.user.pk}").json()
    assert str(device.pk) in [entry["device_id"] for entry in directory["devices"]]
    # It is a full device now: a second registration with its token is refused.
    again = laptop.api.post(
        "/api/v1/devices", DeviceKeys(user_id=alice.user.pk).payload(alice.aik), format="json"
    )
    assert again.status_code == 409 and _error(again)["code"] == "token_has_device"
    assert alice.phone.api.get(LINKS).json()["results"] == [], "nothing left in progress"


def test_a_website_session_can_link_and_nothing_is_bound(alice: Account) -> None:
    browser = APIClient()
    browser.force_login(alice.user)
    other_tab = APIClient()
    other_tab.force_login(alice.user)  # another session of the same user
    new = NewDevice(alice.user, browser, None, DeviceKeys(user_id=alice.user.pk))
    link_id = request_link(new)
    stored = DeviceLink.objects.get(pk=link_id)
    assert stored.requester_token_id is None
    session_key = browser.session.session_key
    assert session_key
    assert stored.requester_session == hashlib.sha256(session_key.encode()).hexdigest(), (
        "a digest of the session key, never the key"
    )
    challenge(alice.phone, link_id)
    refused = other_tab.post(f"{LINKS}/{link_id}/reveal", new.reveal_body(), format="json")
    assert refused.status_code == 403 and _error(refused)["code"] == "not_requester"
    reveal(new, link_id)
    approved = alice.phone.api.post(
        f"{LINKS}/{link_id}/approve", approve_body(alice, new), format="json"
    )
    assert approved.status_code == 200, approved.content
    assert Device.objects.filter(pk=new.keys.device_id, user=alice.user).exists()
    assert not ApiToken.objects.filter(device_id=new.keys.device_id).exists()
    assert browser.get(f"{LINKS}/{link_id}").json()["state"] == "approved"


def test_a_website_session_on_the_existing_side_names_its_device(
    alice: Account, laptop: NewDevice
) -> None:
    link_id = request_link(laptop)
    browser = APIClient()
    browser.force_login(alice.user)
    unnamed = browser.post(
        f"{LINKS}/{link_id}/challenge", {"nonce": b64u_encode(bytes(32))}, format="json"
    )
    assert unnamed.status_code == 400
    assert (_error(unnamed)["code"], _error(unnamed)["field"]) == ("required", "device")
    named = browser.post(
        f"{LINKS}/{link_id}/challenge",
        {"device": str(alice.phone.device.pk), "nonce": b64u_encode(bytes(32))},
        format="json",
    )
    assert named.status_code == 200, named.content
    seen = browser.get(f"{LINKS}/{link_id}", {"device": str(alice.phone.device.pk)})
    assert seen.status_code == 200 and seen.json()["state"] == "challenged"


# --- The server cannot swap keys --------------------------------------------------------------


@pytest.mark.parametrize("changed", ["device_id", "sign_pub", "box_pub", "created_at", "nonce"])
def test_a_reveal_that_does_not_match_the_commitment_is_refused(
    alice: Account, laptop: NewDevice, changed: str
) -> None:
    """What a server substituting its own keys after seeing the nonces would have to do."""
    link_id = request_link(laptop)
    challenge(alice.phone, link_id)
    other = DeviceKeys(user_id=alice.user.pk)
    replacement = {
        "device_id": str(other.device_id),
        "sign_pub": b64u_encode(bytes(other.sign.verify_key)),
        "box_pub": b64u_encode(bytes(other.box.public_key)),
        "created_at": laptop.keys.created_at + 1,
        "nonce": b64u_encode(bytes(32)),
    }[changed]
    response = laptop.api.post(
        f"{LINKS}/{link_id}/reveal", laptop.reveal_body(**{changed: replacement}), format="json"
    )
    assert response.status_code == 400, response.content
    assert (_error(response)["code"], _error(response)["field"]) == ("commitment_mismatch", "nonce")
    stored = DeviceLink.objects.get(pk=link_id)
    assert stored.state == "challenged"
    assert stored.new_nonce is None and stored.sign_public_key is None
    reveal(laptop, link_id)  # the honest reveal still works


@pytest.mark.parametrize(
    ("changes", "status", "code", "field_name"),
    [
        ({"sign_pub": b64u_encode(b"\x01" + bytes(31))}, 400, "invalid_key", "sign_pub"),
        ({"sign_pub": b64u_encode(bytes(31))}, 400, "length", "sign_pub"),
        ({"box_pub": "not base64!"}, 400, "invalid", "box_pub"),
        ({"nonce": b64u_encode(bytes(33))}, 400, "length", "nonce"),
        ({"device_id": "not-a-uuid"}, 400, "invalid", "device_id"),
        ({"created_at": -1}, 400, "min_value", "created_at"),
        ({"name": "x" * 65}, 400, "max_length", "name"),
    ],
)
def test_reveal_refuses_bad_shapes_and_changes_nothing(
    alice: Account,
    laptop: NewDevice,
    changes: dict[str, Any],
    status: int,
    code: str,
    field_name: str,
) -> None:
    link_id = request_link(laptop)
    challenge(alice.phone, link_id)
    response = laptop.api.post(
        f"{LINKS}/{link_id}/reveal", laptop.reveal_body(**changes), format="json"
    )
    assert response.status_code == status, response.content
    assert (_error(response)["code"], _error(response)["field"]) == (code, field_name)
    assert DeviceLink.objects.get(pk=link_id).state == "challenged"


def test_reveal_of_a_device_id_in_use_is_refused(alice: Account) -> None:
    new = new_device(alice.user)
    new.keys.device_id = alice.phone.device.pk  # committed to, but already taken
    link_id = request_link(new)
    challenge(alice.phone, link_id)
    response = new.api.post(f"{LINKS}/{link_id}/reveal", new.reveal_body(), format="json")
    assert response.status_code == 409
    assert (_error(response)["code"], _error(response)["field"]) == ("device_exists", "device_id")
    assert DeviceLink.objects.get(pk=link_id).state == "challenged"


# --- Certificates and bundles -----------------------------------------------------------------


@pytest.mark.parametrize("problem", ["another_key", "other_keys", "garbage"])
def test_a_bad_certificate_changes_nothing(alice: Account, laptop: NewDevice, problem: str) -> None:
    link_id = revealed_link(alice, laptop)
    certificate = {
        "another_key": laptop.keys.certificate(SigningKey.generate()),
        # A valid certificate by the AIK, but of keys other than the ones revealed.
        "other_keys": DeviceKeys(user_id=alice.user.pk).certificate(alice.aik),
        "garbage": bytes(64),
    }[problem]
    response = alice.phone.api.post(
        f"{LINKS}/{link_id}/approve",
        approve_body(alice, laptop, certificate=b64u_encode(certificate)),
        format="json",
    )
    assert response.status_code == 400, response.content
    assert (_error(response)["code"], _error(response)["field"]) == ("bad_signature", "certificate")
    assert DeviceLink.objects.get(pk=link_id).state == "revealed"
    assert not Device.objects.filter(pk=laptop.keys.device_id).exists()
    assert ApiToken.objects.get(name="laptop").device_id is None
    assert SecurityEvent.objects.filter(kind="device_added").count() == 1  # the phone's own


@pytest.mark.parametrize(
    ("bundle", "code"),
    [(bytes(1025), "max_length"), (bytes(48), "min_length"), (None, "required")],
)
def test_approve_checks_the_bundle_size(
    alice: Account, laptop: NewDevice, bundle: bytes | None, code: str
) -> None:
    link_id = revealed_link(alice, laptop)
    body = approve_body(alice, laptop)
    if bundle is None:
        del body["bundle"]
    else:
        body["bundle"] = b64u_encode(bundle)
    response = alice.phone.api.post(f"{LINKS}/{link_id}/approve", body, format="json")
    assert response.status_code == 400
    assert (_error(response)["code"], _error(response)["field"]) == (code, "bundle")
    assert DeviceLink.objects.get(pk=link_id).state == "revealed"


def test_approval_fails_whole_if_the_new_devices_token_was_revoked(
    alice: Account, laptop: NewDevice
) -> None:
    link_id = revealed_link(alice, laptop)
    assert laptop.token is not None
    services.api_token_revoke(user=alice.user, token_id=laptop.token.pk)
    response = alice.phone.api.post(
        f"{LINKS}/{link_id}/approve", approve_body(alice, laptop), format="json"
    )
    assert response.status_code == 409 and _error(response)["code"] == "requester_signed_out"
    assert not Device.objects.filter(pk=laptop.keys.device_id).exists()
    assert DeviceLink.objects.get(pk=link_id).state == "revealed"


# --- States, parties, expiry ------------------------------------------------------------------


def test_every_step_only_in_its_state(alice: Account, laptop: NewDevice) -> None:
    link_id = request_link(laptop)
    url = f"{LINKS}/{link_id}"

    def wrong_state(response: Any, state: str) -> None:
        assert response.status_code == 409, response.content
        error = _error(response)
        assert (error["code"], error["field"], error["state"]) == ("wrong_state", "link_id", state)

    wrong_state(laptop.api.post(f"{url}/reveal", laptop.reveal_body(), format="json"), "pending")
    wrong_state(
        alice.phone.api.post(f"{url}/approve", approve_body(alice, laptop), format="json"),
        "pending",
    )
    challenge(alice.phone, link_id)
    wrong_state(
        alice.phone.api.post(f"{url}/challenge", {"nonce": b64u_encode(bytes(32))}, format="json"),
        "challenged",
    )
    wrong_state(
        alice.phone.api.post(f"{url}/approve", approve_body(alice, laptop), format="json"),
        "challenged",
    )
    reveal(laptop, link_id)
    wrong_state(laptop.api.post(f"{url}/reveal", laptop.reveal_body(), format="json"), "revealed")
    approved = alice.phone.api.post(f"{url}/approve", approve_body(alice, laptop), format="json")
    assert approved.status_code == 200
    wrong_state(
        alice.phone.api.post(f"{url}/approve", approve_body(alice, laptop), format="json"),
        "approved",
    )
    wrong_state(alice.phone.api.post(f"{url}/deny", {}, format="json"), "approved")
    wrong_state(laptop.api.delete(url), "approved")
    assert Device.objects.filter(pk=laptop.keys.device_id).count() == 1


def test_deny_and_cancel(alice: Account) -> None:
    first = new_device(alice.user)
    link_id = request_link(first)
    challenge(alice.phone, link_id)
    denied = alice.phone.api.post(f"{LINKS}/{link_id}/deny", {}, format="json")
    assert denied.status_code == 200 and denied.json()["state"] == "denied"
    assert first.api.get(f"{LINKS}/{link_id}").json()["state"] == "denied"
    refused = first.api.post(f"{LINKS}/{link_id}/reveal", first.reveal_body(), format="json")
    assert refused.status_code == 409 and _error(refused)["state"] == "denied"

    second = new_device(alice.user)
    link_id = request_link(second)
    assert second.api.delete(f"{LINKS}/{link_id}").status_code == 204
    assert second.api.delete(f"{LINKS}/{link_id}").status_code == 204, "cancelling is idempotent"
    assert DeviceLink.objects.get(pk=link_id).state == "cancelled"
    late = alice.phone.api.post(
        f"{LINKS}/{link_id}/challenge", {"nonce": b64u_encode(bytes(32))}, format="json"
    )
    assert late.status_code == 409 and _error(late)["state"] == "cancelled"


def test_a_new_request_cancels_the_one_in_progress(alice: Account) -> None:
    first, second = new_device(alice.user), new_device(alice.user)
    first_id = request_link(first)
    challenge(alice.phone, first_id)
    second_id = request_link(second)
    assert DeviceLink.objects.get(pk=first_id).state == "cancelled"
    assert [entry["id"] for entry in alice.phone.api.get(LINKS).json()["results"]] == [second_id]
    late = first.api.post(f"{LINKS}/{first_id}/reveal", first.reveal_body(), format="json")
    assert late.status_code == 409


def test_another_user_gets_404_for_everything(alice: Account, laptop: NewDevice) -> None:
    link_id = request_link(laptop)
    bob = account("bob")
    bob_new = new_device(bob.user)
    url = f"{LINKS}/{link_id}"
    attempts = [
        bob.phone.api.get(url),
        bob_new.api.get(url),
        bob.phone.api.post(f"{url}/challenge", {"nonce": b64u_encode(bytes(32))}, format="json"),
        bob_new.api.post(f"{url}/reveal", laptop.reveal_body(), format="json"),
        bob.phone.api.post(f"{url}/approve", approve_body(alice, laptop), format="json"),
        bob.phone.api.post(f"{url}/deny", {}, format="json"),
        bob_new.api.delete(url),
    ]
    for response in attempts:
        assert response.status_code == 404, response.content
        assert (_error(response)["code"], _error(response)["field"]) == (
            "link_not_found",
            "link_id",
        )
    assert bob.phone.api.get(LINKS).json()["results"] == []
    # Alice's real link looks to Bob exactly like one that does not exist.
    assert (
        bob.phone.api.get(f"{LINKS}/{link_id}").json()
        == bob.phone.api.get(f"{LINKS}/{uuid.uuid4()}").json()
    )
    assert DeviceLink.objects.get(pk=link_id).state == "pending"


def test_each_side_acts_only_as_itself(alice: Account, laptop: NewDevice) -> None:
    link_id = request_link(laptop)
    url = f"{LINKS}/{link_id}"
    stranger_api, _ = api_client_for(alice.user, name="another sign-in, no device")
    # Only the sign-in that asked may poll, reveal and cancel.
    for response in (
        stranger_api.get(url),
        stranger_api.post(f"{url}/reveal", laptop.reveal_body(), format="json"),
        stranger_api.delete(url),
    ):
        assert response.status_code == 403, response.content
        assert _error(response)["code"] in {"not_link_party", "not_requester"}
    # The new device cannot answer its own link, even naming an existing device.
    own = laptop.api.post(
        f"{url}/challenge",
        {"device": str(alice.phone.device.pk), "nonce": b64u_encode(bytes(32))},
        format="json",
    )
    assert own.status_code == 403
    assert (_error(own)["code"], _error(own)["field"]) == ("wrong_party", "device")
    # A bound token cannot speak for another device.
    tablet = existing_device(alice.user, alice.aik)
    other = tablet.api.post(
        f"{url}/challenge",
        {"device": str(alice.phone.device.pk), "nonce": b64u_encode(bytes(32))},
        format="json",
    )
    assert other.status_code == 400 and _error(other)["code"] == "wrong_device"
    challenge(alice.phone, link_id)
    reveal(laptop, link_id)
    # Only the device that showed the code approves; any device may deny.
    not_challenger = tablet.api.post(f"{url}/approve", approve_body(alice, laptop), format="json")
    assert not_challenger.status_code == 403
    assert _error(not_challenger)["code"] == "not_challenger"
    second_reveal = laptop.api.post(f"{url}/reveal", laptop.reveal_body(), format="json")
    assert second_reveal.status_code == 409
    assert tablet.api.post(f"{url}/deny", {}, format="json").json()["state"] == "denied"
    assert not Device.objects.filter(pk=laptop.keys.device_id).exists()


def test_a_revoked_device_cannot_answer(alice: Account, laptop: NewDevice) -> None:
    link_id = request_link(laptop)
    browser = APIClient()
    browser.force_login(alice.user)
    services.device_revoke(user=alice.user, device_id=alice.phone.device.pk)
    response = browser.post(
        f"{LINKS}/{link_id}/challenge",
        {"device": str(alice.phone.device.pk), "nonce": b64u_encode(bytes(32))},
        format="json",
    )
    assert response.status_code == 404 and _error(response)["code"] == "device_not_found"
    assert DeviceLink.objects.get(pk=link_id).state == "pending"


def test_an_expired_link_is_gone(alice: Account, laptop: NewDevice) -> None:
    link_id = request_link(laptop)
    challenge(alice.phone, link_id)
    DeviceLink.objects.filter(pk=link_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    url = f"{LINKS}/{link_id}"
    for response in (
        laptop.api.get(url),
        alice.phone.api.get(url),
        laptop.api.post(f"{url}/reveal", laptop.reveal_body(), format="json"),
        alice.phone.api.post(f"{url}/deny", {}, format="json"),
        laptop.api.delete(url),
    ):
        assert response.status_code == 410, response.content
        assert (_error(response)["code"], _error(response)["field"]) == ("link_expired", "link_id")
    assert alice.phone.api.get(LINKS).json()["results"] == []
    assert DeviceLink.objects.get(pk=link_id).state == "challenged", "nothing changed"
    # Starting again works (the expired one no longer counts as in progress).
    again = new_device(alice.user)
    request_link(again)
    assert DeviceLink.objects.get(pk=link_id).state == "cancelled"


def test_an_approved_link_stays_readable_after_its_ten_minutes(
    alice: Account, laptop: NewDevice
) -> None:
    link_id = revealed_link(alice, laptop)
    alice.phone.api.post(f"{LINKS}/{link_id}/approve", approve_body(alice, laptop), format="json")
    DeviceLink.objects.filter(pk=link_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    late = laptop.api.get(f"{LINKS}/{link_id}")
    assert late.status_code == 200 and late.json()["bundle"]


@pytest.mark.parametrize("case", ["bound_token", "no_identity_key", "no_device", "bad_commitment"])
def test_request_refusals(case: str) -> None:
    user = make_user()
    api, token = api_client_for(user)
    body = {"commitment": b64u_encode(bytes(32))}
    expected: tuple[int, str, str | None]
    if case == "bound_token":
        aik = give_identity(user)
        make_device(user, aik, token=token)
        expected = (409, "token_has_device", None)
    elif case == "no_identity_key":
        expected = (409, "identity_key_missing", None)
    elif case == "no_device":
        give_identity(user)
        expected = (409, "no_device", None)
    else:
        aik = give_identity(user)
        existing_device(user, aik)
        body = {"commitment": b64u_encode(bytes(31))}
        expected = (400, "length", "commitment")
    response = api.post(LINKS, body, format="json")
    error = _error(response)
    assert (response.status_code, error["code"], error["field"]) == expected
    assert not DeviceLink.objects.exists()


def test_listing_links_needs_an_existing_device(alice: Account, laptop: NewDevice) -> None:
    request_link(laptop)
    response = laptop.api.get(LINKS)
    assert response.status_code == 400 and _error(response)["field"] == "device"


def test_link_requests_use_the_keys_write_throttle(
    alice: Account, laptop: NewDevice, settings: Any
) -> None:
    settings.API_THROTTLE_RATES = {
        **settings.API_THROTTLE_RATES, "keys_write": "3/min", "device_link_read": "2/min",
    }  # fmt: skip
    link_id = request_link(laptop)
    # Polling has its own allowance: it does not use up the writes'.
    assert laptop.api.get(f"{LINKS}/{link_id}").status_code == 200
    assert alice.phone.api.get(f"{LINKS}/{link_id}").status_code == 200
    throttled = laptop.api.get(f"{LINKS}/{link_id}")
    assert throttled.status_code == 429
    nonce = b64u_encode(bytes(32))
    challenge = {"nonce": nonce}
    assert (
        alice.phone.api.post(f"{LINKS}/{link_id}/challenge", challenge, format="json").status_code
        == 200
    )
    assert alice.phone.api.post(f"{LINKS}/{link_id}/deny", {}, format="json").status_code == 200
    assert alice.phone.api.post(f"{LINKS}/{link_id}/deny", {}, format="json").status_code == 429


def test_polling_takes_a_fixed_number_of_queries(
    alice: Account, laptop: NewDevice, django_assert_num_queries: Any
) -> None:
    link_id = revealed_link(alice, laptop)
    laptop.api.get(f"{LINKS}/{link_id}")  # the token's last_used_at is fresh from here on
    with django_assert_num_queries(2):  # the token, the link
        assert laptop.api.get(f"{LINKS}/{link_id}").status_code == 200


def test_the_servers_commitment_matches_the_shared_vectors() -> None:
    vector = next(
        v
        for v in json.loads(VECTORS.read_text("utf-8"))["vectors"]
        if v["name"] == "link_commitment"
    )
    given = vector["input"]
    commitment = crypto.link_commitment(
        new_nonce=b64u_decode(given["new_nonce"]),
        user_id=uuid.UUID(given["user_id"]),
        device_id=uuid.UUID(given["device_id"]),
        sign_public_key=b64u_decode(given["sign_pub"]),
        box_public_key=b64u_decode(given["box_pub"]),
        created_at=given["created_at"],
    )
    assert b64u_encode(commitment) == vector["output"]["commitment"]
    assert (
        crypto.link_input(
            user_id=uuid.UUID(given["user_id"]),
            device_id=uuid.UUID(given["device_id"]),
            sign_public_key=b64u_decode(given["sign_pub"]),
            box_public_key=b64u_decode(given["box_pub"]),
            created_at=given["created_at"],
        ).decode()
        == vector["output"]["link_input_text"]
    )


# --- Concurrency and events (real transactions) -----------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_of_concurrent_approvals_exactly_one_registers_the_device() -> None:
    owner = account("alice_race")
    new = new_device(owner.user)
    link_id = revealed_link(owner, new)
    certificate = new.keys.certificate(owner.aik)
    bundle = bundle_for(owner, new)
    attempts = 6
    start = threading.Barrier(attempts)

    def approve(_: int) -> str:
        try:
            start.wait(timeout=30)
            services.device_link_approve(
                user=owner.user, link_id=uuid.UUID(link_id), device=owner.phone.device,
                certificate=certificate, bundle=bundle, token=owner.phone.token, session_key=None,
            )  # fmt: skip
            return "approved"
        except ApplicationError as error:
            return error.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=attempts) as pool:
        outcomes = sorted(pool.map(approve, range(attempts)))
    assert outcomes == ["approved"] + ["wrong_state"] * (attempts - 1)
    assert Device.objects.filter(pk=new.keys.device_id).count() == 1
    assert SecurityEvent.objects.filter(device_id=new.keys.device_id).count() == 1


async def _socket(existing: Existing) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(
        application,
        f"/ws/?device={existing.device.pk}",
        headers=[(b"authorization", f"Bearer {existing.key}".encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    return comm


@pytest.mark.django_db(transaction=True)
async def test_each_step_is_announced_to_the_users_sockets_and_to_no_one_else() -> None:
    def setup() -> tuple[Account, Account, NewDevice]:
        owner = account("alice_ev")
        return owner, account("bob_ev"), new_device(owner.user)

    owner, bob, new = await sync_to_async(setup)()
    alice_socket = await _socket(owner.phone)
    bob_socket = await _socket(bob.phone)

    link_id = await sync_to_async(request_link)(new)
    requested = await alice_socket.receive_json_from()
    stored = await sync_to_async(DeviceLink.objects.get)(pk=link_id)
    assert requested == {
        "type": "device.link_requested",
        "link_id": link_id,
        "expires_at": stored.expires_at.isoformat(),
    }
    await sync_to_async(challenge)(owner.phone, link_id)
    assert await alice_socket.receive_json_from() == {
        "type": "device.link_challenged",
        "link_id": link_id,
        "device_id": str(owner.phone.device.pk),
    }
    await sync_to_async(reveal)(new, link_id)
    assert await alice_socket.receive_json_from() == {
        "type": "device.link_revealed",
        "link_id": link_id,
    }
    response = await sync_to_async(new_approve)(owner, new, link_id)
    assert response == 200
    added = await alice_socket.receive_json_from()
    assert added == {"type": "device.added", "device_id": str(new.keys.device_id), "name": "Laptop"}
    assert await alice_socket.receive_json_from() == {
        "type": "device.link_approved",
        "link_id": link_id,
        "device_id": str(new.keys.device_id),
        "approved_by": str(owner.phone.device.pk),
    }
    # A denied and a cancelled link are announced too.
    other = await sync_to_async(new_device)(owner.user)
    second = await sync_to_async(request_link)(other)
    assert (await alice_socket.receive_json_from())["type"] == "device.link_requested"
    await sync_to_async(owner.phone.api.post)(f"{LINKS}/{second}/deny", {}, format="json")
    assert await alice_socket.receive_json_from() == {
        "type": "device.link_denied",
        "link_id": second,
    }
    third = await sync_to_async(new_device)(owner.user)
    third_id = await sync_to_async(request_link)(third)
    assert (await alice_socket.receive_json_from())["type"] == "device.link_requested"
    await sync_to_async(third.api.delete)(f"{LINKS}/{third_id}")
    assert await alice_socket.receive_json_from() == {
        "type": "device.link_cancelled",
        "link_id": third_id,
    }
    assert await alice_socket.receive_nothing(timeout=0.2)
    assert await bob_socket.receive_nothing(timeout=0.3), "other users hear nothing"
    for comm in (alice_socket, bob_socket):
        await comm.disconnect()


def new_approve(owner: Account, new: NewDevice, link_id: str) -> int:
    response = owner.phone.api.post(
        f"{LINKS}/{link_id}/approve", approve_body(owner, new), format="json"
    )
    return int(response.status_code)
