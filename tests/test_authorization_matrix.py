"""The authorization matrix of the API (and of every website page with account data): for
every endpoint and method, what each kind of caller gets (docs/api.md, docs/messages.md,
docs/calls.md, docs/privacy.md, docs/moderation.md).

Actors:

- ``owner``: Alice, whose objects they are (the admin of a group, a party of a call);
- ``other``: Eve, signed in, unrelated to Alice;
- ``blocked``: Mallory, whom Alice blocks;
- ``moderator``: Kim, staff with the Moderators role: in the API, a user like any other
  (the panel grants no reading through the API);
- ``anonymous``: no credentials.

Endpoints that act on a person (``users/{handle}/...``, starting a conversation) are
called on Alice by everyone else, and by Alice on her friend Carol.

Every endpoint of the URL conf has a row (``test_every_endpoint_has_a_row``). A refusal
must leave the database as it was and show none of Alice's data (``SECRETS``: her bio,
e-mail, group name, message ciphertext, attachment, token and device names, backup,
warning, ids of her notification, call and link...). So must everything answered to
someone else for their own account.
"""

import io
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.http import HttpResponseBase
from django.test import Client
from django.urls import URLPattern, URLResolver
from django.utils import timezone
from nacl.public import PublicKey, SealedBox
from nacl.signing import SigningKey
from PIL import Image
from rest_framework.test import APIClient

from accounts import crypto
from accounts import services as account_services
from accounts.models import ApiToken
from accounts.tests.factories import PASSWORD, DeviceKeys, api_client_for
from accounts.tests.test_device_link import NewDevice, new_device
from calls.models import Call
from calls.tests.support import make_call
from common.encoding import b64u_encode
from config.urls import api_v1
from messaging import services as messaging_services
from messaging.models import Message
from messaging.serializers import EnvelopeSerializer
from messaging.tests.support import Person, envelope, person
from moderation import services as moderation_services
from moderation.models import AccountWarning
from moderation.roles import MODERATORS
from notifications import services as notification_services
from notifications.tests.test_services import AUTH, P256DH

pytestmark = pytest.mark.django_db

ACTORS = ("owner", "other", "blocked", "moderator", "anonymous")
SIGNED_IN = ACTORS[:4]

MARK = "zq7Marker"
BIO = f"{MARK} bio: climbing and tea"
GROUP_NAME = f"{MARK} group"
TOKEN_NAME = f"{MARK} token"
DEVICE_NAME = f"{MARK} device"
WARNING_TEXT = f"{MARK} warning: no spam"
ATTACHMENT = f"{MARK} attachment bytes".encode() * 4
BACKUP = f"{MARK} backup ciphertext".encode() * 2
OFFER = b64u_encode(f"{MARK} boxed offer".encode() * 3)
PUSH_ENDPOINT = f"https://fcm.googleapis.com/fcm/send/{MARK}"


# --- The world --------------------------------------------------------------------------------


@dataclass
class LinkInProgress:
    """Alice's new laptop asking to be linked to her phone."""

    new: NewDevice
    id: str
    state: str = "pending"


class World:
    """Alice's data, everyone else's accounts and clients; made through the services and
    the API, as people make them."""

    @cached_property
    def alice(self) -> Person:
        alice = person()
        account_services.user_update_profile(user=alice.user, bio=BIO)
        account_services.user_update_privacy(user=alice.user, call_policy="following")
        return alice

    @cached_property
    def carol(self) -> Person:
        """Alice's friend: a member of her group, the other party of her call."""
        carol = person()
        account_services.user_follow(follower=carol.user, followee=self.alice.user)
        account_services.user_follow(follower=self.alice.user, followee=carol.user)
        return carol

    @cached_property
    def eve(self) -> Person:
        return person()

    @cached_property
    def mallory(self) -> Person:
        mallory = person()
        account_services.user_block(blocker=self.alice.user, blocked=mallory.user)
        return mallory

    @cached_property
    def kim(self) -> Person:
        kim = person()
        moderation_services.role_grant(
            granter=None, user_id=kim.user.pk, role=MODERATORS, reason="joined the team"
        )
        kim.user.refresh_from_db()
        return kim

    @cached_property
    def dave(self) -> Person:
        """Someone Alice may add to her group."""
        dave = person()
        account_services.user_follow(follower=dave.user, followee=self.alice.user)
        return dave

    def person(self, actor: str) -> Person:
        return {
            "owner": self.alice, "other": self.eve, "blocked": self.mallory, "moderator": self.kim,
        }[actor]  # fmt: skip

    def target(self, actor: str) -> Person:
        """Whom an endpoint about a person is called on: Alice, or by Alice, Carol."""
        return self.carol if actor == "owner" else self.alice

    def api(self, actor: str) -> APIClient:
        return APIClient() if actor == "anonymous" else self.person(actor).phones[0].api

    def unbound_api(self, actor: str) -> APIClient:
        """A fresh sign-in with no device yet (a new install)."""
        if actor == "anonymous":
            return APIClient()
        return api_client_for(self.person(actor).user, name="new install")[0]

    # Alice's objects.

    @cached_property
    def group_id(self) -> str:
        conversation = messaging_services.conversation_create_group(
            creator=self.alice.user, name=GROUP_NAME, members=[self.carol.user]
        )
        return str(conversation.pk)

    def send(self, sender: Person, recipients: list[Person]) -> tuple[Message, dict[str, Any]]:
        body, keys = envelope(
            sender=sender.phones[0], conversation_id=self.group_id, recipients=recipients
        )
        parsed = EnvelopeSerializer(data=body)
        assert parsed.is_valid(), parsed.errors
        message, _ = messaging_services.message_send(
            sender=sender.user, conversation_id=uuid.UUID(self.group_id),
            envelope=parsed.to_envelope(), token=sender.phones[0].token,
        )  # fmt: skip
        return message, keys

    @cached_property
    def message(self) -> Message:
        """Alice's message in her group."""
        return self.send(self.alice, [self.alice, self.carol])[0]

    @cached_property
    def carols_message(self) -> tuple[Message, dict[str, Any]]:
        """A message Alice received, with what her client knows of it (for a report)."""
        return self.send(self.carol, [self.alice, self.carol])

    @cached_property
    def attachment_id(self) -> str:
        attachment = messaging_services.attachment_upload(
            user=self.alice.user,
            conversation_id=uuid.UUID(self.group_id),
            upload=SimpleUploadedFile("blob", ATTACHMENT),
        )
        return str(attachment.pk)

    @cached_property
    def request_id(self) -> str:
        """A conversation a stranger started with Alice: a request she may answer."""
        stranger = person(phones=0, history_key=False)
        conversation, _ = messaging_services.conversation_get_or_create_direct(
            user=stranger.user, other=self.alice.user
        )
        return str(conversation.pk)

    @cached_property
    def call(self) -> Call:
        """Carol calling Alice: ringing on Alice's phone with its boxed offer."""
        return make_call(
            self.carol, self.alice, Call.State.RINGING,
            offers={str(self.alice.phones[0].device.pk): OFFER},
        )  # fmt: skip

    @cached_property
    def token_id(self) -> int:
        token, _ = account_services.api_token_create(user=self.alice.user, name=TOKEN_NAME)
        return token.pk

    @cached_property
    def device_id(self) -> str:
        """Alice's second device (not the phone every request comes from)."""
        keys = DeviceKeys(user_id=self.alice.user.pk)
        account_services.device_register(
            user=self.alice.user, device_id=keys.device_id, name=DEVICE_NAME,
            sign_public_key=bytes(keys.sign.verify_key), box_public_key=bytes(keys.box.public_key),
            created_at=keys.created_at, certificate=keys.certificate(self.alice.aik),
        )  # fmt: skip
        return str(keys.device_id)

    @cached_property
    def _link(self) -> LinkInProgress:
        laptop = new_device(self.alice.user)
        link = account_services.device_link_request(
            user=self.alice.user, commitment=laptop.commitment(), token=laptop.token,
            session_key=None,
        )  # fmt: skip
        return LinkInProgress(laptop, str(link.pk))

    def link(self, state: str = "pending") -> LinkInProgress:
        """Alice's link, taken on to ``state`` (challenged: her phone sent its nonce;
        revealed: the laptop revealed its keys)."""
        link, phone = self._link, self.alice.phones[0].api
        steps = ["pending", "challenged", "revealed"]
        while steps.index(link.state) < steps.index(state):
            if link.state == "pending":
                nonce = {"nonce": b64u_encode(secrets.token_bytes(32))}
                response = phone.post(f"/api/v1/devices/links/{link.id}/challenge", nonce,
                                      format="json")  # fmt: skip
                link.state = "challenged"
            else:
                response = link.new.api.post(
                    f"/api/v1/devices/links/{link.id}/reveal", link.new.reveal_body(),
                    format="json",
                )  # fmt: skip
                link.state = "revealed"
            assert response.status_code == 200, response.content
        return link

    def approve_body(self) -> dict[str, Any]:
        new, alice = self.link("revealed").new, self.alice
        assert alice.history_key is not None
        bundle = json.dumps({
            "aik_seed": b64u_encode(bytes(alice.aik)),
            "hk_secret": b64u_encode(bytes(alice.history_key)),
        }).encode()  # fmt: skip
        return {
            "certificate": b64u_encode(new.keys.certificate(alice.aik)),
            "bundle": b64u_encode(
                bytes(SealedBox(PublicKey(bytes(new.keys.box.public_key))).encrypt(bundle))
            ),
        }

    @cached_property
    def warning_id(self) -> int:
        moderation_services.user_moderate(
            moderator=self.kim.user,
            user_id=self.alice.user.pk,
            action=moderation_services.ActionInput(
                kind="warn", reason="Reported for spam.", note=WARNING_TEXT
            ),
        )
        return int(AccountWarning.objects.get(user=self.alice.user).pk)

    @cached_property
    def notification_id(self) -> str:
        notification = notification_services.notify_new_follower(
            follower_id=self.carol.user.pk, followee_id=self.alice.user.pk
        )
        assert notification is not None
        return str(notification.pk)

    @cached_property
    def push_endpoint(self) -> str:
        notification_services.push_subscribe(
            user=self.alice.user, endpoint=PUSH_ENDPOINT, p256dh=P256DH, auth=AUTH,
            device_id=self.alice.phones[0].device.pk,
        )  # fmt: skip
        return PUSH_ENDPOINT

    @cached_property
    def backup(self) -> bytes:
        account_services.key_backup_put(
            user=self.alice.user, nonce=secrets.token_bytes(24), ciphertext=BACKUP, kdf="raw"
        )
        return BACKUP

    def everything(self) -> dict[str, bytes]:
        """Make all of Alice's data; what of it must not reach anyone else."""
        found = {
            "bio": BIO,
            "e-mail": self.alice.user.email,
            "group name": GROUP_NAME,
            "group id": self.group_id,
            "request id": self.request_id,
            "ciphertext": b64u_encode(bytes(self.message.ciphertext)),
            "carol's ciphertext": b64u_encode(bytes(self.carols_message[0].ciphertext)),
            "attachment id": self.attachment_id,
            "call id": str(self.call.pk),
            "offer": OFFER,
            "token name": TOKEN_NAME,
            "device name": DEVICE_NAME,
            "device id": self.device_id,
            "link id": self._link.id,
            "warning": WARNING_TEXT,
            "notification id": self.notification_id,
            "push endpoint": self.push_endpoint,
            "backup": b64u_encode(self.backup),
        }
        # Visible on Alice's profile to those she does not block; Mallory must not see it.
        self.mallory  # noqa: B018
        return {name: value.encode() for name, value in found.items()} | {"blob": ATTACHMENT}


@pytest.fixture
def world() -> World:
    return World()


# --- Nothing changed ----------------------------------------------------------------------------


def snapshot() -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, by table (as ``common.testing.database_dump`` reads them,
    but kept apart so that a failure names the table)."""
    tables: dict[str, list[tuple[str, ...]]] = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608  (names from introspection)
            tables[table] = sorted(
                tuple(
                    repr(bytes(value) if isinstance(value, memoryview) else value) for value in row
                )
                for row in cursor.fetchall()
            )
    return tables


def noted_as_used() -> None:
    """A token notes its first use (then once a minute): note it before a snapshot."""
    ApiToken.objects.update(last_used_at=timezone.now())


def changed_tables(before: dict[str, list[tuple[str, ...]]]) -> list[str]:
    after = snapshot()
    return sorted(table for table in after if after[table] != before.get(table))


# --- The table ---------------------------------------------------------------------------------

# An expectation is the success status (allowed), or (status, code) (refused: nothing
# changes), or Unchanged(status) (answered, but someone else's ids change nothing).


@dataclass(frozen=True)
class Unchanged:
    status: int


Expect = int | tuple[int, str] | Unchanged
PathFor = Callable[[World, str], str]
BodyFor = Callable[[World, str], Any]

UNAUTHENTICATED = (401, "not_authenticated")


@dataclass(frozen=True)
class Row:
    """One endpoint and method: how to call it for an actor, and what each actor gets.

    ``expect`` is (owner, other, blocked, moderator); anonymous callers get 401 unless
    ``anonymous`` says otherwise. ``visible`` names entries of ``World.everything`` that
    others may legitimately be shown here."""

    method: str
    route: str  # as in the URL conf, under /api/v1/
    expect: tuple[Expect, Expect, Expect, Expect]
    path: PathFor | None = None
    body: BodyFor | None = None
    client: Callable[[World, str], APIClient] | None = None
    prepare: Callable[[World], object] | None = None  # what the owner must have first
    multipart: bool = False
    anonymous: Expect = UNAUTHENTICATED
    visible: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}"

    def expected(self, actor: str) -> Expect:
        return self.anonymous if actor == "anonymous" else self.expect[SIGNED_IN.index(actor)]


def nf(thing: str) -> tuple[int, str]:
    return (404, f"{thing}_not_found")


# Alice's objects, for everyone but Alice.
CONVERSATION, CALL, TOKEN, DEVICE, LINK = (
    nf("conversation"), nf("call"), nf("token"), nf("device"), nf("link")
)  # fmt: skip
USER = nf("user")


def mine(status: int, hidden: tuple[int, str]) -> tuple[Expect, Expect, Expect, Expect]:
    """Alice's object: hers to use, and for everyone else as if it did not exist."""
    return (status, hidden, hidden, hidden)


def own(status: int) -> tuple[Expect, Expect, Expect, Expect]:
    """Each caller's own account: everyone gets theirs, none of Alice's."""
    return (status, status, status, status)


def person_facing(status: int, *, blocked: Expect = USER) -> tuple[Expect, Expect, Expect, Expect]:
    """Called on a person (Alice, or Carol by Alice): hidden from whom Alice blocks."""
    return (status, status, blocked, status)


def conv(suffix: str = "") -> PathFor:
    return lambda w, a: f"conversations/{w.group_id}{suffix}"


def handle(suffix: str = "") -> PathFor:
    return lambda w, a: f"users/{w.target(a).user.handle}{suffix}"


def request_path(answer: str) -> PathFor:
    return lambda w, a: f"conversations/{w.request_id}/{answer}"


def link(suffix: str = "", state: str = "pending") -> PathFor:
    return lambda w, a: f"devices/links/{w.link(state).id}{suffix}"


def laptop(w: World, actor: str) -> APIClient:
    """Alice's new device for the link steps it takes; everyone else's own new sign-in."""
    return w.link().new.api if actor == "owner" else w.unbound_api(actor)


def message_body(w: World, actor: str) -> dict[str, Any]:
    """A well-made envelope to the group's members, from the caller's own phone."""
    sender = w.person(actor) if actor != "anonymous" else w.alice
    return envelope(
        sender=sender.phones[0], conversation_id=w.group_id, recipients=[w.alice, w.carol]
    )[0]


def report_body(w: World, actor: str) -> dict[str, Any]:
    message, keys = w.carols_message
    return {
        "message_id": str(message.pk), "payload": b64u_encode(keys["payload"]),
        "franking_key": b64u_encode(keys["fk"]), "reason": "spam",
    }  # fmt: skip


def avatar(w: World, actor: str) -> dict[str, Any]:
    image = io.BytesIO()
    Image.new("RGB", (8, 8), "teal").save(image, "PNG")
    return {"avatar": SimpleUploadedFile("a.png", image.getvalue(), content_type="image/png")}


def identity_body(w: World, actor: str) -> dict[str, Any]:
    return {"aik_pub": b64u_encode(bytes(SigningKey.generate().verify_key)), "password": PASSWORD}


def history_body(w: World, actor: str) -> dict[str, Any]:
    someone = w.person(actor) if actor != "anonymous" else w.alice
    hk = SigningKey.generate().verify_key  # any 32 bytes will do as a public key
    message = crypto.history_key_certificate_input(user_id=someone.user.pk, public_key=bytes(hk))
    return {
        "hk_pub": b64u_encode(bytes(hk)),
        "certificate": b64u_encode(someone.aik.sign(message).signature),
    }


def device_body(w: World, actor: str) -> dict[str, Any]:
    someone = w.person(actor) if actor != "anonymous" else w.alice
    return DeviceKeys(user_id=someone.user.pk).payload(someone.aik)


def reveal_body(w: World, actor: str) -> dict[str, Any]:
    return w.link("challenged").new.reveal_body()


def handles(w: World, actor: str) -> dict[str, Any]:
    return {"handles": [w.dave.user.handle]}


def login_body(w: World, actor: str) -> dict[str, Any]:
    someone = w.eve if actor == "anonymous" else w.person(actor)
    return {"login": someone.user.handle, "password": PASSWORD}


def signup_body(w: World, actor: str) -> dict[str, Any]:
    name = f"new_{uuid.uuid4().hex[:8]}"
    return {"handle": name, "email": f"{name}@example.com", "password": PASSWORD}


def const(value: Any) -> BodyFor:
    return lambda w, a: value


# The key directory lists every active device by id (without its name).
DIRECTORY = frozenset({"device id"})
NONCE = {"nonce": b64u_encode(b"\x07" * 32)}
SEQ = {"seq": 1}

ROWS: list[Row] = [
    # Sign-up, sign-in, tokens. Sign-up and sign-in ignore credentials.
    Row("POST", "auth/signup", own(201), body=signup_body, anonymous=201),
    Row("POST", "auth/login", own(200), body=login_body, anonymous=200),
    Row("POST", "auth/logout", own(204)),
    Row("POST", "auth/password", own(204),
        body=const({"old_password": PASSWORD, "new_password": "another horse battery"})),
    Row("GET", "auth/tokens", own(200)),
    Row("DELETE", "auth/tokens/<int:token_id>", mine(204, TOKEN),
        path=lambda w, a: f"auth/tokens/{w.token_id}"),
    # The caller.
    Row("GET", "me", own(200)),
    Row("PATCH", "me", own(200), body=const({"display_name": "Someone"})),
    Row("PUT", "me/avatar", own(200), body=avatar, multipart=True),
    Row("DELETE", "me/avatar", own(200)),
    Row("GET", "me/blocks", own(200)),
    Row("GET", "me/security-events", own(200)),
    Row("GET", "me/warnings", own(200)),
    Row("POST", "me/warnings/<int:warning_id>/acknowledge", mine(200, nf("warning")),
        path=lambda w, a: f"me/warnings/{w.warning_id}/acknowledge"),
    # Users and the social graph.
    Row("GET", "users", own(200), path=lambda w, a: f"users?q={w.alice.user.handle}"),
    Row("GET", "users/<str:handle>", person_facing(200), path=handle(),
        visible=frozenset({"bio"})),
    Row("POST", "users/<str:handle>/follow", person_facing(204), path=handle("/follow")),
    Row("DELETE", "users/<str:handle>/follow", person_facing(204), path=handle("/follow")),
    Row("POST", "users/<str:handle>/block", person_facing(204), path=handle("/block")),
    Row("DELETE", "users/<str:handle>/block", person_facing(204), path=handle("/block")),
    Row("POST", "users/<str:handle>/mute", person_facing(204), path=handle("/mute")),
    Row("DELETE", "users/<str:handle>/mute", person_facing(204), path=handle("/mute")),
    # Someone Alice blocks may still report her profile (docs/api.md).
    Row("POST", "users/<str:handle>/report", person_facing(201, blocked=201),
        path=handle("/report"), body=const({"reason": "spam"})),
    Row("GET", "users/<str:handle>/followers", person_facing(200), path=handle("/followers")),
    Row("GET", "users/<str:handle>/following", person_facing(200), path=handle("/following")),
    # Keys and devices. The key directory is public, except to whom Alice blocks.
    Row("GET", "users/<str:handle>/keys", person_facing(200), path=handle("/keys"),
        visible=DIRECTORY),
    Row("GET", "keys/<uuid:user_id>", person_facing(200),
        path=lambda w, a: f"keys/{w.target(a).user.pk}", visible=DIRECTORY),
    Row("PUT", "keys/identity", own(200), body=identity_body),
    Row("PUT", "keys/history", own(200), body=history_body),
    # Only Alice has a backup: everyone else finds none.
    Row("GET", "keys/backup", mine(200, nf("backup")), prepare=lambda w: w.backup),
    Row("PUT", "keys/backup", own(200), body=const({
        "nonce": b64u_encode(b"\x01" * 24), "ciphertext": b64u_encode(b"\x02" * 64),
        "kdf": "raw"})),
    Row("GET", "devices", own(200)),
    Row("POST", "devices", own(201), body=device_body, client=lambda w, a: w.unbound_api(a)),
    Row("DELETE", "devices/<uuid:device_id>", mine(200, DEVICE),
        path=lambda w, a: f"devices/{w.device_id}"),
    Row("POST", "devices/links", own(201), client=lambda w, a: w.unbound_api(a),
        body=lambda w, a: {"commitment": b64u_encode(secrets.token_bytes(32))}),
    Row("GET", "devices/links", own(200)),
    Row("GET", "devices/links/<uuid:link_id>", mine(200, LINK), path=link()),
    Row("DELETE", "devices/links/<uuid:link_id>", mine(204, LINK), path=link(), client=laptop),
    Row("POST", "devices/links/<uuid:link_id>/challenge", mine(200, LINK),
        path=link("/challenge"), body=const(NONCE)),
    Row("POST", "devices/links/<uuid:link_id>/reveal", mine(200, LINK),
        path=link("/reveal", "challenged"), body=reveal_body, client=laptop),
    Row("POST", "devices/links/<uuid:link_id>/approve", mine(200, LINK),
        path=link("/approve", "revealed"), body=lambda w, a: w.approve_body()),
    Row("POST", "devices/links/<uuid:link_id>/deny", mine(200, LINK), path=link("/deny"),
        body=const({})),
    # Conversations and messages.
    Row("GET", "conversations", own(200)),
    # Starting a conversation with Alice is open to all but whom she blocks.
    Row("POST", "conversations", person_facing(201),
        body=lambda w, a: {"kind": "direct", "handle": w.target(a).user.handle}),
    Row("GET", "conversations/<uuid:conversation_id>", mine(200, CONVERSATION), path=conv()),
    Row("PATCH", "conversations/<uuid:conversation_id>", mine(200, CONVERSATION), path=conv(),
        body=const({"name": "Renamed"})),
    Row("POST", "conversations/<uuid:conversation_id>/members", mine(200, CONVERSATION),
        path=conv("/members"), body=handles),
    Row("DELETE", "conversations/<uuid:conversation_id>/members/<str:handle>",
        mine(204, CONVERSATION), path=lambda w, a: f"conversations/{w.group_id}/members/"
        f"{w.carol.user.handle}"),
    Row("POST", "conversations/<uuid:conversation_id>/leave", mine(204, CONVERSATION),
        path=conv("/leave")),
    *(
        Row("POST", f"conversations/<uuid:conversation_id>/{answer}", mine(204, CONVERSATION),
            path=request_path(answer))
        for answer in ("accept", "decline", "block")
    ),
    Row("GET", "conversations/<uuid:conversation_id>/messages", mine(200, CONVERSATION),
        path=conv("/messages")),
    Row("POST", "conversations/<uuid:conversation_id>/messages", mine(201, CONVERSATION),
        path=conv("/messages"), body=message_body),
    Row("DELETE", "conversations/<uuid:conversation_id>/messages/<uuid:message_id>",
        mine(204, nf("message")),
        path=lambda w, a: f"conversations/{w.group_id}/messages/{w.message.pk}"),
    Row("POST", "conversations/<uuid:conversation_id>/read", mine(200, CONVERSATION),
        path=conv("/read"), body=const(SEQ)),
    Row("POST", "conversations/<uuid:conversation_id>/delivered", mine(200, CONVERSATION),
        path=conv("/delivered"), body=const(SEQ)),
    Row("GET", "conversations/<uuid:conversation_id>/receipts", mine(200, CONVERSATION),
        path=conv("/receipts")),
    Row("POST", "conversations/<uuid:conversation_id>/mute", mine(200, CONVERSATION),
        path=conv("/mute"), body=const({"seconds": 3600})),
    Row("DELETE", "conversations/<uuid:conversation_id>/mute", mine(200, CONVERSATION),
        path=conv("/mute")),
    Row("POST", "conversations/<uuid:conversation_id>/attachments", mine(201, CONVERSATION),
        path=conv("/attachments"), multipart=True,
        body=lambda w, a: {"blob": SimpleUploadedFile("blob", b"\x01" * 64)}),
    Row("GET", "attachments/<uuid:attachment_id>", mine(200, nf("attachment")),
        path=lambda w, a: f"attachments/{w.attachment_id}"),
    Row("POST", "sync", own(200), body=const({"cursor": None})),
    # Alice reports what Carol sent her; outsiders cannot see the message at all.
    Row("POST", "reports", mine(201, nf("message")), body=report_body),
    # Calls.
    Row("GET", "calls", own(200)),
    Row("GET", "calls/ringing", own(200)),
    Row("GET", "calls/<uuid:call_id>", mine(200, CALL),
        path=lambda w, a: f"calls/{w.call.pk}"),
    # Notifications. Others' ids and endpoints change nothing.
    Row("GET", "notifications", own(200)),
    Row("GET", "notifications/unread-count", own(200)),
    Row("POST", "notifications/read", (200, Unchanged(200), Unchanged(200), Unchanged(200)),
        body=lambda w, a: {"ids": [w.notification_id]}),
    Row("GET", "notifications/preferences", own(200)),
    Row("PUT", "notifications/preferences", own(200),
        body=const({"preferences": {"message": {"email": False}}})),
    Row("GET", "notifications/push-subscriptions", own(200)),
    Row("POST", "notifications/push-subscriptions",
        (201, (409, "endpoint_taken"), (409, "endpoint_taken"), (409, "endpoint_taken")),
        body=lambda w, a: {
            "endpoint": w.push_endpoint + ("/new" if a == "owner" else ""),
            "keys": {"p256dh": P256DH, "auth": b64u_encode(b"\x05" * 16)},
            "device_id": str((w.person(a) if a != "anonymous" else w.alice).phones[0].device.pk),
        }),
    Row("DELETE", "notifications/push-subscriptions",
        (204, Unchanged(204), Unchanged(204), Unchanged(204)),
        body=lambda w, a: {"endpoint": w.push_endpoint}),
    # The schema and its docs are open.
    Row("GET", "schema", own(200), anonymous=200),
    Row("GET", "docs", own(200), anonymous=200),
]  # fmt: skip

BY_NAME = {row.name: row for row in ROWS}
assert len(BY_NAME) == len(ROWS), "one row per endpoint and method"


# --- Every endpoint has a row ---------------------------------------------------------------------


def api_endpoints(
    patterns: list[URLPattern | URLResolver] | None = None, prefix: str = ""
) -> Iterator[str]:
    """``METHOD route`` of every view under /api/v1/, from the URL conf itself."""
    for pattern in api_v1 if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from api_endpoints(pattern.url_patterns, route)
            continue
        view = getattr(pattern.callback, "view_class", None)
        assert view is not None, f"{route}: not a class-based view"
        for method in view.http_method_names:
            if method not in {"options", "head", "trace"} and hasattr(view, method):
                yield f"{method.upper()} {route}"


def test_every_endpoint_has_a_row_and_every_row_an_endpoint() -> None:
    endpoints = set(api_endpoints())
    assert len(endpoints) > 70
    assert sorted(endpoints - set(BY_NAME)) == [], "endpoints without a row in ROWS"
    assert sorted(set(BY_NAME) - endpoints) == [], "rows for endpoints that do not exist"


# --- The matrix ---------------------------------------------------------------------------------


def send(client: APIClient, row: Row, path: str, body: Any) -> Any:
    call = getattr(client, row.method.lower())
    if body is None:
        return call(path)
    return call(path, body, format="multipart" if row.multipart else "json")


def content(response: HttpResponseBase) -> bytes:
    if getattr(response, "streaming", False):
        return b"".join(response.streaming_content)  # type: ignore[attr-defined]
    return bytes(response.content)  # type: ignore[attr-defined]


def leaked(body: bytes, secrets_: dict[str, bytes], visible: frozenset[str]) -> list[str]:
    return sorted(name for name, value in secrets_.items() if value in body and name not in visible)


@pytest.mark.parametrize(
    ("endpoint", "actor"),
    [(row.name, actor) for row in ROWS for actor in ACTORS],
    ids=lambda value: str(value),
)
def test_api(world: World, endpoint: str, actor: str) -> None:
    row = BY_NAME[endpoint]
    expect = row.expected(actor)
    # All of Alice's data, where an answer could show it (her own answers may; no answer
    # without credentials gets past authentication).
    owner_data = world.everything() if actor in ("other", "blocked", "moderator") else {}
    if row.prepare is not None:
        row.prepare(world)
    client = row.client(world, actor) if row.client else world.api(actor)
    path = "/api/v1/" + (row.path(world, actor) if row.path else row.route)
    body = row.body(world, actor) if row.body else None
    noted_as_used()
    before = snapshot()

    response = send(client, row, path, body)
    answer = content(response)

    if isinstance(expect, int):
        assert response.status_code == expect, answer[:2000]
        if actor != "owner":
            visible = row.visible if actor != "blocked" else frozenset()
            assert leaked(answer, owner_data, visible) == []
        return
    if isinstance(expect, Unchanged):
        assert response.status_code == expect.status, answer[:2000]
    else:
        status, code = expect
        error = json.loads(answer)["error"]
        assert (response.status_code, error["code"]) == (status, code), answer[:2000]
        if status == 401:
            assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert leaked(answer, owner_data, frozenset()) == []
    assert changed_tables(before) == []


# --- Website pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A website page or form: what Alice (``owner``), Eve (``other``) and Mallory, whom
    Alice blocks (``blocked``, as Eve unless given), get; signed-out visitors go to the
    sign-in page. A page about a person is Alice's for everyone
    else, and Carol's for Alice (``World.target``)."""

    route: str
    path: Callable[[World, str], str]
    owner: int
    other: int
    blocked: int | None = None
    method: str = "get"
    data: dict[str, Any] = field(default_factory=dict)
    # What of Alice's data Eve may see there (Mallory sees none of it).
    visible: frozenset[str] = frozenset()
    # The form changes the caller's own rows when allowed (a follow, a report).
    writes: bool = False
    # A signed-out visitor goes to the sign-in page, and back here after it.
    back_here: bool = True


def on_target(suffix: str = "") -> Callable[[World, str], str]:
    return lambda w, a: f"/@{w.target(a).user.handle}{suffix}"


def plain(route: str, owner: int, other: int, **extra: Any) -> Page:
    """A page whose address is its route: no ids in it."""
    return Page(route, lambda w, a: f"/{route}", owner, other, **extra)


def social(action: str) -> Page:
    return Page(f"@<str:handle>/{action}", on_target(f"/{action}"), 302, 302, 404, "post",
                writes=True)  # fmt: skip


PAGES: dict[str, Page] = {
    "home": plain("", 200, 200, back_here=False),
    "conversation": Page("c/<uuid:conversation_id>", lambda w, a: f"/c/{w.group_id}", 200, 404),
    "new conversation": plain("new", 200, 200),
    "calls": plain("calls", 200, 200),
    "notifications": plain("notifications", 200, 200),
    # Eve has nothing to read: Alice's notification stays unread.
    "notifications read": plain("notifications/read", 302, 302, method="post"),
    "search": plain("search", 200, 200, data={"q": "user"}),
    "profile": Page("@<str:handle>", on_target(), 200, 200, 404, visible=frozenset({"bio"})),
    **{
        f"profile {action}": social(action)
        for action in ("follow", "unfollow", "block", "unblock", "mute", "unmute")
    },
    "profile message": Page(
        "@<str:handle>/message", on_target("/message"), 302, 302, 404, "post", writes=True
    ),
    # A block does not keep Mallory from reporting Alice (docs/moderation.md).
    "profile report": Page(
        "@<str:handle>/report",
        on_target("/report"),
        302,
        302,
        302,
        "post",
        data={"reason": "spam"},
        writes=True,
    ),
    **{
        f"settings {name}": plain(f"settings/{name}", 200, 200)
        for name in ("profile", "privacy", "password", "devices", "keys", "safety", "notifications")
    },
    "setup": plain("setup", 200, 200),
    "device remove": Page(
        "settings/devices/<uuid:device_id>/remove",
        lambda w, a: f"/settings/devices/{w.device_id}/remove",
        302,
        404,
        method="post",
    ),
    "warning acknowledge": Page(
        "warnings/<int:warning_id>/acknowledge",
        lambda w, a: f"/warnings/{w.warning_id}/acknowledge",
        302,
        404,
        method="post",
    ),
}
# Pages with no account's data: signing up, in and out, the service worker, health.
WITHOUT_ACCOUNT_DATA = {"signup", "login", "logout", "sw.js", "healthz"}


def website_routes(patterns: list[URLPattern | URLResolver], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            if not route.startswith(("api/", "admin/", "panel/")):
                yield from website_routes(pattern.url_patterns, route)
        elif not route.startswith(("api/", "admin/", "panel/")):
            yield route


def test_every_website_page_has_a_row() -> None:
    from config.urls import urlpatterns

    routes = set(website_routes(urlpatterns))
    assert len(routes) > 25
    rows = {page.route for page in PAGES.values()}
    assert sorted(routes - rows - WITHOUT_ACCOUNT_DATA) == [], "pages without a row in PAGES"
    assert sorted(rows - routes) == [], "rows for pages that do not exist"


def site(world: World, actor: str) -> Client:
    client = Client()
    if actor != "anonymous":
        client.force_login(
            world.person(actor).user, backend="accounts.backends.HandleOrEmailBackend"
        )
    return client


@pytest.mark.parametrize(
    ("page", "actor"),
    [(page, actor) for page in PAGES for actor in ("owner", "other", "blocked", "anonymous")],
    ids=lambda value: str(value),
)
def test_page(world: World, page: str, actor: str) -> None:
    spec = PAGES[page]
    owner_data = world.everything()
    client = site(world, actor)
    path = spec.path(world, actor)
    before = snapshot()

    response = getattr(client, spec.method)(path, spec.data)
    answer = content(response)

    if actor == "anonymous":
        assert response.status_code == 302
        asked = f"{path}?{urlencode(spec.data)}" if spec.method == "get" and spec.data else path
        back = f"?next={quote(asked, safe='/')}" if spec.back_here else ""
        assert response["Location"] == f"/login{back}"
        assert changed_tables(before) == []
        return
    expected = {"owner": spec.owner, "other": spec.other}.get(actor, spec.blocked or spec.other)
    assert response.status_code == expected, answer[:2000]
    if actor != "owner":
        visible = spec.visible if actor == "other" else frozenset()
        assert leaked(answer, owner_data, visible) == []
        if expected >= 400 or (spec.method != "get" and not spec.writes):
            assert changed_tables(before) == []
