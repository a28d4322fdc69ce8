"""Round trips, refusals and tamper detection of parley_client.crypto."""

from __future__ import annotations

import json
import uuid
from typing import Any

import nacl.bindings
import nacl.utils
import pytest
from parley_client import crypto as c
from parley_client.crypto import b64u_decode, b64u_encode

USER_A = "11111111-1111-4111-8111-111111111111"
USER_B = "22222222-2222-4222-8222-222222222222"
CONVERSATION = "c0c0c0c0-0000-4000-8000-00000000c0c0"
PAYLOAD: dict[str, Any] = {
    "type": "text",
    "body": "hello ✓",
    "sent_at": 1763660000,
    "reply_to": None,
    "attachments": [],
}


def flip(text: str, index: int = 0) -> str:
    """The b64u string of the same bytes with one bit flipped."""
    data = bytearray(b64u_decode(text))
    data[index] ^= 0x01
    return b64u_encode(bytes(data))


# ------------------------------------------------------------------------ encodings


class TestB64u:
    def test_round_trip(self) -> None:
        for length in range(70):
            data = nacl.utils.random(length)
            text = b64u_encode(data)
            assert "=" not in text
            assert b64u_decode(text) == data

    @pytest.mark.parametrize(
        "text",
        [
            *["AA==", "AA=", "A", "AAAAA", "+/8", "a+b", "a/b", "AB", "AAB"],
            *["AA AA", " AA", "AA\n", "ÄA", "AA\x00", "_x"],
        ],
    )
    def test_refuses(self, text: str) -> None:
        with pytest.raises(ValueError, match="base64url"):
            b64u_decode(text)

    def test_refuses_bytes(self) -> None:
        with pytest.raises(ValueError, match="base64url"):
            b64u_decode(b"AA")  # type: ignore[arg-type]

    def test_url_alphabet(self) -> None:
        assert b64u_encode(b"\xfb\xff\xfe") == "-__-"
        assert b64u_decode("-__-") == b"\xfb\xff\xfe"


class TestSigningInput:
    def test_lines(self) -> None:
        assert c.signing_input("label", "a", 12, "b") == b"label\na\n12\nb"
        assert c.signing_input("label") == b"label"

    @pytest.mark.parametrize("field", ["a\nb", "\n", "trailing\n"])
    def test_refuses_newline(self, field: str) -> None:
        with pytest.raises(ValueError, match="newline"):
            c.signing_input("label", field)

    def test_refuses_non_ascii_and_other_types(self) -> None:
        with pytest.raises(ValueError, match="ASCII"):
            c.signing_input("label", "é")
        with pytest.raises(ValueError, match="string or an integer"):
            c.signing_input("label", True)
        with pytest.raises(ValueError, match="string or an integer"):
            c.signing_input("label", b"bytes")  # type: ignore[arg-type]

    def test_ids_are_canonical(self) -> None:
        value = uuid.uuid4()
        assert c.canonical_id(value) == str(value)
        assert c.canonical_id(str(value).upper()) == str(value)
        with pytest.raises(ValueError, match="UUID"):
            c.canonical_id("not-a-uuid")


# ----------------------------------------------------------------------------- keys


class TestCertificates:
    def test_device_certificate_round_trip(self) -> None:
        aik = c.IdentityKey.generate()
        device = c.DeviceKeys.generate(created_at=1763660000)
        signature = device.certificate(aik, USER_A)
        assert len(signature) == 64
        args = (USER_A, device.device_id, device.sign_public, device.box_public, 1763660000)
        assert c.verify_device_certificate(aik.public, *args, signature)
        assert c.verify_device_certificate(b64u_encode(aik.public), *args, b64u_encode(signature))

    def test_device_certificate_refusals_never_raise(self) -> None:
        aik = c.IdentityKey.generate()
        device = c.DeviceKeys.generate(created_at=1763660000)
        signature = device.certificate(aik, USER_A)
        good = (USER_A, device.device_id, device.sign_public, device.box_public, 1763660000)
        other_aik = c.IdentityKey.generate().public
        assert not c.verify_device_certificate(other_aik, *good, signature)
        assert not c.verify_device_certificate(aik.public, USER_B, *good[1:], signature)
        assert not c.verify_device_certificate(
            aik.public, USER_A, str(uuid.uuid4()), *good[2:], signature
        )
        assert not c.verify_device_certificate(
            aik.public, *good[:2], device.box_public, device.box_public, 1763660000, signature
        )
        assert not c.verify_device_certificate(aik.public, *good[:4], 1763660001, signature)
        bad_signature = bytes([signature[0] ^ 1]) + signature[1:]
        assert not c.verify_device_certificate(aik.public, *good, bad_signature)
        # Malformed input answers False, never an exception.
        assert not c.verify_device_certificate(aik.public, *good, signature[:63])
        assert not c.verify_device_certificate("not b64u!", *good, signature)
        assert not c.verify_device_certificate(aik.public, "nope", *good[1:], signature)
        assert not c.verify_device_certificate(aik.public, *good[:4], -1, signature)
        assert not c.verify_device_certificate(bytes(32), *good, signature)  # small order

    def test_history_key_certificate(self) -> None:
        aik = c.IdentityKey.generate()
        hk = c.HistoryKey.generate()
        signature = c.history_key_certificate(aik, USER_A, hk.public)
        assert c.verify_history_key_certificate(aik.public, USER_A, hk.public, signature)
        assert not c.verify_history_key_certificate(aik.public, USER_B, hk.public, signature)
        assert not c.verify_history_key_certificate(
            aik.public, USER_A, c.HistoryKey.generate().public, signature
        )
        assert not c.verify_history_key_certificate(aik.public, USER_A, b"short", signature)

    def test_same_bytes_as_the_documented_input(self) -> None:
        sign_pub, box_pub = bytes(range(32)), bytes(range(32, 64))
        device_id = "a11ce001-0000-4000-8000-000000000001"
        expected = (
            f"parley/device/v1\n{USER_A}\n{device_id}\n{b64u_encode(sign_pub)}\n"
            f"{b64u_encode(box_pub)}\n1763660000"
        ).encode()
        assert c.device_certificate_input(USER_A, device_id, sign_pub, box_pub, 1763660000) == (
            expected
        )
        assert c.history_key_certificate_input(USER_A, box_pub) == (
            f"parley/history-key/v1\n{USER_A}\n{b64u_encode(box_pub)}".encode()
        )

    def test_key_types_validate_and_hide_secrets(self) -> None:
        with pytest.raises(ValueError, match="32 bytes"):
            c.IdentityKey(b"short")
        with pytest.raises(ValueError, match="32 bytes"):
            c.HistoryKey(bytes(31))
        with pytest.raises(ValueError, match="UUID"):
            c.DeviceKeys("device", bytes(32), bytes(32), 0)
        aik = c.IdentityKey(bytes(range(32)))
        assert bytes(range(32)).hex() not in repr(aik)
        assert "seed" not in repr(aik)
        device = c.DeviceKeys.generate(device_id=uuid.UUID(int=1))
        assert device.device_id == "00000000-0000-0000-0000-000000000001"
        assert "box_secret" not in repr(device)
        assert len(device.sign(b"x")) == 64


class TestSafetyNumbers:
    def test_shape_and_dependence(self) -> None:
        aik = c.IdentityKey.generate().public
        number = c.safety_number(aik, USER_A)
        assert len(number) == 30
        assert number.isdigit()
        assert c.safety_number(b64u_encode(aik), USER_A) == number
        assert c.safety_number(aik, USER_B) != number
        assert c.safety_number(c.IdentityKey.generate().public, USER_A) != number

    def test_pair(self) -> None:
        a = c.safety_number(c.IdentityKey.generate().public, USER_A)
        b = c.safety_number(c.IdentityKey.generate().public, USER_B)
        pair = c.pair_safety_number(a, b)
        assert pair == c.pair_safety_number(b, a)
        assert pair == min(a, b) + max(a, b)
        formatted = c.format_safety_number(pair)
        assert len(formatted.split(" ")) == 12
        assert all(len(group) == 5 for group in formatted.split(" "))
        with pytest.raises(ValueError, match="30 digits"):
            c.pair_safety_number(a, b[:-1])
        with pytest.raises(ValueError, match="5 digits"):
            c.format_safety_number("1234")


# --------------------------------------------------------------------------- backup


class TestRecoveryCode:
    def test_round_trip(self) -> None:
        for _ in range(50):
            key = c.new_recovery_key()
            code = c.format_recovery_code(key)
            groups = code.split("-")
            assert len(groups) == 14
            assert all(len(group) == 4 for group in groups)
            assert set(code) <= set(c.CROCKFORD_ALPHABET + "-")
            assert c.parse_recovery_code(code) == key

    def test_tolerant_parsing(self) -> None:
        key = bytes(range(32))
        code = c.format_recovery_code(key)
        variants = [
            code.lower(),
            code.replace("-", " "),
            code.replace("-", ""),
            "  " + code.replace("-", "\t") + "\n",
            " - ".join(code.split("-")),
            code.replace("0", "O").replace("1", "I"),
            code.replace("1", "l").lower(),
        ]
        for variant in variants:
            assert c.parse_recovery_code(variant) == key

    def test_typos_are_caught(self) -> None:
        key = c.new_recovery_key()
        code = c.format_recovery_code(key).replace("-", "")
        for position in (0, 10, 27, 51, 55):
            replacement = "Z" if code[position] != "Z" else "Y"
            typo = code[:position] + replacement + code[position + 1 :]
            with pytest.raises(c.RecoveryCodeError, match="typo"):
                c.parse_recovery_code(typo)
        swapped = code[1] + code[0] + code[2:]
        if swapped != code:
            with pytest.raises(c.RecoveryCodeError, match="typo"):
                c.parse_recovery_code(swapped)

    @pytest.mark.parametrize("code", ["", "ABCD", "U" * 56, "*" * 56, "0" * 57])
    def test_malformed(self, code: str) -> None:
        with pytest.raises(c.RecoveryCodeError):
            c.parse_recovery_code(code)


class TestPassphrase:
    def test_short_passphrase_refused(self) -> None:
        for passphrase in ["", "short", "x" * 15, "e\u0301" * 15]:
            with pytest.raises(c.WeakPassphraseError, match="16 characters"):
                c.check_passphrase(passphrase)
            with pytest.raises(c.WeakPassphraseError):
                c.passphrase_backup_kdf(passphrase)
        c.check_passphrase("x" * 16)
        c.check_passphrase("é" * 16)

    def test_server_limits_for_a_new_backup(self) -> None:
        with pytest.raises(ValueError, match="opslimit"):
            c.passphrase_backup_kdf("a long enough passphrase", opslimit=1)
        with pytest.raises(ValueError, match="memlimit"):
            c.passphrase_backup_kdf("a long enough passphrase", memlimit=8192)

    def test_normalization(self) -> None:
        assert c.normalize_passphrase("e\u0301") == c.normalize_passphrase("\u00e9") == b"\xc3\xa9"


@pytest.fixture(scope="module")
def secrets() -> tuple[bytes, bytes]:
    return c.IdentityKey.generate().seed, c.HistoryKey.generate().secret


class TestBackup:
    def test_raw_round_trip(self, secrets: tuple[bytes, bytes]) -> None:
        aik_seed, hk_secret = secrets
        key = c.new_recovery_key()
        blob = c.make_backup(aik_seed, hk_secret, USER_A, key)
        assert set(blob) == {"nonce", "ciphertext", "kdf", "salt", "opslimit", "memlimit"}
        assert blob["kdf"] == "raw"
        assert (blob["salt"], blob["opslimit"], blob["memlimit"]) == (None, None, None)
        assert len(b64u_decode(blob["nonce"])) == 24
        assert c.restore_backup(blob, USER_A, key) == secrets
        code = c.format_recovery_code(key).lower()
        assert c.restore_backup_with_recovery_code(blob, USER_A, code) == secrets

    def test_passphrase_round_trip(self, secrets: tuple[bytes, bytes]) -> None:
        aik_seed, hk_secret = secrets
        passphrase = "correct horse battery staple"
        secret, kdf = c.passphrase_backup_kdf(passphrase)
        blob = c.make_backup(aik_seed, hk_secret, USER_A, secret, kdf)
        assert blob["kdf"] == "argon2id"
        assert len(b64u_decode(blob["salt"])) == 16
        assert (blob["opslimit"], blob["memlimit"]) == (2, 64 * 1024 * 1024)
        blob = json.loads(json.dumps(blob))  # as stored and fetched
        assert c.restore_backup_with_passphrase(blob, USER_A, passphrase) == secrets
        with pytest.raises(c.BackupRestoreError, match="did not open"):
            c.restore_backup_with_passphrase(blob, USER_A, passphrase + "!")

    def test_refusals(self, secrets: tuple[bytes, bytes]) -> None:
        aik_seed, hk_secret = secrets
        key = c.new_recovery_key()
        blob = c.make_backup(aik_seed, hk_secret, USER_A, key)
        with pytest.raises(c.BackupRestoreError, match="did not open"):
            c.restore_backup(blob, USER_A, c.new_recovery_key())
        with pytest.raises(c.BackupRestoreError, match="did not open"):
            c.restore_backup(blob, USER_B, key)  # bound to the user by the ad
        for field in ("nonce", "ciphertext"):
            with pytest.raises(c.BackupRestoreError, match="did not open"):
                c.restore_backup({**blob, field: flip(blob[field], 3)}, USER_A, key)
        broken_blobs: list[Any] = [{}, {**blob, "nonce": "AA"}, {**blob, "ciphertext": None}, []]
        for broken in broken_blobs:
            with pytest.raises(c.BackupRestoreError, match="malformed"):
                c.restore_backup(broken, USER_A, key)
        with pytest.raises(c.RecoveryCodeError):
            c.restore_backup_with_recovery_code(blob, USER_A, "0000-1111")

    def test_hostile_kdf_parameters_refused(self, secrets: tuple[bytes, bytes]) -> None:
        secret, kdf = c.passphrase_backup_kdf("a long enough passphrase")
        blob = c.make_backup(*secrets, USER_A, secret, kdf)
        for change in (
            {"memlimit": 8 * 1024 * 1024 * 1024},
            {"opslimit": 10_000},
            {"kdf": "raw"},
            {"kdf": "scrypt"},
            {"salt": "AAAA"},
            {"opslimit": "2"},
        ):
            with pytest.raises(c.BackupRestoreError, match="cannot derive"):
                c.restore_backup_with_passphrase({**blob, **change}, USER_A, "x")

    def test_content_must_be_the_two_keys(self) -> None:
        key = c.new_recovery_key()
        nonce = nacl.utils.random(24)
        ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            b'{"aik_seed":"AA"}', c.backup_ad(USER_A), nonce, key
        )
        blob = {"nonce": b64u_encode(nonce), "ciphertext": b64u_encode(ciphertext), "kdf": "raw"}
        with pytest.raises(c.BackupRestoreError, match="content is malformed"):
            c.restore_backup(blob, USER_A, key)

    def test_plaintext_parses_back(self, secrets: tuple[bytes, bytes]) -> None:
        assert c.parse_backup_plaintext(c.backup_plaintext(*secrets)) == secrets
        aik, hk = (b64u_encode(key) for key in secrets)
        for plaintext, reason in (
            (b"", "Expecting value"),
            (b"\xff", "utf-8"),
            (b"[]", "not a JSON object"),
            (b'"aik_seed"', "not a JSON object"),
            (b'{"aik_seed":"AA"}', "aik_seed must be 32 bytes"),
            (json.dumps({"hk_secret": hk}).encode(), "no aik_seed"),
            (json.dumps({"aik_seed": aik}).encode(), "no hk_secret"),
            (json.dumps({"aik_seed": aik, "hk_secret": 7}).encode(), "hk_secret must be bytes"),
            (b"[" * 100_000, "nested too deeply"),
        ):
            with pytest.raises(ValueError, match=reason):
                c.parse_backup_plaintext(plaintext)

    def test_kdf_shapes(self) -> None:
        with pytest.raises(ValueError, match="raw backup"):
            c.BackupKdf("raw", salt=bytes(16))
        with pytest.raises(ValueError, match="needs salt"):
            c.BackupKdf("argon2id", salt=bytes(16), opslimit=2)
        with pytest.raises(ValueError, match="unknown"):
            c.BackupKdf("pbkdf2")


# ------------------------------------------------------------------------- messages


class Party:
    def __init__(self, user_id: str, devices: int = 1) -> None:
        self.user_id = user_id
        self.hk = c.HistoryKey.generate()
        self.devices = [c.DeviceKeys.generate() for _ in range(devices)]


@pytest.fixture
def parties() -> tuple[Party, Party]:
    return Party(USER_A, devices=2), Party(USER_B)


def send(alice: Party, bob: Party, **kwargs: Any) -> dict[str, Any]:
    sender = alice.devices[0]
    recipients = {d.device_id: d.box_public for d in alice.devices + bob.devices}
    history = {alice.user_id: alice.hk.public, bob.user_id: bob.hk.public}
    return c.encrypt_message(
        kwargs.pop("payload", PAYLOAD),
        CONVERSATION,
        sender.device_id,
        kwargs.pop("client_id", None),
        sender.box_secret,
        recipients,
        history,
        **kwargs,
    )


def open_as(
    envelope: dict[str, Any], device: c.DeviceKeys, sender: c.DeviceKeys, **kwargs: Any
) -> c.DecryptedMessage:
    return c.decrypt_message(
        envelope,
        kwargs.pop("conversation_id", CONVERSATION),
        my_device_id=device.device_id,
        my_box_secret=device.box_secret,
        sender_box_pub=kwargs.pop("sender_box_pub", sender.box_public),
    )


class TestMessages:
    def test_envelope_shape(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        envelope = send(alice, bob, expires_in=3600)
        assert list(envelope) == [
            "v",
            "client_id",
            "sender_device",
            "nonce",
            "ciphertext",
            "franking_tag",
            "keys",
            "history_keys",
            "expires_in",
        ]
        assert envelope["v"] == 1
        assert envelope["expires_in"] == 3600
        assert uuid.UUID(envelope["client_id"]).version == 4
        assert envelope["sender_device"] == alice.devices[0].device_id
        assert len(b64u_decode(envelope["nonce"])) == 24
        assert len(b64u_decode(envelope["franking_tag"])) == 32
        assert set(envelope["keys"]) == {d.device_id for d in alice.devices + bob.devices}
        assert all(len(b64u_decode(w)) == 72 for w in envelope["keys"].values())
        assert set(envelope["history_keys"]) == {USER_A, USER_B}
        assert all(len(b64u_decode(w)) == 80 for w in envelope["history_keys"].values())
        # Wrap nonces are fresh per device.
        nonces = {b64u_decode(w)[:24] for w in envelope["keys"].values()}
        assert len(nonces) == 3

    def test_every_device_and_history_key_opens(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        sender = alice.devices[0]
        envelope = send(alice, bob)
        for device in alice.devices + bob.devices:
            result = open_as(envelope, device, sender)
            assert result.verified, result.error
            assert result.payload == PAYLOAD
            assert result.payload_bytes == json.dumps(
                PAYLOAD, separators=(",", ":"), ensure_ascii=False
            ).encode("utf-8")
            assert result.franking_key is not None
            assert c.verify_franking_tag(
                result.franking_key, result.payload_bytes, envelope["franking_tag"]
            )
        for party in (alice, bob):
            result = c.decrypt_message(
                envelope, CONVERSATION, my_user_id=party.user_id, hk_secret=party.hk.secret
            )
            assert result.verified, result.error
            assert result.via_history
            assert result.payload == PAYLOAD

    def test_delivered_with_only_its_own_wrap(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        envelope = send(alice, bob)
        mine = bob.devices[0].device_id
        delivered = {k: v for k, v in envelope.items() if k not in ("keys", "history_keys")}
        for form in ({"keys": {mine: envelope["keys"][mine]}}, {"key": envelope["keys"][mine]}):
            result = open_as({**delivered, **form}, bob.devices[0], alice.devices[0])
            assert result.verified, result.error
        history = {"history_key": envelope["history_keys"][USER_B]}
        result = c.decrypt_message(
            {**delivered, **history}, CONVERSATION, my_user_id=USER_B, hk_secret=bob.hk.secret
        )
        assert result.verified, result.error

    @pytest.mark.parametrize(
        "field", ["ciphertext", "nonce", "franking_tag", "wrap", "wrap_nonce", "history"]
    )
    def test_a_flipped_bit_is_not_verified(self, parties: tuple[Party, Party], field: str) -> None:
        alice, bob = parties
        envelope = send(alice, bob)
        mine = bob.devices[0].device_id
        if field == "wrap":
            envelope["keys"][mine] = flip(envelope["keys"][mine], 40)
        elif field == "wrap_nonce":
            envelope["keys"][mine] = flip(envelope["keys"][mine], 0)
        elif field == "history":
            envelope["history_keys"][USER_B] = flip(envelope["history_keys"][USER_B], 60)
            envelope["keys"] = {}
        else:
            envelope[field] = flip(envelope[field], 5)
        if field == "history":
            result = c.decrypt_message(
                envelope, CONVERSATION, my_user_id=USER_B, hk_secret=bob.hk.secret
            )
        else:
            result = open_as(envelope, bob.devices[0], alice.devices[0])
        assert not result.verified
        assert result.payload is None
        assert result.payload_bytes is None
        assert result.error

    def test_every_ad_field_is_bound(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        envelope = send(alice, bob)
        me, sender = bob.devices[0], alice.devices[0]
        # Another conversation.
        assert not open_as(envelope, me, sender, conversation_id=str(uuid.uuid4())).verified
        # Another client_id.
        assert not open_as({**envelope, "client_id": str(uuid.uuid4())}, me, sender).verified
        # Another sender device (the same box key, so only the ad can catch it).
        other = alice.devices[1].device_id
        assert not open_as({**envelope, "sender_device": other}, me, sender).verified
        # Another sender's box key: the wrap does not open.
        assert not open_as(
            envelope, me, sender, sender_box_pub=alice.devices[1].box_public
        ).verified

    def test_malformed_input_never_raises(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        envelope = send(alice, bob)
        me, sender = bob.devices[0], alice.devices[0]
        broken: list[Any] = [
            None,
            [],
            {},
            {**envelope, "v": 2},
            {**envelope, "v": True},
            {**envelope, "nonce": "AA=="},
            {**envelope, "nonce": 42},
            {**envelope, "ciphertext": None},
            {**envelope, "franking_tag": "AAAA"},
            {**envelope, "client_id": "not-a-uuid"},
            {**envelope, "sender_device": None},
            {**envelope, "keys": {"junk": 1, me.device_id: 7}},
            {**envelope, "keys": "nope"},
            {**envelope, "keys": {}},
            {k: v for k, v in envelope.items() if k != "client_id"},
        ]
        for message in broken:
            result = open_as(message, me, sender)
            assert not result.verified
            assert result.payload is None
        assert not open_as(envelope, me, sender, conversation_id="nope").verified
        assert not c.decrypt_message(envelope, CONVERSATION).verified
        assert not c.decrypt_message(
            envelope,
            CONVERSATION,
            my_device_id=me.device_id,
            my_box_secret=b"short",
            sender_box_pub=sender.box_public,
        ).verified

    @pytest.mark.parametrize(
        "payload_bytes", [b"not json", b"[1,2]", b'"text"', b'{"a":NaN}', b"\xff\xfe", b""]
    )
    def test_payload_must_be_a_json_object(
        self, parties: tuple[Party, Party], payload_bytes: bytes
    ) -> None:
        """Even correctly encrypted and franked, a bad payload is not content."""
        alice, bob = parties
        sender, me = alice.devices[0], bob.devices[0]
        key, nonce, fk = c.new_recovery_key(), nacl.utils.random(24), nacl.utils.random(32)
        client_id = str(uuid.uuid4())
        ad = c.message_ad(CONVERSATION, sender.device_id, client_id)
        ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            fk + payload_bytes, ad, nonce, key
        )
        envelope = {
            "v": 1,
            "client_id": client_id,
            "sender_device": sender.device_id,
            "nonce": b64u_encode(nonce),
            "ciphertext": b64u_encode(ciphertext),
            "franking_tag": b64u_encode(c.franking_tag(fk, payload_bytes)),
            "keys": {
                me.device_id: b64u_encode(
                    c.wrap_key_for_device(key, me.box_public, sender.box_secret)
                )
            },
        }
        assert not open_as(envelope, me, sender).verified

    def test_short_plaintext_is_not_verified(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        sender, me = alice.devices[0], bob.devices[0]
        key, nonce, client_id = c.new_recovery_key(), nacl.utils.random(24), str(uuid.uuid4())
        ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
            b"too short", c.message_ad(CONVERSATION, sender.device_id, client_id), nonce, key
        )
        envelope = {
            "v": 1,
            "client_id": client_id,
            "sender_device": sender.device_id,
            "nonce": b64u_encode(nonce),
            "ciphertext": b64u_encode(ciphertext),
            "franking_tag": b64u_encode(bytes(32)),
            "key": b64u_encode(c.wrap_key_for_device(key, me.box_public, sender.box_secret)),
        }
        assert not open_as(envelope, me, sender).verified

    def test_building_refusals(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        with pytest.raises(c.MessageTooLargeError):
            send(alice, bob, payload={"type": "text", "body": "x" * (64 * 1024)})
        with pytest.raises(ValueError, match="wrap nonce"):
            send(alice, bob, wrap_nonces={alice.devices[0].device_id: bytes(24)})
        with pytest.raises(ValueError, match="expires_in"):
            send(alice, bob, expires_in=0)
        with pytest.raises(ValueError, match="Out of range"):
            send(alice, bob, payload={"n": float("nan")})
        with pytest.raises(ValueError, match="recipient"):
            c.encrypt_message(
                PAYLOAD,
                CONVERSATION,
                alice.devices[0].device_id,
                None,
                alice.devices[0].box_secret,
                {},
            )

    def test_ids_are_written_canonically(self, parties: tuple[Party, Party]) -> None:
        alice, bob = parties
        client_id = uuid.uuid4()
        envelope = send(alice, bob, client_id=str(client_id).upper())
        assert envelope["client_id"] == str(client_id)
        assert open_as(envelope, bob.devices[0], alice.devices[0]).verified

    def test_franking(self) -> None:
        fk = nacl.utils.random(32)
        tag = c.franking_tag(fk, b"payload")
        assert c.verify_franking_tag(fk, b"payload", tag)
        assert c.verify_franking_tag(fk, b"payload", b64u_encode(tag))
        assert not c.verify_franking_tag(fk, b"payload!", tag)
        assert not c.verify_franking_tag(nacl.utils.random(32), b"payload", tag)
        assert not c.verify_franking_tag(fk, b"payload", tag[:31])
        message_id = str(uuid.uuid4())
        stamp_input = c.franking_stamp_input(tag, CONVERSATION, USER_A, message_id, 1763660042)
        assert (
            stamp_input
            == (
                f"parley/frank/v1\n{b64u_encode(tag)}\n{CONVERSATION}\n{USER_A}\n{message_id}\n"
                "1763660042"
            ).encode()
        )
        with pytest.raises(ValueError, match="newline"):
            c.franking_stamp_input(tag, CONVERSATION, USER_A, message_id, "1\n2")


# ---------------------------------------------------------------------- attachments


def with_sha256(meta: dict[str, Any], ciphertext: bytes) -> dict[str, Any]:
    """Metadata matching a forged ciphertext, so that only the decryption can refuse it."""
    return {**meta, "sha256": b64u_encode(c.sha256(ciphertext))}


CHUNK = c.ATTACHMENT_CHUNK_BYTES + c.SECRETSTREAM_ABYTES


@pytest.fixture(scope="module")
def stream() -> tuple[bytes, bytes, dict[str, Any]]:
    """A chunked attachment: past 1 MiB, its last chunk partial."""
    data = nacl.utils.random(c.ATTACHMENT_AEAD_MAX_BYTES + 3 * c.ATTACHMENT_CHUNK_BYTES // 2)
    ciphertext, meta = c.encrypt_attachment(data, mime="application/pdf", name="doc.pdf")
    return data, ciphertext, meta


class TestAttachments:
    @pytest.mark.parametrize("size", [0, 1, 1000, c.ATTACHMENT_AEAD_MAX_BYTES])
    def test_small_round_trip(self, size: int) -> None:
        data = nacl.utils.random(size)
        ciphertext, meta = c.encrypt_attachment(data, mime="image/png", name="a.png")
        assert set(meta) == {"key", "nonce", "sha256", "size", "mime", "name"}
        assert (meta["size"], meta["mime"], meta["name"]) == (size, "image/png", "a.png")
        assert len(ciphertext) == size + 16
        assert c.decrypt_attachment(ciphertext, meta) == data

    @pytest.mark.parametrize(
        "size",
        [
            c.ATTACHMENT_AEAD_MAX_BYTES + 1,
            2 * c.ATTACHMENT_AEAD_MAX_BYTES,  # a whole number of chunks
            3 * c.ATTACHMENT_AEAD_MAX_BYTES + 12345,
        ],
    )
    def test_large_round_trip(self, size: int) -> None:
        data = nacl.utils.random(size)
        ciphertext, meta = c.encrypt_attachment(data, mime="video/mp4", name="v.mp4")
        assert set(meta) == {"key", "header", "sha256", "size", "mime", "name"}
        chunks = -(-size // c.ATTACHMENT_CHUNK_BYTES)
        assert len(ciphertext) == size + chunks * c.SECRETSTREAM_ABYTES
        assert c.decrypt_attachment(ciphertext, meta) == data

    def test_small_refusals(self) -> None:
        ciphertext, meta = c.encrypt_attachment(b"secret file", mime="text/plain", name="f")
        with pytest.raises(c.AttachmentError, match="SHA-256"):
            c.decrypt_attachment(ciphertext + b"x", meta)
        forged = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        with pytest.raises(c.AttachmentError, match="did not open"):
            c.decrypt_attachment(forged, with_sha256(meta, forged))
        with pytest.raises(c.AttachmentError, match="did not open"):
            c.decrypt_attachment(ciphertext, {**meta, "key": b64u_encode(bytes(32))})
        with pytest.raises(c.AttachmentError, match="size"):
            c.decrypt_attachment(ciphertext, {**meta, "size": 3})
        for broken in ({}, {**meta, "key": "AA"}, {**meta, "size": "11"}, {**meta, "header": "x"}):
            with pytest.raises(c.AttachmentError, match="malformed"):
                c.decrypt_attachment(ciphertext, broken)

    def test_stream_truncated(self, stream: tuple[bytes, bytes, dict[str, Any]]) -> None:
        _, ciphertext, meta = stream
        assert len(ciphertext) % CHUNK != 0
        for cut in (
            len(ciphertext) - len(ciphertext) % CHUNK,  # the final chunk dropped
            CHUNK,  # all but the first dropped
            len(ciphertext) - 1,  # one byte short
            1,
            0,
        ):
            truncated = ciphertext[:cut]
            with pytest.raises(c.AttachmentError):
                c.decrypt_attachment(truncated, with_sha256(meta, truncated))

    def test_stream_reordered_or_extended(
        self, stream: tuple[bytes, bytes, dict[str, Any]]
    ) -> None:
        _, ciphertext, meta = stream
        swapped = ciphertext[CHUNK : 2 * CHUNK] + ciphertext[:CHUNK] + ciphertext[2 * CHUNK :]
        with pytest.raises(c.AttachmentError, match="authenticate"):
            c.decrypt_attachment(swapped, with_sha256(meta, swapped))
        duplicated = ciphertext[:CHUNK] + ciphertext
        with pytest.raises(c.AttachmentError, match="authenticate"):
            c.decrypt_attachment(duplicated, with_sha256(meta, duplicated))
        extended = ciphertext + ciphertext[:CHUNK]
        with pytest.raises(c.AttachmentError):
            c.decrypt_attachment(extended, with_sha256(meta, extended))
        flipped = ciphertext[:100] + bytes([ciphertext[100] ^ 1]) + ciphertext[101:]
        with pytest.raises(c.AttachmentError, match="authenticate"):
            c.decrypt_attachment(flipped, with_sha256(meta, flipped))
        with pytest.raises(c.AttachmentError, match="SHA-256"):
            c.decrypt_attachment(flipped, meta)

    def test_stream_ending_early_refused(self) -> None:
        """A TAG_FINAL chunk followed by more data is refused."""
        key = nacl.utils.random(32)
        state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
        header = nacl.bindings.crypto_secretstream_xchacha20poly1305_init_push(state, key)
        first = nacl.bindings.crypto_secretstream_xchacha20poly1305_push(
            state, bytes(c.ATTACHMENT_CHUNK_BYTES), None, c.TAG_FINAL
        )
        second = nacl.bindings.crypto_secretstream_xchacha20poly1305_push(
            state, b"more", None, c.TAG_FINAL
        )
        ciphertext = first + second
        meta = {
            "key": b64u_encode(key),
            "header": b64u_encode(header),
            "sha256": b64u_encode(c.sha256(ciphertext)),
            "size": c.ATTACHMENT_CHUNK_BYTES + 4,
        }
        with pytest.raises(c.AttachmentError, match="ends early"):
            c.decrypt_attachment(ciphertext, meta)


# -------------------------------------------------------------------- call signaling


class TestSignalingBox:
    def test_round_trip_and_refusals(self) -> None:
        caller, callee, stranger = (c.DeviceKeys.generate() for _ in range(3))
        sdp = json.dumps({"type": "offer", "sdp": "v=0\r\n"}).encode()
        boxed = c.box_to_device(sdp, callee.box_public, caller.box_secret)
        assert len(b64u_decode(boxed)) == 24 + len(sdp) + 16
        assert c.open_from_device(boxed, caller.box_public, callee.box_secret) == sdp
        with pytest.raises(c.DecryptionError):
            c.open_from_device(boxed, stranger.box_public, callee.box_secret)
        with pytest.raises(c.DecryptionError):
            c.open_from_device(flip(boxed, 30), caller.box_public, callee.box_secret)
        with pytest.raises(c.DecryptionError):
            c.open_from_device("AAAA", caller.box_public, callee.box_secret)
        with pytest.raises(c.DecryptionError):
            c.open_from_device("AA==", caller.box_public, callee.box_secret)

    def test_to_every_device(self) -> None:
        caller = c.DeviceKeys.generate()
        callees = [c.DeviceKeys.generate() for _ in range(3)]
        boxes = c.box_to_devices(
            b"offer", {d.device_id: d.box_public for d in callees}, caller.box_secret
        )
        assert set(boxes) == {d.device_id for d in callees}
        for device in callees:
            assert (
                c.open_from_device(boxes[device.device_id], caller.box_public, device.box_secret)
                == b"offer"
            )
