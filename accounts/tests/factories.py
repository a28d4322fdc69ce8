"""Test data made the way users make it: through services, with real keys."""

import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey
from rest_framework.test import APIClient

from accounts import crypto, services
from accounts.models import ApiToken, Device, User
from common.encoding import b64u_encode

PASSWORD = "correct horse battery staple"
_numbers = itertools.count(1)


def make_user(handle: str | None = None, **extra: Any) -> User:
    handle = handle or f"user{next(_numbers)}_{uuid.uuid4().hex[:4]}"
    return services.user_sign_up(
        handle=handle, email=f"{handle.lower()}@example.com", password=PASSWORD, **extra
    )


def give_identity(user: User) -> SigningKey:
    aik = SigningKey.generate()
    services.identity_key_set(user=user, public_key=bytes(aik.verify_key))
    return aik


@dataclass
class DeviceKeys:
    user_id: uuid.UUID
    device_id: uuid.UUID = field(default_factory=uuid.uuid4)
    sign: SigningKey = field(default_factory=SigningKey.generate)
    box: PrivateKey = field(default_factory=PrivateKey.generate)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def certificate(self, aik: SigningKey) -> bytes:
        message = crypto.device_certificate_input(
            user_id=self.user_id,
            device_id=self.device_id,
            sign_public_key=bytes(self.sign.verify_key),
            box_public_key=bytes(self.box.public_key),
            created_at=self.created_at,
        )
        return aik.sign(message).signature

    def payload(self, aik: SigningKey, name: str = "Test phone") -> dict[str, Any]:
        """The JSON body of POST /api/v1/devices."""
        return {
            "device_id": str(self.device_id),
            "name": name,
            "sign_pub": b64u_encode(bytes(self.sign.verify_key)),
            "box_pub": b64u_encode(bytes(self.box.public_key)),
            "created_at": self.created_at,
            "certificate": b64u_encode(self.certificate(aik)),
        }


def make_device(
    user: User, aik: SigningKey, token: ApiToken | None = None
) -> tuple[Device, DeviceKeys]:
    keys = DeviceKeys(user_id=user.pk)
    device = services.device_register(
        user=user,
        device_id=keys.device_id,
        name="Test phone",
        sign_public_key=bytes(keys.sign.verify_key),
        box_public_key=bytes(keys.box.public_key),
        created_at=keys.created_at,
        certificate=keys.certificate(aik),
        token=token,
    )
    return device, keys


def api_client_for(user: User, name: str = "test") -> tuple[APIClient, ApiToken]:
    token, key = services.api_token_create(user=user, name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, token
