"""Channel layer group names: the one place they are spelled (docs/realtime.md)."""

import hashlib
import uuid


def user_group(user_id: uuid.UUID | str) -> str:
    return f"user.{user_id}"


def device_group(device_id: uuid.UUID | str) -> str:
    return f"device.{device_id}"


def token_group(token_id: int) -> str:
    return f"token.{token_id}"


def session_group(session_key: str) -> str:
    # The session key is a credential: only a digest of it travels through Redis.
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:32]
