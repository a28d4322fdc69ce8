"""Recompute every vector of parley_client/vectors.json with parley_client.crypto."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import nacl.bindings
import pytest
from parley_client import crypto as c
from parley_client.crypto import b64u_decode as d
from parley_client.crypto import b64u_encode as e

ROOT = Path(__file__).resolve().parent.parent
VECTORS_PATH = ROOT / "parley_client" / "vectors.json"
DOCUMENT: dict[str, Any] = json.loads(VECTORS_PATH.read_text("utf-8"))
VECTORS: list[dict[str, Any]] = DOCUMENT["vectors"]


def by_construction(*names: str) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in VECTORS if v["construction"] in names]


def named(name: str) -> dict[str, Any]:
    return next(v for v in VECTORS if v["name"] == name)


def test_every_construction_is_checked() -> None:
    checked = {
        "b64u",
        "public-keys",
        "device-certificate",
        "history-key-certificate",
        "safety-number",
        "pair-safety-number",
        "recovery-code",
        "backup",
        "message",
        "franking-stamp-input",
        "box-to-device",
        "attachment-aead",
        "sealed-box-open",
        "secretstream-open",
        "attachment-secretstream-open",
        "link-commitment",
        "link-code",
    }
    assert {v["construction"] for v in VECTORS} == checked
    assert len({v["name"] for v in VECTORS}) == len(VECTORS)
    assert all(v["kind"] in {"compute", "open"} for v in VECTORS)


def test_the_generator_reproduces_the_file() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_vectors", ROOT / "tools" / "make_vectors.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.build(DOCUMENT)) == VECTORS_PATH.read_text("utf-8")


@pytest.mark.parametrize("v", by_construction("b64u"))
def test_b64u(v: dict[str, Any]) -> None:
    for hex_data, text in zip(v["input"]["hex"], v["output"]["b64u"], strict=True):
        assert c.b64u_encode(bytes.fromhex(hex_data)) == text
        assert c.b64u_decode(text) == bytes.fromhex(hex_data)
    for text in v["input"]["invalid"]:
        with pytest.raises(ValueError, match="base64url"):
            c.b64u_decode(text)


@pytest.mark.parametrize("v", by_construction("public-keys"))
def test_public_keys(v: dict[str, Any]) -> None:
    for name, seed in v["input"]["ed25519_seeds"].items():
        assert e(c.ed25519_public_key(d(seed))) == v["output"]["ed25519_public"][name]
        assert e(c.IdentityKey(d(seed)).public) == v["output"]["ed25519_public"][name]
    for name, secret in v["input"]["x25519_secrets"].items():
        assert e(c.x25519_public_key(d(secret))) == v["output"]["x25519_public"][name]
        assert e(c.HistoryKey(d(secret)).public) == v["output"]["x25519_public"][name]


@pytest.mark.parametrize("v", by_construction("device-certificate"))
def test_device_certificate(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    aik = c.IdentityKey(d(i["aik_seed"]))
    assert e(aik.public) == i["aik_pub"]
    fields = (i["user_id"], i["device_id"], d(i["sign_pub"]), d(i["box_pub"]), i["created_at"])
    assert c.device_certificate_input(*fields).decode("ascii") == o["signing_input_text"]
    assert e(c.device_certificate(aik, *fields)) == o["signature"]
    assert c.verify_device_certificate(i["aik_pub"], *fields, o["signature"])
    # The same with every binary field as it travels (b64u strings).
    assert c.verify_device_certificate(
        i["aik_pub"],
        i["user_id"],
        i["device_id"],
        i["sign_pub"],
        i["box_pub"],
        i["created_at"],
        o["signature"],
    )
    assert not c.verify_device_certificate(
        i["aik_pub"], *fields[:4], i["created_at"] + 1, o["signature"]
    )


@pytest.mark.parametrize("v", by_construction("history-key-certificate"))
def test_history_key_certificate(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    aik = c.IdentityKey(d(i["aik_seed"]))
    message = c.history_key_certificate_input(i["user_id"], d(i["hk_pub"]))
    assert message.decode("ascii") == o["signing_input_text"]
    assert e(c.history_key_certificate(aik, i["user_id"], d(i["hk_pub"]))) == o["signature"]
    assert c.verify_history_key_certificate(i["aik_pub"], i["user_id"], i["hk_pub"], o["signature"])


@pytest.mark.parametrize("v", by_construction("safety-number"))
def test_safety_number(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    data = d(i["aik_pub"]) + i["user_id"].encode("utf-8")
    assert e(c.mac(c.SAFETY_MAC_KEY, data)) == o["mac"]
    assert c.safety_number(d(i["aik_pub"]), i["user_id"]) == o["digits"]


@pytest.mark.parametrize("v", by_construction("pair-safety-number"))
def test_pair_safety_number(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    assert c.pair_safety_number(i["a"], i["b"]) == o["digits"]
    assert c.pair_safety_number(i["b"], i["a"]) == o["digits"]
    assert c.format_safety_number(o["digits"]) == o["formatted"]
    assert len(o["formatted"].split(" ")) == 12


@pytest.mark.parametrize("v", by_construction("recovery-code"))
def test_recovery_code(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    key = d(i["key"])
    assert c.format_recovery_code(key) == o["code"]
    assert e(c.recovery_check(key)) == o["check"]
    for code in i["parse_ok"]:
        assert c.parse_recovery_code(code) == key
    for code in i["parse_invalid"]:
        with pytest.raises(c.RecoveryCodeError):
            c.parse_recovery_code(code)


@pytest.mark.parametrize("v", by_construction("backup"))
def test_backup(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    aik_seed, hk_secret = d(i["aik_seed"]), d(i["hk_secret"])
    if "recovery_key" in i:
        kdf = c.RAW_KDF
        secret = d(i["recovery_key"])
    else:
        assert e(c.normalize_passphrase(i["passphrase_text"])) == i["passphrase_nfc_utf8"]
        kdf = c.BackupKdf(c.KDF_ARGON2ID, d(i["salt"]), i["opslimit"], i["memlimit"])
        secret = c.derive_backup_secret(i["passphrase_text"], kdf)
    assert e(secret) == o["backup_secret"]
    assert c.backup_plaintext(aik_seed, hk_secret).decode() == o["plaintext_text"]
    assert c.backup_ad(i["user_id"]).decode() == o["ad_text"]
    blob = c.make_backup(aik_seed, hk_secret, i["user_id"], secret, kdf, nonce=d(i["nonce"]))
    assert blob == o["blob"]
    assert c.restore_backup(o["blob"], i["user_id"], secret) == (aik_seed, hk_secret)
    if "passphrase_text" in i:
        restored = c.restore_backup_with_passphrase(o["blob"], i["user_id"], i["passphrase_text"])
        assert restored == (aik_seed, hk_secret)
    else:
        code = c.format_recovery_code(secret)
        restored = c.restore_backup_with_recovery_code(o["blob"], i["user_id"], code)
        assert restored == (aik_seed, hk_secret)


@pytest.mark.parametrize("v", by_construction("message"))
def test_message(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    payload = json.loads(i["payload_text"])
    payload_bytes = i["payload_text"].encode("utf-8")
    assert c.serialize_payload(payload) == payload_bytes
    assert (
        c.message_ad(i["conversation_id"], i["sender_device_id"], i["client_id"]).decode()
        == o["ad_text"]
    )
    assert e(d(i["franking_key"]) + payload_bytes) == o["plaintext"]
    envelope = c.encrypt_message(
        payload,
        i["conversation_id"],
        i["sender_device_id"],
        i["client_id"],
        d(i["sender_box_secret"]),
        {device: d(pub) for device, pub in i["recipients"].items()},
        {},
        key=d(i["key"]),
        nonce=d(i["nonce"]),
        franking_key=d(i["franking_key"]),
        wrap_nonces={device: d(n) for device, n in i["wrap_nonces"].items()},
    )
    assert envelope == o["envelope"]
    assert list(envelope) == list(o["envelope"])
    assert e(c.franking_tag(d(i["franking_key"]), payload_bytes)) == envelope["franking_tag"]
    for device, secret in i["recipient_box_secrets"].items():
        assert (
            e(c.unwrap_device_key(envelope["keys"][device], i["sender_box_pub"], d(secret)))
            == (i["key"])
        )
        result = c.decrypt_message(
            o["envelope"],
            i["conversation_id"],
            my_device_id=device,
            my_box_secret=d(secret),
            sender_box_pub=i["sender_box_pub"],
        )
        assert result.verified, result.error
        assert result.payload == payload
        assert result.payload_bytes == payload_bytes
        assert result.franking_key == d(i["franking_key"])
        assert not result.via_history


@pytest.mark.parametrize("v", by_construction("franking-stamp-input"))
def test_franking_stamp_input(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    stamp_input = c.franking_stamp_input(
        i["franking_tag"],
        i["conversation_id"],
        i["sender_user_id"],
        i["message_id"],
        i["server_ts"],
    )
    assert stamp_input.decode("ascii") == o["input_text"]
    assert named("message-envelope")["output"]["envelope"]["franking_tag"] == i["franking_tag"]


@pytest.mark.parametrize("v", by_construction("box-to-device"))
def test_box_to_device(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    assert d(i["plaintext"]) == i["plaintext_text"].encode("utf-8")
    boxed = c.box_to_device(
        d(i["plaintext"]), d(i["recipient_box_pub"]), d(i["sender_box_secret"]), nonce=d(i["nonce"])
    )
    assert boxed == o["boxed"]
    opened = c.open_from_device(o["boxed"], i["sender_box_pub"], d(i["recipient_box_secret"]))
    assert opened == d(i["plaintext"])


@pytest.mark.parametrize("v", by_construction("attachment-aead"))
def test_attachment_aead(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    ciphertext, meta = c.encrypt_attachment(
        d(i["data"]), mime=i["mime"], name=i["name"], key=d(i["key"]), nonce=d(i["nonce"])
    )
    assert e(ciphertext) == o["ciphertext"]
    assert meta == o["meta"]
    assert c.decrypt_attachment(d(o["ciphertext"]), o["meta"]) == d(i["data"])


@pytest.mark.parametrize("v", by_construction("sealed-box-open"))
def test_history_wrap_opens(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    assert e(c.x25519_public_key(d(i["hk_secret"]))) == i["hk_pub"]
    assert e(c.open_sealed_key(i["sealed"], d(i["hk_secret"]))) == o["key"]
    # The envelope of message-envelope, carrying this history wrap, opens with the HK alone.
    message = named("message-envelope")
    envelope = dict(message["output"]["envelope"], history_keys={i["user_id"]: i["sealed"]})
    result = c.decrypt_message(
        envelope,
        message["input"]["conversation_id"],
        my_user_id=i["user_id"],
        hk_secret=d(i["hk_secret"]),
    )
    assert result.verified, result.error
    assert result.via_history
    assert result.payload_bytes == message["input"]["payload_text"].encode("utf-8")


@pytest.mark.parametrize("v", by_construction("secretstream-open"))
def test_secretstream_opens(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
    nacl.bindings.crypto_secretstream_xchacha20poly1305_init_pull(
        state, d(i["header"]), d(i["key"])
    )
    for chunk, expected in zip(i["chunks"], o["chunks"], strict=True):
        plaintext, tag = nacl.bindings.crypto_secretstream_xchacha20poly1305_pull(
            state, d(chunk["ciphertext"]), None
        )
        assert (e(plaintext), tag) == (expected["plaintext"], expected["tag"])
    assert o["chunks"][-1]["tag"] == c.TAG_FINAL


@pytest.mark.parametrize("v", by_construction("attachment-secretstream-open"))
def test_attachment_secretstream_opens(v: dict[str, Any]) -> None:
    i, o = v["input"], v["output"]
    plaintext = c.decrypt_attachment(d(i["ciphertext"]), i["meta"])
    assert len(plaintext) == o["size"] == i["meta"]["size"]
    assert plaintext == bytes(n % 251 for n in range(o["size"]))
    assert e(c.sha256(plaintext)) == o["plaintext_sha256"]
    assert len(d(i["ciphertext"])) > c.ATTACHMENT_CHUNK_BYTES + c.SECRETSTREAM_ABYTES
