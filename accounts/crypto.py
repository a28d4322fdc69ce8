"""Signature checks on key material (PROTOCOL.md sections 1 and 6).

The server verifies what it stores so that a broken client cannot publish a
device nobody can trust; clients still verify everything themselves.
"""

import uuid

from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.encoding import RawEncoder
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.hash import blake2b
from nacl.signing import VerifyKey

from common.encoding import b64u_encode, signing_input

DEVICE_LABEL = "parley/device/v1"
HISTORY_KEY_LABEL = "parley/history-key/v1"
BACKUP_LABEL = "parley/backup/v1"
LINK_LABEL = "parley/link/v1"


def _device_keys_input(
    label: str,
    *,
    user_id: uuid.UUID,
    device_id: uuid.UUID,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
) -> bytes:
    """``{label}\n{user_id}\n{device_id}\n{sign_pub}\n{box_pub}\n{created_at}``."""
    return signing_input(
        label,
        str(user_id),
        str(device_id),
        b64u_encode(sign_public_key),
        b64u_encode(box_public_key),
        created_at,
    )


def device_certificate_input(
    *,
    user_id: uuid.UUID,
    device_id: uuid.UUID,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
) -> bytes:
    return _device_keys_input(
        DEVICE_LABEL,
        user_id=user_id,
        device_id=device_id,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
    )


def link_input(
    *,
    user_id: uuid.UUID,
    device_id: uuid.UUID,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
) -> bytes:
    """What a new device commits to when it asks to be linked (docs/keys-and-devices.md)."""
    return _device_keys_input(
        LINK_LABEL,
        user_id=user_id,
        device_id=device_id,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
    )


def link_commitment(
    *,
    new_nonce: bytes,
    user_id: uuid.UUID,
    device_id: uuid.UUID,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
) -> bytes:
    """``mac(key = new_nonce, data = link input)``: keyed BLAKE2b-256."""
    data = link_input(
        user_id=user_id,
        device_id=device_id,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
    )
    return blake2b(data, key=new_nonce, digest_size=32, encoder=RawEncoder)


def history_key_certificate_input(*, user_id: uuid.UUID, public_key: bytes) -> bytes:
    return signing_input(HISTORY_KEY_LABEL, str(user_id), b64u_encode(public_key))


def signature_is_valid(*, public_key: bytes, message: bytes, signature: bytes) -> bool:
    try:
        VerifyKey(public_key).verify(message, signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError):
        return False
    return True


def is_valid_ed25519_public_key(public_key: bytes) -> bool:
    """A point on the curve, not of small order: no signature verifies under anything else."""
    try:
        return len(public_key) == 32 and bool(crypto_core_ed25519_is_valid_point(public_key))
    except (CryptoError, ValueError, TypeError):
        return False
