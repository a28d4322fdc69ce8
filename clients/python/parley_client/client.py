"""The Parley reference client: a user's device, speaking PROTOCOL.md to a server.

It trusts the server with nothing but delivery: every certificate in the key
directory is verified under the peer's pinned identity key (trust on first use), and
every received message is opened and its franking tag checked locally. A message
that fails any check is returned with ``verified=False``, never as content.

HTTP calls are synchronous (httpx); the live socket is asyncio (websockets), and so
are calls (``parley_client.calls``, on aiortc).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import httpx
import websockets

from parley_client import crypto

if TYPE_CHECKING:  # aiortc is needed for calls only
    from aiortc import MediaStreamTrack

    from parley_client.calls import IncomingCall, OutgoingCall

logger = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 3
# The API gives at most this many conversations a page.
INBOX_PAGE = 100


class ApiError(Exception):
    """The server refused a request: ``{"error": {"code", "message", "field", ...}}``."""

    def __init__(self, status: int, error: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.code = str(error.get("code"))
        self.field = error.get("field")
        self.error = dict(error)


class LinkError(Exception):
    """Linking a device did not happen: the link was denied, cancelled or expired, it
    timed out, or a check of what the server relayed failed (then nothing is trusted)."""


class IdentityKeyChanged(Exception):
    """The identity key of a peer the user verified differs from the pinned one (their
    safety number changed)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(f"the identity key of {user_id} changed")
        self.user_id = user_id


class DirectoryMismatch(Exception):
    """The key directory answered with another user's keys than the ones asked for: the
    server is misbehaving, and nothing in the answer is used."""


@dataclass
class Pin:
    aik_pub: str
    verified: bool = False  # the user compared safety numbers
    changed: bool = False  # the key changed since it was first seen: show it


@dataclass
class VerifiedDirectory:
    """A user's keys after every certificate checked out under their pinned AIK."""

    user_id: str
    handle: str
    aik_pub: str
    devices: dict[str, str]  # device id -> box public key (b64u)
    history_key: str | None  # hk_pub (b64u), if certified
    rejected_devices: list[str] = field(default_factory=list)


class KnownDevice(NamedTuple):
    """A device whose certificate verified under its owner's identity key."""

    user_id: str
    box_pub: str  # b64u


@dataclass
class Received:
    """A message as this device sees it."""

    message: dict[str, Any]
    verified: bool
    payload: dict[str, Any] | None
    payload_bytes: bytes | None = None
    franking_key: bytes | None = None
    error: str | None = None

    @property
    def id(self) -> str:
        return str(self.message["id"])

    @property
    def text(self) -> str | None:
        return None if self.payload is None else self.payload.get("body")


@dataclass
class State:
    """What a device keeps. Saved to a JSON file (0600) when the client has one."""

    server: str
    user_id: str | None = None
    handle: str | None = None
    token: str | None = None
    aik_seed: str | None = None
    hk_secret: str | None = None
    device: dict[str, Any] | None = None  # device_id, sign_seed, box_secret, created_at
    pins: dict[str, dict[str, Any]] = field(default_factory=dict)
    sync_cursor: str | None = None
    # A new device being linked: link id, name, device keys, new_nonce (b64u).
    pending_link: dict[str, Any] | None = None


@dataclass
class LinkChallenge:
    """What an existing device remembers of a link it answered. The commitment is the
    one it saw *before* sending its nonce: the revealed keys are checked against this
    copy, never against what the server shows later."""

    commitment: bytes
    existing_nonce: bytes
    revealed: dict[str, Any] | None = None


class ParleyClient:
    def __init__(self, server: str, *, state_file: Path | None = None) -> None:
        self.state_file = state_file
        if state_file is not None and state_file.exists():
            self.state = State(**json.loads(state_file.read_text()))
        else:
            self.state = State(server=server.rstrip("/"))
        self._http = httpx.Client(base_url=f"{self.state.server}/api/v1", timeout=30)
        self._directories: dict[str, VerifiedDirectory] = {}
        # Every device ever verified, by device id, with its owner: messages from
        # since-revoked devices of a peer can still be checked against a key we once
        # verified, and only as coming from the user who certified the device.
        self._known_devices: dict[str, KnownDevice] = {}
        self._link_challenges: dict[str, LinkChallenge] = {}
        self._device_keys: crypto.DeviceKeys | None = None  # self.state.device, decoded

    # --- State ---------------------------------------------------------------------------

    def save(self) -> None:
        """Write the state (secret keys, token) atomically, readable by the owner only:
        the file is created 0600 and a folder made for it 0700."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.state_file.with_suffix(".tmp")
        data = json.dumps(self.state.__dict__, indent=2)
        temporary.unlink(missing_ok=True)  # a leftover keeps its mode through O_CREAT
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(data)
        temporary.replace(self.state_file)

    def close(self) -> None:
        self._http.close()

    @property
    def user_id(self) -> str:
        if self.state.user_id is None:
            raise RuntimeError("sign up or log in first")
        return self.state.user_id

    @property
    def device(self) -> crypto.DeviceKeys:
        if self._device_keys is None:
            if self.state.device is None:
                raise RuntimeError("set up keys or restore a backup first")
            self._device_keys = _device_from_state(self.state.device)
        return self._device_keys

    def _become_device(self, keys: crypto.DeviceKeys) -> None:
        self.state.device = _device_to_state(keys)
        self._device_keys = keys

    @property
    def device_id(self) -> str:
        return self.device.device_id

    def _aik(self) -> crypto.IdentityKey:
        if self.state.aik_seed is None:
            raise RuntimeError("this device does not hold the identity key")
        return crypto.IdentityKey(crypto.b64u_decode(self.state.aik_seed))

    # --- HTTP ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.state.token:
            headers["Authorization"] = f"Bearer {self.state.token}"
        response = self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": "http_error", "message": response.text[:200]}
            raise ApiError(response.status_code, error)
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/octet-stream"):
            return response.content
        return response.json()

    # --- Account -------------------------------------------------------------------------

    def sign_up(self, handle: str, email: str, password: str, token_name: str = "") -> None:
        result = self.request(
            "POST", "/auth/signup",
            json={"handle": handle, "email": email, "password": password, "token_name": token_name},
        )  # fmt: skip
        self._signed_in(result)

    def log_in(self, login: str, password: str, token_name: str = "") -> None:
        result = self.request(
            "POST", "/auth/login",
            json={"login": login, "password": password, "token_name": token_name},
        )  # fmt: skip
        self._signed_in(result)

    def _signed_in(self, result: Mapping[str, Any]) -> None:
        self.state.user_id = result["user"]["id"]
        self.state.handle = result["user"]["handle"]
        self.state.token = result["token"]["key"]
        self.save()

    def set_up_keys(self, device_name: str = "") -> str:
        """First device of an account: make the identity and history keys, back them up
        under a new recovery key, certify this device. Returns the recovery code, which
        the user must write down: it is shown once."""
        aik, hk = crypto.IdentityKey.generate(), crypto.HistoryKey.generate()
        self.request("PUT", "/keys/identity", json={"aik_pub": crypto.b64u_encode(aik.public)})
        self.state.aik_seed = crypto.b64u_encode(aik.seed)
        self.state.hk_secret = crypto.b64u_encode(hk.secret)
        self._publish_history_key(aik, hk)
        recovery_key = crypto.new_recovery_key()
        self.request(
            "PUT", "/keys/backup",
            json=crypto.make_backup(aik.seed, hk.secret, self.user_id, recovery_key),
        )  # fmt: skip
        self._register_this_device(aik, device_name)
        return crypto.format_recovery_code(recovery_key)

    def back_up_with_passphrase(self, passphrase: str) -> None:
        """Replace the backup with one under a long passphrase (Argon2id)."""
        secret, kdf = crypto.passphrase_backup_kdf(passphrase)
        aik, hk_secret = self._aik(), self._hk_secret()
        blob = crypto.make_backup(aik.seed, hk_secret, self.user_id, secret, kdf)
        self.request("PUT", "/keys/backup", json=blob)

    def restore(
        self,
        *,
        recovery_code: str | None = None,
        passphrase: str | None = None,
        device_name: str = "",
    ) -> None:
        """A new device: open the backup, gain the identity and history keys, certify
        itself. It can then read history sent to the history key."""
        blob = self.request("GET", "/keys/backup")
        if recovery_code is not None:
            aik_seed, hk_secret = crypto.restore_backup_with_recovery_code(
                blob, self.user_id, recovery_code
            )
        elif passphrase is not None:
            aik_seed, hk_secret = crypto.restore_backup_with_passphrase(
                blob, self.user_id, passphrase
            )
        else:
            raise ValueError("give a recovery code or a passphrase")
        aik = crypto.IdentityKey(aik_seed)
        mine = self._fetch_directory_unverified(self.user_id)
        if mine["aik_pub"] != crypto.b64u_encode(aik.public):
            raise crypto.BackupRestoreError(
                "the backup holds another identity key than the account"
            )
        self.state.aik_seed = crypto.b64u_encode(aik_seed)
        self.state.hk_secret = crypto.b64u_encode(hk_secret)
        self._register_this_device(aik, device_name)

    def _publish_history_key(self, aik: crypto.IdentityKey, hk: crypto.HistoryKey) -> None:
        certificate = crypto.history_key_certificate(aik, self.user_id, hk.public)
        self.request(
            "PUT", "/keys/history",
            json={"hk_pub": crypto.b64u_encode(hk.public),
                  "certificate": crypto.b64u_encode(certificate)},
        )  # fmt: skip

    def _register_this_device(self, aik: crypto.IdentityKey, name: str) -> None:
        device = crypto.DeviceKeys.generate()
        certificate = device.certificate(aik, self.user_id)
        self.request(
            "POST", "/devices",
            json={
                "device_id": device.device_id,
                "name": name,
                "sign_pub": crypto.b64u_encode(device.sign_public),
                "box_pub": crypto.b64u_encode(device.box_public),
                "created_at": device.created_at,
                "certificate": crypto.b64u_encode(certificate),
            },
        )  # fmt: skip
        self._become_device(device)
        # Our own identity key is pinned and verified by construction.
        self.state.pins[self.user_id] = Pin(crypto.b64u_encode(aik.public), verified=True).__dict__
        self.save()

    # --- Linking a device from an existing one (docs/keys-and-devices.md) -----------------

    def request_link(self, device_name: str = "") -> str:
        """New device, step 1 (signed in, no device yet): make this device's keys,
        commit to them and open a link. Returns the link id; the account's existing
        devices hear of it on their sockets (``device.link_requested``)."""
        if self.state.device is not None:
            raise RuntimeError("this client is already a device")
        device = crypto.DeviceKeys.generate()
        new_nonce = crypto.new_link_nonce()
        commitment = crypto.link_commitment(
            new_nonce, self.user_id, device.device_id, device.sign_public, device.box_public,
            device.created_at,
        )  # fmt: skip
        link = self.request(
            "POST", "/devices/links", json={"commitment": crypto.b64u_encode(commitment)}
        )
        self.state.pending_link = {
            "id": str(link["id"]),
            "name": device_name,
            "device": _device_to_state(device),
            "new_nonce": crypto.b64u_encode(new_nonce),
        }
        self.save()
        return str(link["id"])

    def reveal_link(self, *, timeout: float = 600, poll: float = 3) -> str:
        """New device, step 3: wait for an existing device's nonce, reveal this device's
        keys, and return the 6-digit code to show. The user compares it with the code
        on the existing device."""
        pending, keys = self._pending_link()
        link = self._wait_for_link(
            pending["id"], {"challenged", "revealed", "approved"}, timeout=timeout, poll=poll
        )
        new_nonce = crypto.b64u_decode(pending["new_nonce"])
        if link["state"] == "challenged":
            link = self.request(
                "POST", f"/devices/links/{pending['id']}/reveal",
                json={
                    "device_id": keys.device_id,
                    "name": pending["name"],
                    "sign_pub": crypto.b64u_encode(keys.sign_public),
                    "box_pub": crypto.b64u_encode(keys.box_public),
                    "created_at": keys.created_at,
                    "nonce": crypto.b64u_encode(new_nonce),
                },
            )  # fmt: skip
        return crypto.link_short_code(
            link["existing_nonce"], new_nonce, self.user_id, keys.device_id, keys.sign_public,
            keys.box_public, keys.created_at,
        )  # fmt: skip

    def complete_link(self, *, timeout: float = 600, poll: float = 3) -> None:
        """New device, step 6: wait for the approval, open the bundle, check it, and
        become a full device holding the identity and history keys.

        The bundle is a sealed box, which anyone knowing this device's box key could
        have made: it is accepted only if its AIK is the account's AIK in the key
        directory, this device's certificate verifies under it, and its history key is
        the one the AIK certified.
        """
        pending, keys = self._pending_link()
        link = self._wait_for_link(pending["id"], {"approved"}, timeout=timeout, poll=poll)
        if str(link.get("device_id")) != keys.device_id:
            raise LinkError("the link was approved for another device")
        try:
            aik_seed, hk_secret = crypto.open_link_bundle(link["bundle"], keys.box_secret)
        except crypto.LinkBundleError as exc:
            raise LinkError(str(exc)) from exc
        aik = crypto.IdentityKey(aik_seed)
        aik_pub = crypto.b64u_encode(aik.public)
        mine = self._fetch_directory_unverified(self.user_id)
        if mine["user_id"] != self.user_id or mine["aik_pub"] != aik_pub:
            raise LinkError("the bundle holds another identity key than the account")
        if not crypto.verify_device_certificate(
            aik.public, self.user_id, keys.device_id, keys.sign_public, keys.box_public,
            keys.created_at, link["certificate"],
        ):  # fmt: skip
            raise LinkError("this device's certificate does not verify under the identity key")
        history_key = mine.get("history_key")
        if history_key and not (
            crypto.verify_history_key_certificate(
                aik.public, self.user_id, history_key["hk_pub"], history_key["certificate"]
            )
            and history_key["hk_pub"] == crypto.b64u_encode(crypto.x25519_public_key(hk_secret))
        ):
            raise LinkError("the bundle's history key is not the account's")
        self.state.aik_seed = crypto.b64u_encode(aik_seed)
        self.state.hk_secret = crypto.b64u_encode(hk_secret)
        self._become_device(keys)
        self.state.pins[self.user_id] = Pin(aik_pub, verified=True).__dict__
        self.state.pending_link = None
        self.save()

    def cancel_link(self) -> None:
        """New device: give up the link in progress."""
        if self.state.pending_link is None:
            return
        self.request("DELETE", f"/devices/links/{self.state.pending_link['id']}")
        self.state.pending_link = None
        self.save()

    def pending_links(self) -> list[dict[str, Any]]:
        """Existing device: the account's links in progress (at most one)."""
        return list(self.request("GET", "/devices/links")["results"])

    def challenge_link(self, link_id: str) -> None:
        """Existing device, step 2: answer a pending link with a fresh nonce, keeping
        the commitment as it is now."""
        # Only a device holding both keys can hand them on.
        self._aik()
        self._hk_secret()
        link = self.request("GET", f"/devices/links/{link_id}")
        if link["state"] != "pending":
            raise LinkError(f"the link is {link['state']}, not pending")
        commitment = crypto.b64u_decode(link["commitment"])
        nonce = crypto.new_link_nonce()
        self.request(
            "POST", f"/devices/links/{link_id}/challenge",
            json={"device": self.device_id, "nonce": crypto.b64u_encode(nonce)},
        )  # fmt: skip
        self._link_challenges[str(link_id)] = LinkChallenge(commitment, nonce)

    def link_code_to_confirm(self, link_id: str, *, timeout: float = 600, poll: float = 3) -> str:
        """Existing device, step 4: wait for the new device's keys, check them against
        the commitment it made first, and return the code to compare. A mismatch means
        the server swapped keys: the link is denied and ``LinkError`` raised."""
        challenge = self._link_challenges.get(str(link_id))
        if challenge is None:
            raise RuntimeError("challenge the link first")
        link = self._wait_for_link(str(link_id), {"revealed"}, timeout=timeout, poll=poll)
        revealed = link["revealed"]
        fields = (
            self.user_id, revealed["device_id"], revealed["sign_pub"], revealed["box_pub"],
            revealed["created_at"],
        )  # fmt: skip
        if not crypto.verify_link_commitment(challenge.commitment, revealed["nonce"], *fields):
            self.deny_link(str(link_id))
            raise LinkError("the revealed keys are not the ones the new device committed to")
        challenge.revealed = dict(revealed)
        # Our own nonce, never the server's copy of it.
        return crypto.link_short_code(challenge.existing_nonce, revealed["nonce"], *fields)

    def approve_link(
        self,
        link_id: str,
        confirm: Callable[[str], bool],
        *,
        timeout: float = 600,
        poll: float = 3,
    ) -> bool:
        """Existing device: answer the link (if not done yet), show the code through
        ``confirm(code)``, and on ``True`` certify the new device and hand it the
        identity and history keys, sealed to its box key. ``False`` denies the link."""
        link_id = str(link_id)
        if link_id not in self._link_challenges:
            self.challenge_link(link_id)
        code = self.link_code_to_confirm(link_id, timeout=timeout, poll=poll)
        if not confirm(code):
            self.deny_link(link_id)
            return False
        revealed = self._link_challenges.pop(link_id).revealed
        assert revealed is not None
        aik = self._aik()
        certificate = crypto.device_certificate(
            aik, self.user_id, revealed["device_id"], revealed["sign_pub"], revealed["box_pub"],
            revealed["created_at"],
        )  # fmt: skip
        bundle = crypto.make_link_bundle(aik.seed, self._hk_secret(), revealed["box_pub"])
        self.request(
            "POST", f"/devices/links/{link_id}/approve",
            json={"device": self.device_id, "certificate": crypto.b64u_encode(certificate),
                  "bundle": crypto.b64u_encode(bundle)},
        )  # fmt: skip
        return True

    def deny_link(self, link_id: str) -> None:
        """Existing device: refuse a link."""
        self._link_challenges.pop(str(link_id), None)
        self.request("POST", f"/devices/links/{link_id}/deny", json={"device": self.device_id})

    def _pending_link(self) -> tuple[dict[str, Any], crypto.DeviceKeys]:
        pending = self.state.pending_link
        if pending is None:
            raise RuntimeError("request a link first")
        return pending, _device_from_state(pending["device"])

    def _wait_for_link(
        self, link_id: str, states: set[str], *, timeout: float, poll: float
    ) -> dict[str, Any]:
        """Poll the link until it reaches one of ``states``. Link requests share the
        ``keys_write`` rate limit (30 a minute by default) with the account's other
        devices, so poll every few seconds and wait when told to."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                link: dict[str, Any] = self.request("GET", f"/devices/links/{link_id}")
            except ApiError as error:
                if error.status == 410:
                    raise LinkError("the link expired") from error
                if error.status != 429:
                    raise
                time.sleep(min(float(error.error.get("retry_after") or poll), 60))
                continue
            if link["state"] in states:
                return link
            if link["state"] in {"denied", "cancelled", "approved"}:
                raise LinkError(f"the link was {link['state']}")
            if time.monotonic() >= deadline:
                raise LinkError("timed out waiting for the other device")
            time.sleep(poll)

    def _hk_secret(self) -> bytes:
        if self.state.hk_secret is None:
            raise RuntimeError("this device does not hold the history key")
        return crypto.b64u_decode(self.state.hk_secret)

    # --- Key directory and trust ---------------------------------------------------------

    def _fetch_directory_unverified(self, user_ref: str) -> dict[str, Any]:
        """A user's entry in the key directory, by id or ``@handle``, with nothing
        verified but that it is the user asked for (``DirectoryMismatch`` otherwise);
        its ``user_id`` comes back in canonical form."""
        try:
            asked_id: str | None = str(uuid.UUID(user_ref))
        except ValueError:
            asked_id = None
        handle = user_ref.removeprefix("@")
        if asked_id is not None:
            result = self.request("GET", f"/keys/{asked_id}")
        else:
            result = self.request("GET", f"/users/{handle}/keys")
        if not isinstance(result, dict):
            raise DirectoryMismatch("the key directory did not answer with a user's keys")
        user_id = _id_or_none(result.get("user_id"))
        if user_id is None:
            raise DirectoryMismatch("the key directory answered without a user id")
        if asked_id is not None and user_id != asked_id:
            raise DirectoryMismatch(f"asked for the keys of {asked_id}, got those of {user_id}")
        answered = result.get("handle")
        if asked_id is None and (
            not isinstance(answered, str) or answered.casefold() != handle.casefold()
        ):
            raise DirectoryMismatch(f"asked for the keys of @{handle}, got those of {answered!r}")
        return {**result, "user_id": user_id}

    def directory(self, user_ref: str, *, accept_change: bool = False) -> VerifiedDirectory:
        """Fetch a user's keys and verify them all under their pinned identity key.

        The first identity key seen is pinned. A different one later raises
        IdentityKeyChanged for a user marked verified (sending needs the user's
        confirmation: ``accept_change=True``); for others the new key is pinned and
        flagged ``changed`` so the interface shows "safety number changed".
        """
        raw = self._fetch_directory_unverified(user_ref)
        user_id, aik_pub = raw["user_id"], raw["aik_pub"]
        if aik_pub is None:
            raise ApiError(409, {"code": "no_keys", "message": f"{raw['handle']} has no keys yet"})
        pin = self.state.pins.get(user_id)
        if pin is None:
            self.state.pins[user_id] = Pin(aik_pub).__dict__
        elif pin["aik_pub"] != aik_pub:
            if pin["verified"] and not accept_change:
                raise IdentityKeyChanged(user_id)
            self.state.pins[user_id] = Pin(aik_pub, verified=False, changed=True).__dict__
        self.save()
        devices: dict[str, str] = {}
        rejected: list[str] = []
        for device in raw["devices"]:
            ok = crypto.verify_device_certificate(
                aik_pub, user_id, device["device_id"], device["sign_pub"], device["box_pub"],
                device["created_at"], device["certificate"],
            )  # fmt: skip
            if not ok:
                rejected.append(device["device_id"])
                continue
            device_id = crypto.canonical_id(device["device_id"])
            known = self._known_devices.get(device_id)
            if known is not None and known.user_id != user_id:
                # A device belongs to one user for good: a second user certifying it
                # would let the server pass its owner's messages off as theirs.
                rejected.append(device_id)
                continue
            devices[device_id] = device["box_pub"]
        history_key = None
        if raw.get("history_key") and crypto.verify_history_key_certificate(
            aik_pub, user_id, raw["history_key"]["hk_pub"], raw["history_key"]["certificate"]
        ):
            history_key = raw["history_key"]["hk_pub"]
        directory = VerifiedDirectory(
            user_id, raw["handle"], aik_pub, devices, history_key, rejected
        )
        self._directories[user_id] = directory
        for device_id, box_pub in devices.items():
            self._known_devices[device_id] = KnownDevice(user_id, box_pub)
        return directory

    def safety_number(self, user_ref: str) -> str:
        """The 60 digits to compare with the peer, in 12 groups of 5."""
        theirs = self.directory(user_ref)
        mine = self.directory(self.user_id)
        return crypto.format_safety_number(
            crypto.pair_safety_number(
                crypto.safety_number(mine.aik_pub, mine.user_id),
                crypto.safety_number(theirs.aik_pub, theirs.user_id),
            )
        )

    def mark_verified(self, user_ref: str) -> None:
        directory = self.directory(user_ref)
        self.state.pins[directory.user_id] = Pin(directory.aik_pub, verified=True).__dict__
        self.save()

    def pin(self, user_id: str) -> Pin | None:
        data = self.state.pins.get(user_id)
        return Pin(**data) if data else None

    def verified_box_key(self, user_id: str, device_id: str) -> str | None:
        """The box key (b64u) of one of the user's devices, if their key directory,
        fetched now and verified under their pinned identity key, lists it; else
        ``None``. Call signaling is opened with this key only, never with one the
        server names alongside a frame."""
        device = _id_or_none(device_id)
        if device is None or _id_or_none(user_id) is None:
            return None
        return self.directory(user_id).devices.get(device)

    # --- Conversations -------------------------------------------------------------------

    def open_direct(self, handle: str) -> str:
        result = self.request(
            "POST", "/conversations", json={"kind": "direct", "handle": handle.removeprefix("@")}
        )
        return str(result["id"])

    def create_group(self, name: str, handles: list[str]) -> str:
        result = self.request(
            "POST", "/conversations",
            json={"kind": "group", "name": name, "handles": [h.removeprefix("@") for h in handles]},
        )  # fmt: skip
        return str(result["id"])

    def accept(self, conversation_id: str) -> None:
        self.request("POST", f"/conversations/{conversation_id}/accept")

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/conversations/{conversation_id}")
        return result

    def inbox(self, *, requests: bool = False) -> list[dict[str, Any]]:
        """Every conversation of the inbox (or of the requests), newest activity first,
        read a page at a time. One that moves up between two pages is listed once."""
        params: dict[str, Any] = {"requests": "1"} if requests else {}
        conversations: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            page = self.request(
                "GET", "/conversations", params={**params, "offset": offset, "limit": INBOX_PAGE}
            )
            for conversation in page["results"]:
                conversations.setdefault(conversation["id"], conversation)
            offset += len(page["results"])
            if not page["next"] or not page["results"]:
                return list(conversations.values())

    # --- Sending -------------------------------------------------------------------------

    def send(
        self,
        conversation_id: str,
        payload: Mapping[str, Any],
        *,
        expires_in: int | None = None,
        accept_changes: bool = False,
    ) -> dict[str, Any]:
        """Encrypt to every verified device of every member and send. On 409 (devices
        changed) fetch the directories again and re-encrypt, a few times at most. The
        same client_id is kept across retries, so a retry never makes a second copy."""
        client_id = str(uuid.uuid4())
        last_error: ApiError | None = None
        for _ in range(MAX_SEND_ATTEMPTS):
            recipients, history = self._recipients(conversation_id, accept_changes=accept_changes)
            envelope = crypto.encrypt_message(
                payload, conversation_id, self.device_id, client_id,
                self.device.box_secret, recipients, history, expires_in=expires_in,
            )  # fmt: skip
            try:
                result: dict[str, Any] = self.request(
                    "POST", f"/conversations/{conversation_id}/messages", json=envelope
                )
                return result
            except ApiError as error:
                if error.status != 409 or error.code != "recipients_changed":
                    raise
                last_error = error
        assert last_error is not None
        raise last_error

    def send_text(
        self,
        conversation_id: str,
        body: str,
        *,
        reply_to: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return self.send(
            conversation_id,
            {"type": "text", "body": body, "sent_at": int(time.time()), "reply_to": reply_to,
             "attachments": attachments or []},
        )  # fmt: skip

    def _recipients(
        self, conversation_id: str, *, accept_changes: bool
    ) -> tuple[dict[str, str], dict[str, str]]:
        members = [m["user"]["id"] for m in self.conversation(conversation_id)["members"]]
        devices: dict[str, str] = {}
        history: dict[str, str] = {}
        for user_id in members:
            directory = self.directory(user_id, accept_change=accept_changes)
            devices.update(directory.devices)
            if directory.history_key:
                history[user_id] = directory.history_key
        return devices, history

    # --- Receiving -----------------------------------------------------------------------

    def open(self, message: Mapping[str, Any]) -> Received:
        """Open one message. Never raises: a failed check gives ``verified=False``."""
        message = dict(message)
        if message.get("deleted"):
            return Received(message, False, None, error="deleted")
        sender_id = _id_or_none(message.get("sender_id"))
        sender = self._sender_device(sender_id, _id_or_none(message.get("sender_device")))
        if sender is not None and sender.user_id != sender_id:
            # The server relabelled a message: never shown, not even through the history key.
            return Received(message, False, None, error="the sender device is another user's")
        sender_box = sender.box_pub if sender is not None else None
        result = crypto.decrypt_message(
            message, message["conversation_id"],
            my_device_id=self.device_id, my_box_secret=self.device.box_secret,
            sender_box_pub=sender_box, my_user_id=self.user_id,
            hk_secret=crypto.b64u_decode(self.state.hk_secret) if self.state.hk_secret else None,
        )  # fmt: skip
        if result.verified and sender_box is None and not result.via_history:
            return Received(message, False, None, error="unknown sender device")
        # An unverified result carries no payload, bytes or franking key.
        return Received(
            message, result.verified, result.payload, result.payload_bytes, result.franking_key,
            result.error,
        )  # fmt: skip

    def _sender_device(
        self, sender_id: str | None, sender_device: str | None
    ) -> KnownDevice | None:
        """The verified device that sent a message, with its owner (which the caller
        compares with the message's ``sender_id``); ``None`` if it is unknown even after
        fetching the directory of ``sender_id``."""
        if sender_id is None or sender_device is None:
            return None
        if sender_device not in self._known_devices:
            try:
                self.directory(sender_id)
            except (ApiError, IdentityKeyChanged, DirectoryMismatch):
                return None
        return self._known_devices.get(sender_device)

    def history(
        self, conversation_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[Received]:
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        page = self.request("GET", f"/conversations/{conversation_id}/messages", params=params)
        return [self.open(message) for message in page["results"]]

    def sync(self) -> list[Received]:
        """Everything since the last sync, across conversations, oldest first per
        conversation. Remembers the cursor."""
        received: list[Received] = []
        while True:
            page = self.request(
                "POST", "/sync", json={"cursor": self.state.sync_cursor, "limit": 500}
            )
            received.extend(self.open(message) for message in page["messages"])
            self.state.sync_cursor = page["cursor"]
            if not page["has_more"]:
                break
        self.save()
        return received

    def ack(self, conversation_id: str, seq: int) -> None:
        self.request("POST", f"/conversations/{conversation_id}/delivered", json={"seq": seq})

    def mark_read(self, conversation_id: str, seq: int) -> None:
        self.request("POST", f"/conversations/{conversation_id}/read", json={"seq": seq})

    def delete_for_everyone(self, message: Received) -> None:
        self.request(
            "DELETE", f"/conversations/{message.message['conversation_id']}/messages/{message.id}"
        )

    # --- Reports -------------------------------------------------------------------------

    def report(self, message: Received, reason: str, comment: str = "") -> dict[str, Any]:
        """Report a message with its franking proof: the server can check the payload
        really is what its sender sent, and moderators see only that."""
        if not message.verified or message.payload_bytes is None or message.franking_key is None:
            raise ValueError("only a verified message can be reported with a proof")
        result: dict[str, Any] = self.request(
            "POST", "/reports",
            json={
                "message_id": message.id,
                "payload": crypto.b64u_encode(message.payload_bytes),
                "franking_key": crypto.b64u_encode(message.franking_key),
                "franking_stamp": message.message["franking_stamp"],
                "reason": reason,
                "comment": comment,
            },
        )  # fmt: skip
        return result

    def report_profile(self, handle: str, reason: str, comment: str = "") -> dict[str, Any]:
        """Report a profile (handle, display name, bio, avatar): the server keeps it as it
        is now for the moderators. Answers ``id``, ``kind`` ("profile"), ``created_at``."""
        result: dict[str, Any] = self.request(
            "POST", f"/users/{handle.removeprefix('@')}/report",
            json={"reason": reason, "comment": comment},
        )  # fmt: skip
        return result

    # --- Warnings from moderators --------------------------------------------------------

    def warnings(self) -> list[dict[str, Any]]:
        """Every warning a moderator gave this account, newest first; the unacknowledged
        ones have ``acknowledged_at`` None (new ones also arrive as ``account.warning``)."""
        return list(self.request("GET", "/me/warnings")["results"])

    def acknowledge_warning(self, warning_id: int) -> dict[str, Any]:
        """Say "I understand": the warning stops showing. Answers the warning."""
        result: dict[str, Any] = self.request("POST", f"/me/warnings/{int(warning_id)}/acknowledge")
        return result

    # --- Attachments ---------------------------------------------------------------------

    def upload_attachment(
        self, conversation_id: str, data: bytes, *, mime: str, name: str
    ) -> dict[str, Any]:
        """Encrypt and upload a file; returns the attachment entry for a payload."""
        ciphertext, meta = crypto.encrypt_attachment(data, mime=mime, name=name)
        uploaded = self.request(
            "POST", f"/conversations/{conversation_id}/attachments",
            files={"blob": ("blob", ciphertext, "application/octet-stream")},
        )  # fmt: skip
        return {"blob_id": uploaded["blob_id"], **meta}

    def download_attachment(self, meta: Mapping[str, Any]) -> bytes:
        ciphertext = self.request("GET", f"/attachments/{meta['blob_id']}")
        return crypto.decrypt_attachment(ciphertext, meta)

    # --- The live socket -----------------------------------------------------------------

    async def connect(self) -> LiveSocket:
        ws_url = self.state.server.replace("http", "ws", 1) + f"/ws/?device={self.device_id}"
        socket = await websockets.connect(
            ws_url, additional_headers={"Authorization": f"Bearer {self.state.token}"},
            open_timeout=10, max_size=2**20,
        )  # fmt: skip
        live = LiveSocket(self, socket)
        hello = await live.next_frame()
        if hello.get("type") != "hello":
            await live.close()
            raise ApiError(401, hello.get("error") or {"code": hello.get("reason", "refused")})
        return live


def _device_to_state(keys: crypto.DeviceKeys) -> dict[str, Any]:
    """Device keys as the state file keeps them."""
    return {
        "device_id": keys.device_id,
        "sign_seed": crypto.b64u_encode(keys.sign_seed),
        "box_secret": crypto.b64u_encode(keys.box_secret),
        "created_at": keys.created_at,
    }


def _device_from_state(data: Mapping[str, Any]) -> crypto.DeviceKeys:
    """The inverse of ``_device_to_state``."""
    return crypto.DeviceKeys(
        device_id=data["device_id"],
        sign_seed=crypto.b64u_decode(data["sign_seed"]),
        box_secret=crypto.b64u_decode(data["box_secret"]),
        created_at=data["created_at"],
    )


def _id_or_none(value: Any) -> str | None:
    """The canonical form of an id received from the server, ``None`` if it is none."""
    try:
        return crypto.canonical_id(value)
    except ValueError:
        return None


class FrameRefused(ApiError):
    """The server answered a socket frame with an ``error`` event (docs/realtime.md):
    the same ``code``, ``message`` and ``field`` as an API error, but no HTTP status
    (``status`` is 0)."""

    def __init__(self, error: Mapping[str, Any]) -> None:
        super().__init__(0, error)
        self.message = str(error.get("message") or "")


CallSink = Callable[[dict[str, Any] | None], None]
"""Where a call's events go: a frame, or ``None`` once the socket has closed."""

# Events about one call, routed by their call_id to the call that handles them.
CALL_EVENTS = frozenset(
    {"call.accepted", "call.answered_elsewhere", "call.candidate", "call.ended"}
)


HEARTBEAT_SECONDS = 25


class LiveSocket:
    """The device's socket, read by one background task that routes each frame.

    A reply to a frame sent through ``request`` (it carries the frame's id back as
    ``ref``) goes to that request. ``call.incoming`` waits for
    ``next_incoming_call``, and later events about a call go to the call object that
    handles it (``parley_client.calls``). Everything else comes out of
    ``next_frame`` in order; ``message.new`` frames also through ``next_message``.
    """

    def __init__(self, client: ParleyClient, socket: Any) -> None:
        self.client = client
        self.socket = socket
        self._frames: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._incoming: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._calls: dict[str, CallSink] = {}
        # Events for a call that rang here but that nobody took yet: handed to its
        # call object when it registers, so a "cancelled" arriving first is not lost.
        self._held: dict[str, list[dict[str, Any]]] = {}
        self._closed: BaseException | None = None
        self._request_ids = itertools.count(1)
        self._reader = asyncio.create_task(self._read())
        self._heartbeat = asyncio.create_task(self._beat())

    # --- Reading and routing --------------------------------------------------------------

    async def _read(self) -> None:
        """The only reader of the socket: two readers at once would steal each
        other's frames."""
        while True:
            try:
                text = await self.socket.recv()
            except asyncio.CancelledError:
                self._stop(ConnectionError("the socket was closed"))
                raise
            except Exception as exc:  # ConnectionClosed, or the transport failing
                self._stop(exc)
                return
            try:
                frame = json.loads(text)
            except ValueError:
                logger.warning("a socket frame that is not JSON was ignored")
                continue
            if not isinstance(frame, dict):
                continue
            try:
                self._route(frame)
            except Exception:  # a bug in a handler must not stop the reader
                logger.exception("routing a %s frame failed", str(frame.get("type"))[:40])

    async def _beat(self) -> None:
        """Ping now and then: the server notes the device as seen, which keeps a long
        call from being ended as lost (docs/calls.md). Replies go to the request."""
        while self._closed is None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.request({"type": "ping"}, within=HEARTBEAT_SECONDS)
            except Exception:  # the socket is gone: the reader already said so
                return

    def _route(self, frame: dict[str, Any]) -> None:
        ref = frame.get("ref")
        if isinstance(ref, str) and ref in self._pending:
            future = self._pending.pop(ref)
            if not future.done():
                future.set_result(frame)
            return
        kind = frame.get("type")
        call_id = _id_or_none(frame.get("call_id"))
        if call_id is not None and (kind in CALL_EVENTS or kind == "call.incoming"):
            sink = self._calls.get(call_id)
            if sink is not None:
                sink(frame)
                return
            if call_id in self._held:
                self._held[call_id].append(frame)
                return
            if kind == "call.incoming":
                self._held[call_id] = []
                self._incoming.put_nowait(frame)
                return
        self._frames.put_nowait(frame)

    def _stop(self, error: BaseException) -> None:
        """The socket is gone: every waiter hears it."""
        if self._closed is not None:
            return
        self._closed = error
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()
        self._frames.put_nowait(error)
        self._incoming.put_nowait(error)
        for sink in list(self._calls.values()):
            sink(None)

    @staticmethod
    async def _take(
        queue: asyncio.Queue[dict[str, Any] | BaseException], within: float
    ) -> dict[str, Any]:
        item = await asyncio.wait_for(queue.get(), within)
        if isinstance(item, BaseException):
            queue.put_nowait(item)  # every later read fails the same way
            raise item
        return item

    # --- Frames ---------------------------------------------------------------------------

    async def next_frame(self, within: float = 10) -> dict[str, Any]:
        """The next frame not routed elsewhere, waiting at most ``within`` seconds.
        Raises the reason (``websockets.ConnectionClosed``) once the socket is closed."""
        return await self._take(self._frames, within)

    async def next_message(self, within: float = 10) -> Received:
        """The next message.new, opened; acknowledges its delivery."""

        async def wait() -> Received:
            while True:
                frame = await self.next_frame(within)
                if frame.get("type") == "message.new":
                    received = await asyncio.to_thread(self.client.open, frame)
                    await self.send({"type": "message.ack",
                                     "conversation_id": frame["conversation_id"],
                                     "seq": frame["seq"]})  # fmt: skip
                    return received

        return await asyncio.wait_for(wait(), within)

    async def send(self, frame: Mapping[str, Any]) -> None:
        await self.socket.send(json.dumps(frame))

    async def request(self, frame: Mapping[str, Any], within: float = 10) -> dict[str, Any]:
        """Send a frame with a fresh ``id`` and return the reply that carries it back
        as ``ref``. An ``error`` reply raises ``FrameRefused``."""
        if self._closed is not None:
            raise self._closed
        ref = f"r{next(self._request_ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        try:
            await self.send({**frame, "id": ref})
            reply = await asyncio.wait_for(future, within)
        finally:
            self._pending.pop(ref, None)
        if reply.get("type") == "error":
            error = reply.get("error")
            raise FrameRefused(error if isinstance(error, dict) else {"code": "error"})
        return reply

    # --- Calls (parley_client.calls) ------------------------------------------------------

    async def place_call(
        self,
        handle: str,
        media: str = "audio",
        *,
        tracks: Sequence[MediaStreamTrack] = (),
        data_channel: bool = True,
    ) -> OutgoingCall:
        """Call a user: see ``parley_client.calls.place_call``. Needs aiortc."""
        from parley_client import calls

        return await calls.place_call(self, handle, media, tracks=tracks, data_channel=data_channel)

    async def next_incoming_call(self, within: float = 10) -> IncomingCall:
        """The next call ringing on this device, its offer opened and checked; raises
        ``parley_client.calls.SignalingError`` (and does not answer) if the offer is
        not what it claims. Needs aiortc."""
        from parley_client import calls

        frame = await self._take(self._incoming, within)
        return await calls.IncomingCall.receive(self, frame)

    def register_call(self, call_id: str, sink: CallSink) -> None:
        """Route the events of ``call_id`` to ``sink`` from now on, after any that
        arrived while nobody handled the call."""
        self._calls[call_id] = sink
        for frame in self._held.pop(call_id, []):
            sink(frame)
        if self._closed is not None:
            sink(None)

    def release_call(self, call_id: str) -> None:
        """Stop routing ``call_id``: its later events come out of ``next_frame``."""
        self._calls.pop(call_id, None)
        self._held.pop(call_id, None)

    async def close(self) -> None:
        """Close the socket and stop the reader; waiting requests and calls hear it."""
        await self.socket.close()
        for task in (self._heartbeat, self._reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
