"""Test users with real keys, and envelopes built straight from PROTOCOL.md section 3
with PyNaCl (independently of the reference client, so each checks the other)."""

import asyncio
import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

from channels.testing import WebsocketCommunicator
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import Box, PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey
from rest_framework.test import APIClient

from accounts import crypto, services
from accounts.models import ApiToken, Device, User
from accounts.tests.factories import make_device, make_user
from common.encoding import b64u_decode, b64u_encode, signing_input
from config.asgi import application


@dataclass
class Phone:
    """One device of a user, with its keys and an API client bound to it."""

    user: User
    device: Device
    box: PrivateKey
    token: ApiToken
    key: str  # the bearer token, bound to this device
    api: APIClient


@dataclass
class Person:
    user: User
    aik: SigningKey
    history_key: PrivateKey | None = None
    phones: list[Phone] = field(default_factory=list)

    def add_phone(self) -> Phone:
        token, key = services.api_token_create(user=self.user, name="phone")
        device, keys = make_device(self.user, self.aik, token=token)
        token.refresh_from_db()
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        phone = Phone(self.user, device, keys.box, token, key, api)
        self.phones.append(phone)
        return phone


class Socket(WebsocketCommunicator):
    """An in-process socket that, unless asked, passes over notification frames: they
    come from background tasks (a follow made in a test's setup, say) at moments a test
    of something else cannot predict, on a real worker (make test-services)."""

    skipped: frozenset[str] = frozenset({"notification", "notifications.unread"})

    def _skips(self, payload: Any) -> bool:
        return isinstance(payload, str) and json.loads(payload).get("type") in self.skipped

    async def receive_from(self, timeout: float = 1) -> Any:
        while True:
            payload = await super().receive_from(timeout)
            if not self._skips(payload):
                return payload

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        await asyncio.sleep(timeout)
        while not self.output_queue.empty():
            message = self.output_queue.get_nowait()
            if not self._skips(message.get("text")):
                return False
        return True


async def connect(phone: Phone, *, notifications: bool = False) -> WebsocketCommunicator:
    """An in-process socket of this phone's device, past its hello (``notifications``:
    keep notification frames)."""
    comm = (WebsocketCommunicator if notifications else Socket)(
        application,
        f"/ws/?device={phone.device.pk}",
        headers=[(b"authorization", f"Bearer {phone.key}".encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "hello"
    return comm


def person(handle: str | None = None, *, phones: int = 1, history_key: bool = True) -> Person:
    user = make_user(handle)
    aik = SigningKey.generate()
    services.identity_key_set(user=user, public_key=bytes(aik.verify_key))
    someone = Person(user, aik)
    if history_key:
        hk = PrivateKey.generate()
        message = crypto.history_key_certificate_input(
            user_id=user.pk, public_key=bytes(hk.public_key)
        )
        services.history_key_set(
            user=user, public_key=bytes(hk.public_key), certificate=aik.sign(message).signature
        )
        someone.history_key = hk
    for _ in range(phones):
        someone.add_phone()
    return someone


def envelope(
    *,
    sender: Phone,
    conversation_id: Any,
    recipients: list[Person],
    payload: dict[str, Any] | None = None,
    client_id: uuid.UUID | None = None,
    skip_device: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(envelope JSON, secrets: payload bytes, K, FK) for every active device of
    ``recipients`` (the sender's own person included by the caller)."""
    payload_bytes = json.dumps(
        payload or {"type": "text", "body": "hi", "sent_at": 1763660000, "reply_to": None,
                    "attachments": []},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    key, nonce, fk = secrets.token_bytes(32), secrets.token_bytes(24), secrets.token_bytes(32)
    client_id = client_id or uuid.uuid4()
    ad = signing_input("parley/msg/v1", str(conversation_id), str(sender.device.pk), str(client_id))
    ciphertext = crypto_aead_xchacha20poly1305_ietf_encrypt(fk + payload_bytes, ad, nonce, key)
    wraps = {}
    history = {}
    for someone in recipients:
        for device in Device.objects.filter(user=someone.user, revoked_at__isnull=True):
            if str(device.pk) == str(skip_device):
                continue
            box = Box(sender.box, PublicKey(bytes(device.box_public_key)))
            device_nonce = secrets.token_bytes(24)
            wraps[str(device.pk)] = b64u_encode(
                device_nonce + box.encrypt(key, device_nonce).ciphertext
            )
        if someone.history_key is not None:
            history[str(someone.user.pk)] = b64u_encode(
                SealedBox(someone.history_key.public_key).encrypt(key)
            )
    body = {
        "v": 1,
        "client_id": str(client_id),
        "sender_device": str(sender.device.pk),
        "nonce": b64u_encode(nonce),
        "ciphertext": b64u_encode(ciphertext),
        "franking_tag": b64u_encode(
            blake2b(payload_bytes, key=fk, digest_size=32, encoder=RawEncoder)
        ),
        "keys": wraps,
        "history_keys": history,
        "expires_in": None,
    }
    return body, {"payload": payload_bytes, "key": key, "fk": fk}


def open_message(
    message: dict[str, Any], *, reader: Phone, sender_box_public: bytes
) -> dict[str, Any]:
    """What a recipient does: unwrap K, open the ciphertext, check the franking tag."""
    wrap = b64u_decode(message["key"])
    key = Box(reader.box, PublicKey(sender_box_public)).decrypt(wrap[24:], wrap[:24])
    ad = signing_input(
        "parley/msg/v1", message["conversation_id"], message["sender_device"], message["client_id"]
    )
    plaintext = crypto_aead_xchacha20poly1305_ietf_decrypt(
        b64u_decode(message["ciphertext"]), ad, b64u_decode(message["nonce"]), key
    )
    fk, payload = plaintext[:32], plaintext[32:]
    tag = blake2b(payload, key=fk, digest_size=32, encoder=RawEncoder)
    assert tag == b64u_decode(message["franking_tag"]), "franking tag"
    return json.loads(payload)
