"""Bench data: users with one device and one API token each, paired into direct
conversations. Rows are written in bulk: signing up and certifying keys are not what
the load test measures, and doing them through the API would take minutes at 5,000
devices. The server never checks a message's cryptography (it cannot), only the
envelope's shape and device set, so random key bytes serve."""

import secrets
import time
import uuid
from dataclasses import dataclass

from django.contrib.auth.hashers import make_password
from django.db import transaction

from accounts.models import ApiToken, Device, IdentityKey, User
from accounts.services import TOKEN_PREFIX, _token_hash
from messaging.models import Conversation, Membership


@dataclass(frozen=True)
class BenchDevice:
    user_id: str
    device_id: str
    token: str


@dataclass(frozen=True)
class BenchPair:
    """One direct conversation: ``sender`` writes, ``receiver`` reads."""

    conversation_id: str
    sender: BenchDevice
    receiver: BenchDevice


def random_device(user: User, identity_key: IdentityKey, name: str) -> Device:
    """A device row with random key bytes, certified by no one."""
    return Device(
        id=uuid.uuid4(),
        user=user,
        identity_key=identity_key,
        name=name,
        sign_public_key=secrets.token_bytes(32),
        box_public_key=secrets.token_bytes(32),
        created_at=int(time.time()),
        certificate=secrets.token_bytes(64),
    )


def seed_pairs(count: int, *, tag: str) -> list[BenchPair]:
    """``count`` conversations between ``2 * count`` fresh users (handles ``b<tag><n>``)."""
    unusable = make_password(None)  # bench users never sign in with a password
    users = [
        User(
            handle=f"b{tag}{index:05d}",
            email=f"b{tag}{index:05d}@bench.invalid",
            password=unusable,
        )
        for index in range(2 * count)
    ]
    identity_keys = [IdentityKey(user=user, public_key=secrets.token_bytes(32)) for user in users]
    devices = [
        random_device(user, identity_key, "bench")
        for user, identity_key in zip(users, identity_keys, strict=True)
    ]
    keys = [TOKEN_PREFIX + secrets.token_urlsafe(32) for _ in users]
    tokens = [
        ApiToken(user=user, device=device, name="bench", key_hash=_token_hash(key), prefix=key[:12])
        for user, device, key in zip(users, devices, keys, strict=True)
    ]
    conversations = []
    memberships = []
    for index in range(count):
        sender, receiver = users[2 * index], users[2 * index + 1]
        low, high = sorted([str(sender.pk), str(receiver.pk)])
        conversation = Conversation(
            kind=Conversation.Kind.DIRECT, direct_key=f"{low}:{high}", created_by=sender
        )
        conversations.append(conversation)
        memberships += [
            Membership(conversation=conversation, user=sender),
            # Accepted, as if the receiver followed the sender.
            Membership(conversation=conversation, user=receiver, added_by=sender),
        ]
    with transaction.atomic():
        User.objects.bulk_create(users, batch_size=1000)
        IdentityKey.objects.bulk_create(identity_keys, batch_size=1000)
        Device.objects.bulk_create(devices, batch_size=1000)
        ApiToken.objects.bulk_create(tokens, batch_size=1000)
        Conversation.objects.bulk_create(conversations, batch_size=1000)
        Membership.objects.bulk_create(memberships, batch_size=1000)
    bench_devices = [
        BenchDevice(user_id=str(user.pk), device_id=str(device.pk), token=key)
        for user, device, key in zip(users, devices, keys, strict=True)
    ]
    return [
        BenchPair(
            conversation_id=str(conversation.pk),
            sender=bench_devices[2 * index],
            receiver=bench_devices[2 * index + 1],
        )
        for index, conversation in enumerate(conversations)
    ]
