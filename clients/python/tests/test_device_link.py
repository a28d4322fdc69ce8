"""Linking a new device from an existing one: the reference client's cryptography against
vectors.json and an independent BLAKE2b, then the whole flow against a live server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from parley_client import crypto as c
from parley_client.client import LinkError, LiveSocket, ParleyClient

from common.testing import ROOT, LiveServer

VECTORS_PATH = Path(__file__).resolve().parent.parent / "parley_client" / "vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text("utf-8"))["vectors"]
PASSWORD = "correct horse battery staple"
USER = "11111111-1111-4111-8111-111111111111"


def link_vectors(construction: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS if v["construction"] == construction]


def blake2b_mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b-256 from the standard library, not libsodium."""
    return hashlib.blake2b(data, key=key, digest_size=32).digest()


def fields(v: dict[str, Any]) -> tuple[str, str, bytes, bytes, int]:
    i = v["input"]
    return (
        i["user_id"], i["device_id"], c.b64u_decode(i["sign_pub"]), c.b64u_decode(i["box_pub"]),
        i["created_at"],
    )  # fmt: skip


# --- Cryptography -----------------------------------------------------------------------------


def test_the_vectors_are_there_with_the_agreed_names() -> None:
    names = {v["name"]: v for v in VECTORS}
    assert names["link_commitment"]["construction"] == "link-commitment"
    assert names["link_code"]["construction"] == "link-code"
    assert all(names[n]["kind"] == "compute" for n in ("link_commitment", "link_code"))
    assert names["link_code_leading_zero"]["output"]["code"].startswith("0")


@pytest.mark.parametrize("v", link_vectors("link-commitment"))
def test_link_commitment_vector(v: dict[str, Any]) -> None:
    new_nonce = c.b64u_decode(v["input"]["new_nonce"])
    link_input = c.link_input(*fields(v))
    assert link_input.decode("ascii") == v["output"]["link_input_text"]
    commitment = c.link_commitment(new_nonce, *fields(v))
    assert c.b64u_encode(commitment) == v["output"]["commitment"]
    assert blake2b_mac(new_nonce, link_input) == commitment
    assert c.verify_link_commitment(v["output"]["commitment"], v["input"]["new_nonce"], *fields(v))
    # Every field travels as it does on the wire, too.
    i = v["input"]
    wire = (i["user_id"], i["device_id"], i["sign_pub"], i["box_pub"], i["created_at"])
    assert c.link_commitment(new_nonce, *wire) == commitment


@pytest.mark.parametrize("v", link_vectors("link-code"))
def test_link_code_vector(v: dict[str, Any]) -> None:
    existing = c.b64u_decode(v["input"]["existing_nonce"])
    new = c.b64u_decode(v["input"]["new_nonce"])
    code_input = c.link_code_input(*fields(v), new)
    assert code_input.decode("ascii") == v["output"]["code_input_text"]
    h = blake2b_mac(existing, code_input)
    assert c.b64u_encode(h) == v["output"]["mac"]
    expected = f"{int.from_bytes(h[:4], 'big') % 1_000_000:06d}"
    assert c.link_short_code(existing, new, *fields(v)) == expected == v["output"]["code"]


def test_the_commitment_binds_every_field() -> None:
    device = c.DeviceKeys.generate()
    nonce = c.new_link_nonce()
    honest = (USER, device.device_id, device.sign_public, device.box_public, device.created_at)
    commitment = c.link_commitment(nonce, *honest)
    assert c.verify_link_commitment(commitment, nonce, *honest)
    other = c.DeviceKeys.generate()
    user_id, device_id, sign_pub, box_pub, created_at = honest
    for changed in (
        ("22222222-2222-4222-8222-222222222222", device_id, sign_pub, box_pub, created_at),
        (user_id, other.device_id, sign_pub, box_pub, created_at),
        (user_id, device_id, other.sign_public, box_pub, created_at),
        (user_id, device_id, sign_pub, other.box_public, created_at),
        (user_id, device_id, sign_pub, box_pub, created_at + 1),
    ):
        assert not c.verify_link_commitment(commitment, nonce, *changed), changed
    assert not c.verify_link_commitment(commitment, c.new_link_nonce(), *honest)
    assert not c.verify_link_commitment(b"short", nonce, *honest), "never raises"
    assert not c.verify_link_commitment(commitment, b"short", *honest)


def test_the_code_depends_on_both_nonces_and_every_key() -> None:
    # Fixed inputs: a code is 6 digits, so two inputs share one once in a million; with
    # these, every single change below is known to give another code.
    device = c.DeviceKeys(
        "d0d0d0d0-0000-4000-8000-00000000d0d0", bytes([1]) * 32, bytes([2]) * 32, 1
    )
    other = c.DeviceKeys(
        "e0e0e0e0-0000-4000-8000-00000000e0e0", bytes([3]) * 32, bytes([4]) * 32, 2
    )
    existing, new = bytes([5]) * 32, bytes([6]) * 32
    base = (USER, device.device_id, device.sign_public, device.box_public, device.created_at)
    code = c.link_short_code(existing, new, *base)
    assert len(code) == 6 and code.isdigit()
    user_id, device_id, sign_pub, box_pub, created_at = base
    variants = {
        "existing nonce": c.link_short_code(bytes([7]) * 32, new, *base),
        "new nonce": c.link_short_code(existing, bytes([7]) * 32, *base),
        "user id": c.link_short_code(
            existing, new, "22222222-2222-4222-8222-222222222222", *base[1:]
        ),
        "device id": c.link_short_code(
            existing, new, user_id, other.device_id, sign_pub, box_pub, created_at
        ),
        "sign key": c.link_short_code(
            existing, new, user_id, device_id, other.sign_public, box_pub, created_at
        ),
        "box key": c.link_short_code(
            existing, new, user_id, device_id, sign_pub, other.box_public, created_at
        ),
        "created_at": c.link_short_code(existing, new, *base[:4], created_at + 1),
    }
    for changed, variant in variants.items():
        assert variant != code, f"the code does not depend on the {changed}"
    assert any(variant != code for variant in variants.values())
    with pytest.raises(ValueError, match="32 bytes"):
        c.link_short_code(existing[:16], new, *base)


def test_sealed_boxes_and_link_bundles() -> None:
    box = c.DeviceKeys.generate()
    sealed = c.seal_to(b"hello", box.box_public)
    assert len(sealed) == 5 + c.SEAL_OVERHEAD_BYTES
    assert c.open_sealed(sealed, box.box_secret) == b"hello"
    assert c.open_sealed(c.b64u_encode(sealed), box.box_secret) == b"hello"
    with pytest.raises(c.DecryptionError):
        c.open_sealed(sealed, c.DeviceKeys.generate().box_secret)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(c.DecryptionError):
        c.open_sealed(bytes(tampered), box.box_secret)

    aik, hk = c.IdentityKey.generate(), c.HistoryKey.generate()
    bundle = c.make_link_bundle(aik.seed, hk.secret, c.b64u_encode(box.box_public))
    assert len(bundle) <= c.MAX_LINK_BUNDLE_BYTES
    assert c.open_link_bundle(bundle, box.box_secret) == (aik.seed, hk.secret)
    assert json.loads(c.open_sealed(bundle, box.box_secret)) == {
        "aik_seed": c.b64u_encode(aik.seed),
        "hk_secret": c.b64u_encode(hk.secret),
    }
    with pytest.raises(c.LinkBundleError):
        c.open_link_bundle(bundle, c.DeviceKeys.generate().box_secret)
    with pytest.raises(c.LinkBundleError, match="malformed"):
        c.open_link_bundle(c.seal_to(b'{"aik_seed": "AA"}', box.box_public), box.box_secret)
    with pytest.raises(c.LinkBundleError):
        c.open_link_bundle(bytes(c.MAX_LINK_BUNDLE_BYTES + 1), box.box_secret)


# --- Against a live server --------------------------------------------------------------------


def new_user(server: LiveServer, handle: str) -> ParleyClient:
    client = ParleyClient(server.url)
    client.sign_up(handle, f"{handle}@example.com", PASSWORD, token_name="phone")
    client.set_up_keys("phone")
    return client


def signed_in(server: LiveServer, handle: str) -> ParleyClient:
    """A new machine: signed in, no device yet."""
    client = ParleyClient(server.url)
    client.log_in(handle, PASSWORD, token_name="laptop")
    return client


async def next_of_type(socket: LiveSocket, kind: str) -> dict[str, Any]:
    while True:
        frame = await socket.next_frame()
        if frame.get("type") == kind:
            return frame


@pytest.mark.django_db(transaction=True)
async def test_a_linked_device_reads_history_from_before_it_and_new_messages(
    daphne_server: LiveServer,
) -> None:
    alice = new_user(daphne_server, "alice_link")
    bob = new_user(daphne_server, "bob_link")
    conversation_id = alice.open_direct("bob_link")
    bob.accept(conversation_id)
    bob.send_text(conversation_id, "sent before the laptop existed")
    socket = await alice.connect()

    laptop = signed_in(daphne_server, "alice_link")
    link_id = laptop.request_link("laptop")
    requested = await next_of_type(socket, "device.link_requested")
    assert requested["link_id"] == link_id and requested["expires_at"]

    alice.challenge_link(requested["link_id"])
    code_on_laptop = laptop.reveal_link(poll=0.2)
    shown: list[str] = []

    def user_compares(code_on_phone: str) -> bool:
        shown.append(code_on_phone)
        return code_on_phone == code_on_laptop

    assert alice.approve_link(link_id, user_compares, poll=0.2) is True
    assert shown == [code_on_laptop]
    laptop.complete_link(poll=0.2)
    for kind in ("device.link_challenged", "device.link_revealed", "device.link_approved"):
        assert (await next_of_type(socket, kind))["link_id"] == link_id
    await socket.close()

    # A full device: the identity and history keys, a certified device, a bound token.
    assert laptop.state.aik_seed == alice.state.aik_seed
    assert laptop.state.hk_secret == alice.state.hk_secret
    assert laptop.state.pending_link is None
    assert laptop.device_id in alice.directory("alice_link").devices
    assert laptop.device_id in bob.directory("alice_link").devices, "Bob verifies it too"

    (old,) = laptop.history(conversation_id)
    assert old.verified and old.text == "sent before the laptop existed"
    assert old.message["key"] is None, "no wrap for the laptop: opened with the history key"

    bob.send_text(conversation_id, "and one after")
    new = [r for r in laptop.history(conversation_id) if r.text == "and one after"]
    assert len(new) == 1 and new[0].verified
    assert new[0].message["key"], "opened with the laptop's own wrap"
    laptop_socket = await laptop.connect()  # its token now speaks for the new device
    laptop.send_text(conversation_id, "hello from the laptop")
    newest = next(r for r in bob.history(conversation_id) if r.verified)
    assert newest.text == "hello from the laptop"
    await laptop_socket.close()


@pytest.mark.django_db(transaction=True)
def test_the_existing_device_refuses_keys_the_new_device_did_not_commit_to(
    daphne_server: LiveServer,
) -> None:
    from accounts.models import Device, DeviceLink

    alice = new_user(daphne_server, "alice_swap")
    laptop = signed_in(daphne_server, "alice_swap")
    link_id = laptop.request_link("laptop")
    alice.challenge_link(link_id)
    laptop.reveal_link(poll=0.2)
    # A malicious server swaps in keys of its own, with a commitment that matches them.
    evil = c.DeviceKeys.generate()
    evil_nonce = c.new_link_nonce()
    evil_fields = (alice.user_id, evil.device_id, evil.sign_public, evil.box_public, 1)
    DeviceLink.objects.filter(pk=link_id).update(
        commitment=c.link_commitment(evil_nonce, *evil_fields),
        new_nonce=evil_nonce,
        new_device_id=evil.device_id,
        sign_public_key=evil.sign_public,
        box_public_key=evil.box_public,
        device_created_at=1,
    )
    asked: list[str] = []

    def careless_user(code: str) -> bool:
        asked.append(code)
        return True

    with pytest.raises(LinkError, match="committed"):
        alice.approve_link(link_id, careless_user, poll=0.2)
    assert asked == [], "the user is never shown a code for keys that fail the check"
    assert DeviceLink.objects.get(pk=link_id).state == "denied"
    assert not Device.objects.filter(pk=evil.device_id).exists()
    with pytest.raises(LinkError, match="denied"):
        laptop.complete_link(poll=0.2)


@pytest.mark.django_db(transaction=True)
def test_the_new_device_refuses_a_bundle_the_server_made(daphne_server: LiveServer) -> None:
    from accounts.models import DeviceLink

    alice = new_user(daphne_server, "alice_bundle")
    laptop = signed_in(daphne_server, "alice_bundle")
    link_id = laptop.request_link("laptop")
    alice.challenge_link(link_id)
    code = laptop.reveal_link(poll=0.2)
    assert alice.approve_link(link_id, lambda shown: shown == code, poll=0.2)
    # Anyone who knows the laptop's box key can seal to it: the server swaps the bundle.
    link = laptop.request("GET", f"/devices/links/{link_id}")
    box_pub = c.b64u_decode(link["revealed"]["box_pub"])
    forged = c.make_link_bundle(
        c.IdentityKey.generate().seed, c.HistoryKey.generate().secret, box_pub
    )
    DeviceLink.objects.filter(pk=link_id).update(bundle=forged)
    with pytest.raises(LinkError, match="another identity key"):
        laptop.complete_link(poll=0.2)
    assert laptop.state.aik_seed is None and laptop.state.device is None


@pytest.mark.django_db(transaction=True)
def test_command_line_link_and_approve_link(daphne_server: LiveServer, tmp_path: Path) -> None:
    def command(state: str, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "parley_client", "--server", daphne_server.url,
            "--state", str(tmp_path / state), *args,
        ]  # fmt: skip

    env = {**os.environ, "PARLEY_PASSWORD": PASSWORD}
    cwd = ROOT / "clients" / "python"

    def cli(state: str, *args: str, stdin: str = "") -> str:
        result = subprocess.run(
            command(state, *args), cwd=cwd, env=env, input=stdin, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    cli("phone.json", "signup", "alice_cli", "alice_cli@example.com")
    cli("phone.json", "init")
    cli("bob.json", "signup", "bob_cli", "bob_cli@example.com")
    cli("bob.json", "init")
    cli("laptop.json", "login", "alice_cli")

    linking = subprocess.Popen(
        command("laptop.json", "link", "--name", "cli laptop", "--poll", "0.5"),
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    watchdog = threading.Timer(90, linking.kill)
    watchdog.start()
    try:
        assert linking.stdout is not None
        assert "Waiting for one of your devices" in linking.stdout.readline()
        approved = cli("phone.json", "approve-link", "--poll", "0.5", stdin="y\n")
        out, err = linking.communicate(timeout=60)
    finally:
        watchdog.cancel()
    assert linking.returncode == 0, out + err
    code_lines = [line for line in approved.splitlines() if line.startswith("Code: ")]
    assert len(code_lines) == 1
    assert code_lines[0] in out.splitlines(), "both sides show the same code"
    assert "Approved" in approved and "Linked" in out
    # Sync starts from when a device was registered: a new message reaches the laptop.
    cli("bob.json", "send", "@alice_cli", "hello after the link")
    assert "hello after the link" in cli("laptop.json", "sync")
