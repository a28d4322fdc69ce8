"""The cryptography of Parley protocol v1 (docs/PROTOCOL.md), on PyNaCl only.

Every construction of the protocol is here, byte for byte: wire encodings and
signing inputs, the key types, device and history-key certificates, safety
numbers, the key backup (recovery key or passphrase), linking a new device from
an existing one (commitment, short code, sealed key bundle), message envelopes and
franking, attachments, and the boxes that carry call signaling.

Conventions:

- Binary values travel as unpadded base64url ("b64u"); functions take ``bytes``,
  and where a value usually arrives from the wire (public keys, signatures) they
  also take its b64u string.
- Ids are UUIDs, written lower-case; functions take ``str`` or ``uuid.UUID`` and
  write the canonical lower-case form into every signing input and associated data.
- Functions that *build* something raise ``ValueError`` (or a subclass) on bad
  arguments. Functions that *check* something received (``verify_*``,
  ``decrypt_message``) never raise for malformed or tampered input: they answer
  ``False`` / an unverified result. Functions that *open* something the user
  asked for (backup, attachment, signaling box) raise a ``DecryptionError``.

Randomness comes from libsodium (``nacl.utils.random``). Every random value can be
injected through a keyword argument, which only the test vectors should do.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final

import nacl.bindings
import nacl.exceptions
import nacl.hash
import nacl.pwhash.argon2id
import nacl.utils
from nacl.encoding import RawEncoder
from nacl.public import Box, PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

Id = str | uuid.UUID
"""A user, device, conversation, message or call id: a UUID or its string."""

BytesOrB64u = bytes | str
"""Raw bytes, or the same bytes as an unpadded base64url string."""

# Labels (first line of each signing input / associated data).
DEVICE_LABEL: Final = "parley/device/v1"
HISTORY_KEY_LABEL: Final = "parley/history-key/v1"
BACKUP_LABEL: Final = "parley/backup/v1"
MESSAGE_LABEL: Final = "parley/msg/v1"
FRANKING_LABEL: Final = "parley/frank/v1"
LINK_LABEL: Final = "parley/link/v1"
LINK_CODE_LABEL: Final = "parley/link-code/v1"
SAFETY_MAC_KEY: Final = b"parley/safety/v1"

# Sizes.
KEY_BYTES: Final = 32
PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
NONCE_BYTES: Final = 24  # box and XChaCha20-Poly1305 alike
MAC_BYTES: Final = 16
WRAP_BYTES: Final = NONCE_BYTES + KEY_BYTES + MAC_BYTES  # n_d || box(K): 72
SEALED_KEY_BYTES: Final = 48 + KEY_BYTES  # seal(K): 80
SALT_BYTES: Final = nacl.pwhash.argon2id.SALTBYTES  # 16
MAX_MESSAGE_CIPHERTEXT_BYTES: Final = 64 * 1024

# Safety numbers.
SAFETY_NUMBER_DIGITS: Final = 30

# Backup.
KDF_RAW: Final = "raw"
KDF_ARGON2ID: Final = "argon2id"
MIN_PASSPHRASE_CHARS: Final = 16
DEFAULT_OPSLIMIT: Final = nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE  # 2
DEFAULT_MEMLIMIT: Final = nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE  # 64 MiB
# What the server accepts for a new backup (accounts/serializers.py).
SERVER_MIN_OPSLIMIT: Final = 2
SERVER_MAX_OPSLIMIT: Final = 64
SERVER_MIN_MEMLIMIT: Final = 64 * 1024 * 1024
SERVER_MAX_MEMLIMIT: Final = 1024 * 1024 * 1024
# Restoring accepts anything libsodium accepts, up to the server's maximum, so a
# hostile server cannot make a restoring device burn unbounded memory or time.
RESTORE_MIN_OPSLIMIT: Final = nacl.pwhash.argon2id.OPSLIMIT_MIN  # 1
RESTORE_MIN_MEMLIMIT: Final = nacl.pwhash.argon2id.MEMLIMIT_MIN  # 8192

# Linking a device (docs/keys-and-devices.md, "Linking a device").
LINK_NONCE_BYTES: Final = 32
LINK_CODE_DIGITS: Final = 6
SEAL_OVERHEAD_BYTES: Final = 48  # crypto_box_SEALBYTES: ephemeral public key + MAC
MAX_LINK_BUNDLE_BYTES: Final = 1024  # what the server accepts

# Recovery code: Crockford base32 of key || check, in groups of 4.
CROCKFORD_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RECOVERY_CHECK_BYTES: Final = 3
RECOVERY_CODE_CHARS: Final = (KEY_BYTES + RECOVERY_CHECK_BYTES) * 8 // 5  # 56
RECOVERY_GROUP: Final = 4

# Attachments.
ATTACHMENT_AEAD_MAX_BYTES: Final = 1024 * 1024  # up to 1 MiB: one aead
ATTACHMENT_CHUNK_BYTES: Final = 64 * 1024  # past it: secretstream, 64 KiB chunks
ATTACHMENT_AD: Final = b""  # no associated data: every attachment key is fresh
SECRETSTREAM_ABYTES: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_ABYTES  # 17
SECRETSTREAM_HEADER_BYTES: Final = (
    nacl.bindings.crypto_secretstream_xchacha20poly1305_HEADERBYTES  # 24
)
TAG_MESSAGE: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE  # 0
TAG_FINAL: Final = nacl.bindings.crypto_secretstream_xchacha20poly1305_TAG_FINAL  # 3


# --------------------------------------------------------------------------- errors


class ParleyCryptoError(Exception):
    """Base class of every error this module raises on purpose."""


class DecryptionError(ParleyCryptoError):
    """Something could not be opened: wrong key, or altered or truncated data."""


class BackupRestoreError(DecryptionError):
    """The backup did not open: wrong recovery key or passphrase, or altered data."""


class AttachmentError(DecryptionError):
    """The attachment ciphertext does not match its metadata or does not open."""


class LinkBundleError(DecryptionError):
    """A link bundle did not open with this device's box key, or its content is malformed."""


class RecoveryCodeError(ParleyCryptoError, ValueError):
    """A recovery code is not well formed, or its check characters do not match."""


class WeakPassphraseError(ParleyCryptoError, ValueError):
    """A new backup passphrase is too short."""


class MessageTooLargeError(ParleyCryptoError, ValueError):
    """A message ciphertext would exceed the server's 64 KiB limit."""


# ------------------------------------------------------------------------ encodings


def b64u_encode(data: bytes) -> str:
    """Encode bytes as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly.

    Raises ``ValueError`` on padding, on ``+`` or ``/``, on any character outside the
    alphabet, on an impossible length, and on a non-canonical spelling (non-zero
    unused low bits), so that one value has exactly one spelling.
    """
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    if "=" in text or "+" in text or "/" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if b64u_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def signing_input(label: str, *fields: str | int) -> bytes:
    """Build a signing input: ASCII lines joined with ``\\n``, no trailing newline.

    The label is the first line; integers are written in decimal. Raises
    ``ValueError`` if a line contains ``\\n`` or is not ASCII.
    """
    lines = [label]
    for item in fields:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError("a signing input field is a string or an integer")
        lines.append(str(item))
    for line in lines:
        if "\n" in line:
            raise ValueError("a signing input field may not contain a newline")
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError("a signing input is ASCII") from exc


def canonical_id(value: Id) -> str:
    """The canonical lower-case UUID string of an id; ``ValueError`` if it is none."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise ValueError("an id is a UUID string")
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError(f"not a UUID: {value!r}") from exc


def _as_bytes(value: BytesOrB64u, length: int | None, what: str) -> bytes:
    """Bytes from bytes or b64u, checking the length; ``ValueError`` otherwise."""
    if isinstance(value, str):
        data = b64u_decode(value)
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        raise ValueError(f"{what} must be bytes or a base64url string")
    if length is not None and len(data) != length:
        raise ValueError(f"{what} must be {length} bytes, not {len(data)}")
    return data


def _box(secret: BytesOrB64u, pub: BytesOrB64u, pub_what: str = "box public key") -> Box:
    """The ``crypto_box`` between a box secret and a peer's box public key."""
    return Box(
        PrivateKey(_as_bytes(secret, KEY_BYTES, "box secret")),
        PublicKey(_as_bytes(pub, PUBLIC_KEY_BYTES, pub_what)),
    )


def _box_encrypt(
    plaintext: bytes, recipient_box_pub: BytesOrB64u, my_box_secret: bytes, nonce: bytes | None
) -> bytes:
    """``n || box(plaintext, n, recipient box key, my box secret)``, ``n`` random unless given."""
    box = _box(my_box_secret, recipient_box_pub, "recipient box key")
    return bytes(box.encrypt(plaintext, _random_or(nonce, NONCE_BYTES, "nonce")))


def _random_or(value: bytes | None, length: int, what: str) -> bytes:
    if value is None:
        return nacl.utils.random(length)
    return _as_bytes(value, length, what)


def _timestamp(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2b-256: libsodium's ``crypto_generichash(32, data, key)``."""
    return nacl.hash.blake2b(data, digest_size=32, key=key, encoder=RawEncoder)


def _equal(a: bytes, b: bytes) -> bool:
    return nacl.bindings.sodium_memcmp(a, b)


def _aead_encrypt(plaintext: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def _aead_decrypt(ciphertext: bytes, ad: bytes, nonce: bytes, key: bytes) -> bytes:
    """Open an aead ciphertext; ``DecryptionError`` if it does not authenticate."""
    try:
        return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptionError("ciphertext did not authenticate") from exc


# ----------------------------------------------------------------------------- keys


def ed25519_public_key(seed: bytes) -> bytes:
    """The Ed25519 public key (32 bytes) of a 32-byte seed."""
    return SigningKey(_as_bytes(seed, KEY_BYTES, "seed")).verify_key.encode()


def x25519_public_key(secret: bytes) -> bytes:
    """The X25519 public key (32 bytes) of a 32-byte secret key."""
    return PrivateKey(_as_bytes(secret, KEY_BYTES, "secret key")).public_key.encode()


@dataclass(frozen=True)
class IdentityKey:
    """The account identity key (AIK): Ed25519, kept as its 32-byte seed."""

    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _as_bytes(self.seed, KEY_BYTES, "AIK seed")

    @classmethod
    def generate(cls) -> IdentityKey:
        """A fresh random AIK."""
        return cls(nacl.utils.random(KEY_BYTES))

    @cached_property
    def signing_key(self) -> SigningKey:
        """The PyNaCl signing key."""
        return SigningKey(self.seed)

    @property
    def public(self) -> bytes:
        """The 32-byte public key, the user's cryptographic identity."""
        return self.signing_key.verify_key.encode()

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached Ed25519 signature."""
        return self.signing_key.sign(message).signature


@dataclass(frozen=True)
class DeviceKeys:
    """One device's keys: an Ed25519 signing key and an X25519 box key."""

    device_id: str
    sign_seed: bytes = field(repr=False)
    box_secret: bytes = field(repr=False)
    created_at: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "device_id", canonical_id(self.device_id))
        _as_bytes(self.sign_seed, KEY_BYTES, "device signing seed")
        _as_bytes(self.box_secret, KEY_BYTES, "device box secret")
        _timestamp(self.created_at, "created_at")

    @classmethod
    def generate(cls, created_at: int | None = None, device_id: Id | None = None) -> DeviceKeys:
        """Fresh device keys; ``device_id`` defaults to a uuid4, ``created_at`` to now."""
        return cls(
            device_id=canonical_id(device_id) if device_id is not None else str(uuid.uuid4()),
            sign_seed=nacl.utils.random(KEY_BYTES),
            box_secret=nacl.utils.random(KEY_BYTES),
            created_at=int(time.time()) if created_at is None else created_at,
        )

    @cached_property
    def signing_key(self) -> SigningKey:
        """The PyNaCl signing key of the device."""
        return SigningKey(self.sign_seed)

    @property
    def sign_public(self) -> bytes:
        """The device's 32-byte Ed25519 public key."""
        return self.signing_key.verify_key.encode()

    @property
    def box_public(self) -> bytes:
        """The device's 32-byte X25519 public key."""
        return x25519_public_key(self.box_secret)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte detached signature by the device key."""
        return self.signing_key.sign(message).signature

    def certificate(self, aik: IdentityKey, user_id: Id) -> bytes:
        """This device's certificate, signed by ``aik``."""
        return device_certificate(
            aik, user_id, self.device_id, self.sign_public, self.box_public, self.created_at
        )


@dataclass(frozen=True)
class HistoryKey:
    """The history key (HK): X25519; every message key is also sealed to it."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _as_bytes(self.secret, KEY_BYTES, "history key secret")

    @classmethod
    def generate(cls) -> HistoryKey:
        """A fresh random history key."""
        return cls(nacl.utils.random(KEY_BYTES))

    @property
    def public(self) -> bytes:
        """The 32-byte X25519 public key."""
        return x25519_public_key(self.secret)


# --------------------------------------------------------------------- certificates


def device_certificate_input(
    user_id: Id, device_id: Id, sign_pub: BytesOrB64u, box_pub: BytesOrB64u, created_at: int
) -> bytes:
    """``parley/device/v1\\n{user_id}\\n{device_id}\\n{sign_pub}\\n{box_pub}\\n{created_at}``."""
    return signing_input(
        DEVICE_LABEL,
        canonical_id(user_id),
        canonical_id(device_id),
        b64u_encode(_as_bytes(sign_pub, PUBLIC_KEY_BYTES, "device signing key")),
        b64u_encode(_as_bytes(box_pub, PUBLIC_KEY_BYTES, "device box key")),
        _timestamp(created_at, "created_at"),
    )


def device_certificate(
    aik: IdentityKey,
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
) -> bytes:
    """The AIK's 64-byte signature certifying a device."""
    return aik.sign(device_certificate_input(user_id, device_id, sign_pub, box_pub, created_at))


def verify_signature(public_key: BytesOrB64u, message: bytes, signature: BytesOrB64u) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature; never raises.

    The public key must be a curve point not of small order (as the server checks).
    """
    try:
        key = _as_bytes(public_key, PUBLIC_KEY_BYTES, "public key")
        sig = _as_bytes(signature, SIGNATURE_BYTES, "signature")
        if not nacl.bindings.crypto_core_ed25519_is_valid_point(key):
            return False
        VerifyKey(key).verify(message, sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


def verify_device_certificate(
    aik_pub: BytesOrB64u,
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
    signature: BytesOrB64u,
) -> bool:
    """Whether a device certificate verifies under ``aik_pub``; never raises."""
    try:
        message = device_certificate_input(user_id, device_id, sign_pub, box_pub, created_at)
    except (ValueError, TypeError):
        return False
    return verify_signature(aik_pub, message, signature)


def history_key_certificate_input(user_id: Id, hk_pub: BytesOrB64u) -> bytes:
    """``parley/history-key/v1\\n{user_id}\\n{hk_pub}``."""
    return signing_input(
        HISTORY_KEY_LABEL,
        canonical_id(user_id),
        b64u_encode(_as_bytes(hk_pub, PUBLIC_KEY_BYTES, "history key")),
    )


def history_key_certificate(aik: IdentityKey, user_id: Id, hk_pub: BytesOrB64u) -> bytes:
    """The AIK's 64-byte signature certifying the history key."""
    return aik.sign(history_key_certificate_input(user_id, hk_pub))


def verify_history_key_certificate(
    aik_pub: BytesOrB64u, user_id: Id, hk_pub: BytesOrB64u, signature: BytesOrB64u
) -> bool:
    """Whether a history key certificate verifies under ``aik_pub``; never raises."""
    try:
        message = history_key_certificate_input(user_id, hk_pub)
    except (ValueError, TypeError):
        return False
    return verify_signature(aik_pub, message, signature)


# ------------------------------------------------------------------- safety numbers


def safety_number(aik_pub: BytesOrB64u, user_id: Id) -> str:
    """A user's 30-digit safety number.

    ``mac(key = b"parley/safety/v1", data = aik_pub || user_id)``; the first 30 bytes
    as six 5-byte big-endian integers, each mod 100000, zero-padded to 5 digits.
    """
    data = _as_bytes(aik_pub, PUBLIC_KEY_BYTES, "AIK") + canonical_id(user_id).encode("utf-8")
    digest = mac(SAFETY_MAC_KEY, data)
    return "".join(
        f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5)
    )


def pair_safety_number(a: str, b: str) -> str:
    """The 60-digit safety number of a pair: both 30-digit numbers, the lower first."""
    for number in (a, b):
        if len(number) != SAFETY_NUMBER_DIGITS or not number.isascii() or not number.isdigit():
            raise ValueError("a safety number is 30 digits")
    return min(a, b) + max(a, b)


def format_safety_number(digits: str) -> str:
    """Digits in groups of 5 separated by spaces (a pair's number: 12 groups)."""
    if not digits or len(digits) % 5 or not digits.isascii() or not digits.isdigit():
        raise ValueError("a safety number is a multiple of 5 digits")
    return " ".join(digits[i : i + 5] for i in range(0, len(digits), 5))


# --------------------------------------------------------------------------- backup


def new_recovery_key() -> bytes:
    """A fresh recovery key: 32 random bytes, used directly as the backup secret."""
    return nacl.utils.random(KEY_BYTES)


def recovery_check(key: bytes) -> bytes:
    """The 3 check bytes of a recovery code: the first bytes of BLAKE2b-256(key)."""
    return nacl.hash.blake2b(key, digest_size=32, encoder=RawEncoder)[:RECOVERY_CHECK_BYTES]


def format_recovery_code(key: bytes) -> str:
    """The recovery key as a code to write down.

    ``key || first 3 bytes of BLAKE2b-256(key)`` (35 bytes = 280 bits) in Crockford
    base32 (``0-9 A-Z`` without ``I L O U``), most significant bits first: 56
    characters in 14 groups of 4 joined by ``-``.
    """
    data = _as_bytes(key, KEY_BYTES, "recovery key")
    number = int.from_bytes(data + recovery_check(data), "big")
    chars = [
        CROCKFORD_ALPHABET[(number >> (5 * i)) & 31] for i in reversed(range(RECOVERY_CODE_CHARS))
    ]
    groups = ["".join(chars[i : i + RECOVERY_GROUP]) for i in range(0, len(chars), RECOVERY_GROUP)]
    return "-".join(groups)


def parse_recovery_code(code: str) -> bytes:
    """The 32-byte recovery key of a code, as typed by a person.

    Tolerates lower case, spaces and dashes anywhere, and reads ``O`` as ``0`` and
    ``I``/``L`` as ``1`` (Crockford). Raises ``RecoveryCodeError`` on a wrong
    length, a character outside the alphabet, or check characters that do not match
    (a typo).
    """
    if not isinstance(code, str):
        raise RecoveryCodeError("a recovery code is text")
    cleaned = "".join(ch for ch in code if not ch.isspace() and ch != "-").upper()
    cleaned = cleaned.replace("O", "0").replace("I", "1").replace("L", "1")
    if len(cleaned) != RECOVERY_CODE_CHARS:
        raise RecoveryCodeError(
            f"a recovery code has {RECOVERY_CODE_CHARS} characters, this one has {len(cleaned)}"
        )
    number = 0
    for ch in cleaned:
        index = CROCKFORD_ALPHABET.find(ch)
        if index < 0:
            raise RecoveryCodeError(f"{ch!r} is not a recovery code character")
        number = (number << 5) | index
    data = number.to_bytes(KEY_BYTES + RECOVERY_CHECK_BYTES, "big")
    key, check = data[:KEY_BYTES], data[KEY_BYTES:]
    if not _equal(check, recovery_check(key)):
        raise RecoveryCodeError("this recovery code has a typo")
    return key


def normalize_passphrase(passphrase: str) -> bytes:
    """The bytes fed to Argon2id: the passphrase in Unicode NFC, UTF-8 encoded."""
    if not isinstance(passphrase, str):
        raise ValueError("a passphrase is text")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def check_passphrase(passphrase: str) -> None:
    """Refuse a new passphrase shorter than 16 characters (after NFC).

    The server keeps the backup and could try guesses offline: only length helps.
    Raises ``WeakPassphraseError``.
    """
    if not isinstance(passphrase, str):
        raise WeakPassphraseError("a passphrase is text")
    length = len(unicodedata.normalize("NFC", passphrase))
    if length < MIN_PASSPHRASE_CHARS:
        raise WeakPassphraseError(
            f"a backup passphrase needs at least {MIN_PASSPHRASE_CHARS} characters"
        )


@dataclass(frozen=True)
class BackupKdf:
    """How the backup secret was obtained: ``raw`` (a recovery key) or ``argon2id``."""

    kdf: str = KDF_RAW
    salt: bytes | None = None
    opslimit: int | None = None
    memlimit: int | None = None

    def __post_init__(self) -> None:
        if self.kdf == KDF_RAW:
            if (self.salt, self.opslimit, self.memlimit) != (None, None, None):
                raise ValueError("a raw backup has no salt, opslimit or memlimit")
        elif self.kdf == KDF_ARGON2ID:
            if self.salt is None or self.opslimit is None or self.memlimit is None:
                raise ValueError("an argon2id backup needs salt, opslimit and memlimit")
            _as_bytes(self.salt, SALT_BYTES, "salt")
            for name, value, low, high in (
                ("opslimit", self.opslimit, RESTORE_MIN_OPSLIMIT, SERVER_MAX_OPSLIMIT),
                ("memlimit", self.memlimit, RESTORE_MIN_MEMLIMIT, SERVER_MAX_MEMLIMIT),
            ):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} is an integer")
                if not low <= value <= high:
                    raise ValueError(f"{name} must be between {low} and {high}")
        else:
            raise ValueError(f"unknown backup kdf {self.kdf!r}")

    @classmethod
    def from_blob(cls, blob: Mapping[str, Any]) -> BackupKdf:
        """The KDF parameters stored with a backup blob; ``ValueError`` if malformed."""
        salt = blob.get("salt")
        return cls(
            kdf=blob.get("kdf", ""),
            salt=_as_bytes(salt, SALT_BYTES, "salt") if salt is not None else None,
            opslimit=blob.get("opslimit"),
            memlimit=blob.get("memlimit"),
        )


RAW_KDF: Final = BackupKdf()


def derive_backup_secret(passphrase: str, kdf: BackupKdf) -> bytes:
    """Argon2id(passphrase) under the parameters of ``kdf``: the 32-byte backup secret.

    No length check here (restoring must work with the passphrase the user has);
    new passphrases go through ``passphrase_backup_kdf``.
    """
    if kdf.kdf != KDF_ARGON2ID or kdf.salt is None:
        raise ValueError("only an argon2id backup is derived from a passphrase")
    assert kdf.opslimit is not None
    assert kdf.memlimit is not None
    return nacl.pwhash.argon2id.kdf(
        KEY_BYTES,
        normalize_passphrase(passphrase),
        kdf.salt,
        opslimit=kdf.opslimit,
        memlimit=kdf.memlimit,
    )


def passphrase_backup_kdf(
    passphrase: str,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
    salt: bytes | None = None,
) -> tuple[bytes, BackupKdf]:
    """For a new passphrase backup: (backup secret, KDF parameters).

    Refuses a short passphrase (``WeakPassphraseError``) and parameters the server
    would refuse (opslimit 2..64, memlimit 64 MiB..1 GiB). Defaults to libsodium's
    interactive limits (2, 64 MiB), which a phone or a browser can restore.
    """
    check_passphrase(passphrase)
    if not SERVER_MIN_OPSLIMIT <= opslimit <= SERVER_MAX_OPSLIMIT:
        raise ValueError(f"opslimit must be {SERVER_MIN_OPSLIMIT}..{SERVER_MAX_OPSLIMIT}")
    if not SERVER_MIN_MEMLIMIT <= memlimit <= SERVER_MAX_MEMLIMIT:
        raise ValueError(f"memlimit must be {SERVER_MIN_MEMLIMIT}..{SERVER_MAX_MEMLIMIT}")
    kdf = BackupKdf(
        kdf=KDF_ARGON2ID,
        salt=_random_or(salt, SALT_BYTES, "salt"),
        opslimit=opslimit,
        memlimit=memlimit,
    )
    return derive_backup_secret(passphrase, kdf), kdf


def backup_ad(user_id: Id) -> bytes:
    """``parley/backup/v1\\n{user_id}``: the backup's associated data."""
    return signing_input(BACKUP_LABEL, canonical_id(user_id))


def backup_plaintext(aik_seed: bytes, hk_secret: bytes) -> bytes:
    """``{"aik_seed":"<b64u>","hk_secret":"<b64u>"}``, compact, UTF-8."""
    content = {
        "aik_seed": b64u_encode(_as_bytes(aik_seed, KEY_BYTES, "AIK seed")),
        "hk_secret": b64u_encode(_as_bytes(hk_secret, KEY_BYTES, "history key secret")),
    }
    return json.dumps(content, separators=(",", ":")).encode("utf-8")


def parse_backup_plaintext(plaintext: bytes) -> tuple[bytes, bytes]:
    """The inverse of ``backup_plaintext``: ``(aik_seed, hk_secret)``.

    Raises ``ValueError`` unless ``plaintext`` is UTF-8 JSON with ``aik_seed`` and
    ``hk_secret``, each 32 bytes in b64u.
    """
    try:
        content = json.loads(bytes(plaintext).decode("utf-8"))
    except RecursionError as exc:  # deep nesting: a link bundle is anyone's to forge
        raise ValueError("nested too deeply") from exc
    if not isinstance(content, dict):
        raise ValueError("not a JSON object")
    try:
        return (
            _as_bytes(content["aik_seed"], KEY_BYTES, "aik_seed"),
            _as_bytes(content["hk_secret"], KEY_BYTES, "hk_secret"),
        )
    except KeyError as exc:
        raise ValueError(f"no {exc.args[0]}") from exc


def make_backup(
    aik_seed: bytes,
    hk_secret: bytes,
    user_id: Id,
    secret: bytes,
    kdf: BackupKdf = RAW_KDF,
    *,
    nonce: bytes | None = None,
) -> dict[str, Any]:
    """The backup blob to store on the server.

    ``secret`` is the recovery key (``kdf`` raw) or the Argon2id output for ``kdf``.
    Returns ``{"nonce", "ciphertext", "kdf", "salt", "opslimit", "memlimit"}``:
    b64u strings and integers, ``None`` where the raw KDF has no parameter.
    """
    key = _as_bytes(secret, KEY_BYTES, "backup secret")
    nonce_bytes = _random_or(nonce, NONCE_BYTES, "nonce")
    ciphertext = _aead_encrypt(
        backup_plaintext(aik_seed, hk_secret), backup_ad(user_id), nonce_bytes, key
    )
    return {
        "nonce": b64u_encode(nonce_bytes),
        "ciphertext": b64u_encode(ciphertext),
        "kdf": kdf.kdf,
        "salt": b64u_encode(kdf.salt) if kdf.salt is not None else None,
        "opslimit": kdf.opslimit,
        "memlimit": kdf.memlimit,
    }


def restore_backup(blob: Mapping[str, Any], user_id: Id, secret: bytes) -> tuple[bytes, bytes]:
    """Open a backup blob with the backup secret: ``(aik_seed, hk_secret)``.

    Raises ``BackupRestoreError`` if the blob is malformed, the secret is wrong, the
    blob was altered, or it belongs to another user.
    """
    try:
        key = _as_bytes(secret, KEY_BYTES, "backup secret")
        nonce = _as_bytes(blob["nonce"], NONCE_BYTES, "nonce")
        ciphertext = _as_bytes(blob["ciphertext"], None, "ciphertext")
        ad = backup_ad(user_id)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupRestoreError(f"malformed backup: {exc}") from exc
    try:
        plaintext = _aead_decrypt(ciphertext, ad, nonce, key)
    except DecryptionError as exc:
        raise BackupRestoreError(
            "the backup did not open: wrong recovery key or passphrase, or altered backup"
        ) from exc
    try:
        return parse_backup_plaintext(plaintext)
    except ValueError as exc:
        raise BackupRestoreError(f"the backup opened but its content is malformed: {exc}") from exc


def restore_backup_with_recovery_code(
    blob: Mapping[str, Any], user_id: Id, code: str
) -> tuple[bytes, bytes]:
    """Open a raw backup with the recovery code the user typed.

    Raises ``RecoveryCodeError`` for a mistyped code, ``BackupRestoreError`` otherwise.
    """
    return restore_backup(blob, user_id, parse_recovery_code(code))


def restore_backup_with_passphrase(
    blob: Mapping[str, Any], user_id: Id, passphrase: str
) -> tuple[bytes, bytes]:
    """Open an argon2id backup with its passphrase, using the blob's KDF parameters.

    Raises ``BackupRestoreError`` on any failure (including unacceptable parameters).
    """
    try:
        kdf = BackupKdf.from_blob(blob)
        secret = derive_backup_secret(passphrase, kdf)
    except (TypeError, ValueError, nacl.exceptions.CryptoError) as exc:
        raise BackupRestoreError(f"cannot derive the backup secret: {exc}") from exc
    return restore_backup(blob, user_id, secret)


# ---------------------------------------------------------------------- device links


def new_link_nonce() -> bytes:
    """32 random bytes: the new device's ``new_nonce`` or the existing one's nonce."""
    return nacl.utils.random(LINK_NONCE_BYTES)


def link_input(
    user_id: Id, device_id: Id, sign_pub: BytesOrB64u, box_pub: BytesOrB64u, created_at: int
) -> bytes:
    """``parley/link/v1\\n{user_id}\\n{device_id}\\n{sign_pub}\\n{box_pub}\\n{created_at}``:
    what a new device commits to (the fields of its future certificate)."""
    return signing_input(
        LINK_LABEL,
        canonical_id(user_id),
        canonical_id(device_id),
        b64u_encode(_as_bytes(sign_pub, PUBLIC_KEY_BYTES, "device signing key")),
        b64u_encode(_as_bytes(box_pub, PUBLIC_KEY_BYTES, "device box key")),
        _timestamp(created_at, "created_at"),
    )


def link_commitment(
    new_nonce: bytes,
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
) -> bytes:
    """``mac(key = new_nonce, data = link_input(...))``: 32 bytes.

    The new device sends this before it sees the existing device's nonce, and reveals
    ``new_nonce`` and its keys only after: whoever relays the link (the server) can no
    longer choose keys that make the short codes match.
    """
    return mac(
        _as_bytes(new_nonce, LINK_NONCE_BYTES, "new nonce"),
        link_input(user_id, device_id, sign_pub, box_pub, created_at),
    )


def verify_link_commitment(
    commitment: BytesOrB64u,
    new_nonce: BytesOrB64u,
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
) -> bool:
    """Whether revealed keys and nonce are those ``commitment`` fixed; never raises."""
    try:
        expected = link_commitment(
            _as_bytes(new_nonce, LINK_NONCE_BYTES, "new nonce"),
            user_id,
            device_id,
            sign_pub,
            box_pub,
            created_at,
        )
        return _equal(_as_bytes(commitment, KEY_BYTES, "commitment"), expected)
    except (ValueError, TypeError):
        return False


def link_code_input(
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
    new_nonce: BytesOrB64u,
) -> bytes:
    """``parley/link-code/v1\\n{user_id}\\n{device_id}\\n{sign_pub}\\n{box_pub}\\n{created_at}\\n{new_nonce}``."""
    return signing_input(
        LINK_CODE_LABEL,
        canonical_id(user_id),
        canonical_id(device_id),
        b64u_encode(_as_bytes(sign_pub, PUBLIC_KEY_BYTES, "device signing key")),
        b64u_encode(_as_bytes(box_pub, PUBLIC_KEY_BYTES, "device box key")),
        _timestamp(created_at, "created_at"),
        b64u_encode(_as_bytes(new_nonce, LINK_NONCE_BYTES, "new nonce")),
    )


def link_short_code(
    existing_nonce: BytesOrB64u,
    new_nonce: BytesOrB64u,
    user_id: Id,
    device_id: Id,
    sign_pub: BytesOrB64u,
    box_pub: BytesOrB64u,
    created_at: int,
) -> str:
    """The 6 digits both devices show: ``h = mac(key = existing_nonce, data =
    link_code_input(...))``; the first 4 bytes of ``h`` as a big-endian unsigned
    integer, mod 1 000 000, zero-padded to 6 digits."""
    h = mac(
        _as_bytes(existing_nonce, LINK_NONCE_BYTES, "existing nonce"),
        link_code_input(user_id, device_id, sign_pub, box_pub, created_at, new_nonce),
    )
    return f"{int.from_bytes(h[:4], 'big') % 10**LINK_CODE_DIGITS:0{LINK_CODE_DIGITS}d}"


def seal_to(plaintext: bytes, box_pub: BytesOrB64u) -> bytes:
    """``crypto_box_seal(plaintext, box_pub)``: anonymous, randomized, 48 bytes longer."""
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise ValueError("plaintext must be bytes")
    sealed = SealedBox(PublicKey(_as_bytes(box_pub, PUBLIC_KEY_BYTES, "box public key")))
    return bytes(sealed.encrypt(bytes(plaintext)))


def open_sealed(sealed: BytesOrB64u, box_secret: bytes) -> bytes:
    """Open ``crypto_box_seal`` with the recipient's box secret; ``DecryptionError``
    on any failure. A sealed box is anonymous: it says nothing about who sealed it."""
    try:
        data = _as_bytes(sealed, None, "sealed box")
        if len(data) < SEAL_OVERHEAD_BYTES:
            raise ValueError("too short")
        secret = PrivateKey(_as_bytes(box_secret, KEY_BYTES, "box secret"))
        return bytes(SealedBox(secret).decrypt(data))
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptionError("the sealed box did not open") from exc


def make_link_bundle(aik_seed: bytes, hk_secret: bytes, box_pub: BytesOrB64u) -> bytes:
    """What an existing device hands a new one it approves: ``crypto_box_seal`` of
    ``{"aik_seed": b64u, "hk_secret": b64u}`` (the backup's plaintext, compact JSON)
    to the new device's box key. At most 1 KiB."""
    bundle = seal_to(backup_plaintext(aik_seed, hk_secret), box_pub)
    if len(bundle) > MAX_LINK_BUNDLE_BYTES:
        raise ValueError("a link bundle is at most 1 KiB")
    return bundle


def open_link_bundle(bundle: BytesOrB64u, box_secret: bytes) -> tuple[bytes, bytes]:
    """Open a link bundle with the new device's box secret: ``(aik_seed, hk_secret)``.

    Raises ``LinkBundleError``. The bundle is anonymous, so opening it proves nothing
    about who made it: the caller must check that the AIK is the account's (key
    directory) and that its own certificate verifies under it.
    """
    try:
        data = _as_bytes(bundle, None, "link bundle")
        if len(data) > MAX_LINK_BUNDLE_BYTES:
            raise ValueError("a link bundle is at most 1 KiB")
        plaintext = open_sealed(data, box_secret)
    except (DecryptionError, ValueError, TypeError) as exc:
        raise LinkBundleError("the link bundle did not open with this device's key") from exc
    try:
        return parse_backup_plaintext(plaintext)
    except ValueError as exc:
        raise LinkBundleError(f"the link bundle opened but is malformed: {exc}") from exc


# ------------------------------------------------------------------------- messages


def serialize_payload(payload: Mapping[str, Any]) -> bytes:
    """A payload as compact UTF-8 JSON, keys in the mapping's order, no NaN."""
    return json.dumps(
        dict(payload), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def message_ad(conversation_id: Id, sender_device_id: Id, client_id: Id) -> bytes:
    """``parley/msg/v1\\n{conversation_id}\\n{sender_device_id}\\n{client_id}``."""
    return signing_input(
        MESSAGE_LABEL,
        canonical_id(conversation_id),
        canonical_id(sender_device_id),
        canonical_id(client_id),
    )


def franking_tag(franking_key: bytes, payload_bytes: bytes) -> bytes:
    """``mac(key = FK, data = payload)``: 32 bytes."""
    return mac(_as_bytes(franking_key, KEY_BYTES, "franking key"), payload_bytes)


def verify_franking_tag(franking_key: bytes, payload_bytes: bytes, tag: BytesOrB64u) -> bool:
    """Whether ``tag`` is the franking tag of ``payload_bytes`` under ``franking_key``."""
    try:
        expected = franking_tag(franking_key, payload_bytes)
        return _equal(_as_bytes(tag, 32, "franking tag"), expected)
    except (ValueError, TypeError):
        return False


def franking_stamp_input(
    tag: BytesOrB64u,
    conversation_id: Id,
    sender_user_id: Id,
    message_id: Id,
    server_ts: int | str,
) -> bytes:
    """``parley/frank/v1\\n{franking_tag}\\n{conversation_id}\\n{sender_user_id}\\n{id}\\n{server_ts}``.

    The server's franking stamp is HMAC-SHA256 under its own secret over these bytes;
    a client only needs the input, to send the stamp's inputs with a report.
    ``server_ts`` is written exactly as it travels.
    """
    return signing_input(
        FRANKING_LABEL,
        b64u_encode(_as_bytes(tag, 32, "franking tag")),
        canonical_id(conversation_id),
        canonical_id(sender_user_id),
        canonical_id(message_id),
        server_ts,
    )


def wrap_key_for_device(
    key: bytes,
    recipient_box_pub: BytesOrB64u,
    sender_box_secret: bytes,
    *,
    nonce: bytes | None = None,
) -> bytes:
    """``n_d || box(K, n_d, recipient box key, sender box secret)``: 72 bytes."""
    k = _as_bytes(key, KEY_BYTES, "message key")
    return _box_encrypt(k, recipient_box_pub, sender_box_secret, nonce)


def unwrap_device_key(
    wrap: BytesOrB64u, sender_box_pub: BytesOrB64u, my_box_secret: bytes
) -> bytes:
    """The message key ``K`` from this device's wrap; ``DecryptionError`` on failure."""
    try:
        return open_from_device(_as_bytes(wrap, WRAP_BYTES, "wrap"), sender_box_pub, my_box_secret)
    except (DecryptionError, ValueError, TypeError) as exc:
        raise DecryptionError("the message key wrap did not open") from exc


def seal_key(key: bytes, hk_pub: BytesOrB64u) -> bytes:
    """``seal(K, hk_pub)``: 80 bytes, anonymous (randomized: a fresh ephemeral key)."""
    k = _as_bytes(key, KEY_BYTES, "message key")
    return seal_to(k, _as_bytes(hk_pub, PUBLIC_KEY_BYTES, "history key"))


def open_sealed_key(sealed: BytesOrB64u, hk_secret: bytes) -> bytes:
    """The message key ``K`` from a history wrap; ``DecryptionError`` on failure."""
    try:
        return open_sealed(_as_bytes(sealed, SEALED_KEY_BYTES, "history wrap"), hk_secret)
    except (DecryptionError, ValueError, TypeError) as exc:
        raise DecryptionError("the history wrap did not open") from exc


def encrypt_message(
    payload: Mapping[str, Any],
    conversation_id: Id,
    sender_device_id: Id,
    client_id: Id | None,
    sender_box_secret: bytes,
    recipients: Mapping[str, BytesOrB64u],
    history_recipients: Mapping[str, BytesOrB64u] | None = None,
    *,
    expires_in: int | None = None,
    key: bytes | None = None,
    nonce: bytes | None = None,
    franking_key: bytes | None = None,
    wrap_nonces: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Encrypt a message (PROTOCOL.md section 3) into the envelope sent to the server.

    ``recipients`` maps every active device of every member, the sender's own
    included, to its box public key (from verified certificates); ``history_recipients``
    maps each member having a history key to it. ``client_id`` ``None`` draws a uuid4.
    ``key``, ``nonce``, ``franking_key`` and ``wrap_nonces`` (one per device) are drawn
    at random unless given. Raises ``MessageTooLargeError`` past 64 KiB of ciphertext.
    """
    client = canonical_id(client_id) if client_id is not None else str(uuid.uuid4())
    sender_device = canonical_id(sender_device_id)
    k = _random_or(key, KEY_BYTES, "message key")
    n = _random_or(nonce, NONCE_BYTES, "nonce")
    fk = _random_or(franking_key, KEY_BYTES, "franking key")
    if expires_in is not None and (
        isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0
    ):
        raise ValueError("expires_in is a positive number of seconds or None")
    if not recipients:
        raise ValueError("a message needs at least one recipient device")
    nonces = {canonical_id(d): v for d, v in (wrap_nonces or {}).items()}

    payload_bytes = serialize_payload(payload)
    ad = message_ad(conversation_id, sender_device, client)
    ciphertext = _aead_encrypt(fk + payload_bytes, ad, n, k)
    if len(ciphertext) > MAX_MESSAGE_CIPHERTEXT_BYTES:
        raise MessageTooLargeError(
            f"message ciphertext is {len(ciphertext)} bytes, the limit is "
            f"{MAX_MESSAGE_CIPHERTEXT_BYTES}"
        )

    keys: dict[str, str] = {}
    for device_id, box_pub in recipients.items():
        device = canonical_id(device_id)
        if wrap_nonces is not None and device not in nonces:
            raise ValueError(f"no wrap nonce given for device {device}")
        wrap = wrap_key_for_device(k, box_pub, sender_box_secret, nonce=nonces.get(device))
        keys[device] = b64u_encode(wrap)
    history_keys = {
        canonical_id(user_id): b64u_encode(seal_key(k, hk_pub))
        for user_id, hk_pub in (history_recipients or {}).items()
    }
    return {
        "v": 1,
        "client_id": client,
        "sender_device": sender_device,
        "nonce": b64u_encode(n),
        "ciphertext": b64u_encode(ciphertext),
        "franking_tag": b64u_encode(franking_tag(fk, payload_bytes)),
        "keys": keys,
        "history_keys": history_keys,
        "expires_in": expires_in,
    }


@dataclass(frozen=True)
class DecryptedMessage:
    """What a recipient gets from a message.

    If ``verified`` is ``False`` the message must be shown as "could not be
    verified", never as content; ``payload`` and friends are then ``None`` and
    ``error`` says why (for logs on the device, never for the server).
    ``via_history`` tells that ``K`` came from the history key: a sealed box is
    anonymous, so such a message is not authenticated as coming from
    ``sender_device`` (only from someone who knew ``K``).
    """

    verified: bool
    payload: dict[str, Any] | None = None
    payload_bytes: bytes | None = None
    franking_key: bytes | None = field(default=None, repr=False)
    via_history: bool = False
    error: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _select_wrap(message: Mapping[str, Any], map_field: str, one_field: str, owner: str) -> Any:
    """The wrap for ``owner``: ``message[map_field][owner]``, else ``message[one_field]``."""
    entries = message.get(map_field)
    if isinstance(entries, Mapping):
        for entry_id, wrap in entries.items():
            try:
                if canonical_id(entry_id) == owner:
                    return wrap
            except ValueError:
                continue
    return message.get(one_field)


def decrypt_message(
    message: Mapping[str, Any],
    conversation_id: Id,
    *,
    my_device_id: Id | None = None,
    my_box_secret: bytes | None = None,
    sender_box_pub: BytesOrB64u | None = None,
    my_user_id: Id | None = None,
    hk_secret: bytes | None = None,
) -> DecryptedMessage:
    """Open a received message; never raises for malformed or tampered input.

    ``message`` carries the envelope fields of section 3 (``v``, ``client_id``,
    ``sender_device``, ``nonce``, ``ciphertext``, ``franking_tag``) and this
    device's wrap, in ``keys[my_device_id]`` or a ``key`` field, or the user's
    history wrap, in ``history_keys[my_user_id]`` or a ``history_key`` field.
    ``conversation_id`` is the conversation the caller fetched it from.

    With a wrap for ``my_device_id``, ``K`` is opened with ``my_box_secret`` from
    ``sender_box_pub`` (the box key in the sender device's verified certificate);
    if that wrap fails the message fails (no fallback). Without one, ``K`` is opened
    from the history wrap with ``hk_secret``.
    """
    try:
        return _decrypt_message(
            message,
            conversation_id,
            my_device_id=my_device_id,
            my_box_secret=my_box_secret,
            sender_box_pub=sender_box_pub,
            my_user_id=my_user_id,
            hk_secret=hk_secret,
        )
    except Exception as exc:  # a received message must never crash the reader
        return DecryptedMessage(verified=False, error=f"unexpected: {type(exc).__name__}")


def _decrypt_message(
    message: Mapping[str, Any],
    conversation_id: Id,
    *,
    my_device_id: Id | None,
    my_box_secret: bytes | None,
    sender_box_pub: BytesOrB64u | None,
    my_user_id: Id | None,
    hk_secret: bytes | None,
) -> DecryptedMessage:
    def failed(reason: str) -> DecryptedMessage:
        return DecryptedMessage(verified=False, error=reason)

    if not isinstance(message, Mapping):
        return failed("not a message")
    if message.get("v") != 1 or isinstance(message.get("v"), bool):
        return failed("unknown envelope version")
    try:
        ad = message_ad(conversation_id, message["sender_device"], message["client_id"])
        nonce = _as_bytes(message["nonce"], NONCE_BYTES, "nonce")
        ciphertext = _as_bytes(message["ciphertext"], None, "ciphertext")
        tag = _as_bytes(message["franking_tag"], 32, "franking tag")
    except (KeyError, TypeError, ValueError) as exc:
        return failed(f"malformed envelope: {exc}")

    device_wrap = None
    if my_device_id is not None and my_box_secret is not None and sender_box_pub is not None:
        device_wrap = _select_wrap(message, "keys", "key", canonical_id(my_device_id))
    via_history = device_wrap is None
    try:
        if device_wrap is not None:
            assert my_box_secret is not None
            assert sender_box_pub is not None
            k = unwrap_device_key(device_wrap, sender_box_pub, my_box_secret)
        elif my_user_id is not None and hk_secret is not None:
            history_wrap = _select_wrap(
                message, "history_keys", "history_key", canonical_id(my_user_id)
            )
            if history_wrap is None:
                return failed("no key for this device or user")
            k = open_sealed_key(history_wrap, hk_secret)
        else:
            return failed("no key for this device")
    except DecryptionError as exc:
        return failed(str(exc))

    try:
        plaintext = _aead_decrypt(ciphertext, ad, nonce, k)
    except DecryptionError as exc:
        return failed(str(exc))
    if len(plaintext) < KEY_BYTES:
        return failed("plaintext shorter than the franking key")
    fk, payload_bytes = plaintext[:KEY_BYTES], plaintext[KEY_BYTES:]
    if not verify_franking_tag(fk, payload_bytes, tag):
        return failed("franking tag mismatch")
    try:
        payload = json.loads(payload_bytes.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return failed("payload is not UTF-8 JSON")
    if not isinstance(payload, dict):
        return failed("payload is not a JSON object")
    return DecryptedMessage(
        verified=True,
        payload=payload,
        payload_bytes=payload_bytes,
        franking_key=fk,
        via_history=via_history,
    )


# ---------------------------------------------------------------------- attachments


def sha256(data: bytes) -> bytes:
    """SHA-256 (32 bytes)."""
    return nacl.hash.sha256(data, encoder=RawEncoder)


def encrypt_attachment(
    data: bytes,
    *,
    mime: str,
    name: str,
    key: bytes | None = None,
    nonce: bytes | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """Encrypt a file for upload (PROTOCOL.md section 5): ``(ciphertext, meta)``.

    Up to 1 MiB: one aead (XChaCha20-Poly1305-IETF) under a fresh key and nonce,
    empty associated data; ``meta`` has ``nonce``. Past 1 MiB:
    ``crypto_secretstream_xchacha20poly1305`` in 64 KiB plaintext chunks (each
    ciphertext chunk 17 bytes longer), every chunk tagged ``TAG_MESSAGE`` but the
    last, tagged ``TAG_FINAL``, no associated data; the ciphertext is the chunks
    concatenated and ``meta`` has ``header``.

    ``meta`` = ``{"key", "nonce" | "header", "sha256", "size", "mime", "name"}``:
    ``key``, ``nonce``/``header`` and ``sha256`` (of the ciphertext) in b64u,
    ``size`` the plaintext length. The caller adds ``blob_id`` after the upload.
    A fixed ``nonce`` can be injected for the aead form only.
    """
    data = bytes(data)
    k = _random_or(key, KEY_BYTES, "attachment key")
    meta: dict[str, Any] = {"key": b64u_encode(k)}
    if len(data) <= ATTACHMENT_AEAD_MAX_BYTES:
        n = _random_or(nonce, NONCE_BYTES, "nonce")
        ciphertext = _aead_encrypt(data, ATTACHMENT_AD, n, k)
        meta["nonce"] = b64u_encode(n)
    else:
        if nonce is not None:
            raise ValueError("a chunked attachment has a random header, not a nonce")
        state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
        header = nacl.bindings.crypto_secretstream_xchacha20poly1305_init_push(state, k)
        chunks = []
        for start in range(0, len(data), ATTACHMENT_CHUNK_BYTES):
            chunk = data[start : start + ATTACHMENT_CHUNK_BYTES]
            last = start + ATTACHMENT_CHUNK_BYTES >= len(data)
            chunks.append(
                nacl.bindings.crypto_secretstream_xchacha20poly1305_push(
                    state, chunk, None, TAG_FINAL if last else TAG_MESSAGE
                )
            )
        ciphertext = b"".join(chunks)
        meta["header"] = b64u_encode(header)
    meta.update(
        sha256=b64u_encode(sha256(ciphertext)),
        size=len(data),
        mime=mime,
        name=name,
    )
    return ciphertext, meta


def decrypt_attachment(ciphertext: bytes, meta: Mapping[str, Any]) -> bytes:
    """Check and open a downloaded attachment; ``AttachmentError`` on any mismatch.

    The SHA-256 of the ciphertext is checked first, then the aead (``nonce``) or the
    secretstream (``header``): every chunk must authenticate, in order, the last and
    only the last tagged ``TAG_FINAL``, and the plaintext length must equal ``size``.
    A truncated, reordered or extended stream is refused.
    """
    try:
        k = _as_bytes(meta["key"], KEY_BYTES, "key")
        digest = _as_bytes(meta["sha256"], 32, "sha256")
        size = meta["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError("size is a non-negative integer")
        has_nonce, has_header = "nonce" in meta, "header" in meta
        if has_nonce == has_header:
            raise ValueError("exactly one of nonce and header")
    except (KeyError, TypeError, ValueError) as exc:
        raise AttachmentError(f"malformed attachment metadata: {exc}") from exc
    ciphertext = bytes(ciphertext)
    if not _equal(sha256(ciphertext), digest):
        raise AttachmentError("the attachment's SHA-256 does not match")

    if has_nonce:
        try:
            n = _as_bytes(meta["nonce"], NONCE_BYTES, "nonce")
            plaintext = _aead_decrypt(ciphertext, ATTACHMENT_AD, n, k)
        except (DecryptionError, ValueError) as exc:
            raise AttachmentError("the attachment did not open") from exc
    else:
        plaintext = _open_secretstream(ciphertext, meta["header"], k)
    if len(plaintext) != size:
        raise AttachmentError("the attachment's size does not match")
    return plaintext


def _open_secretstream(ciphertext: bytes, header_value: Any, key: bytes) -> bytes:
    try:
        header = _as_bytes(header_value, SECRETSTREAM_HEADER_BYTES, "header")
        state = nacl.bindings.crypto_secretstream_xchacha20poly1305_state()
        nacl.bindings.crypto_secretstream_xchacha20poly1305_init_pull(state, header, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise AttachmentError("the attachment stream did not open") from exc
    step = ATTACHMENT_CHUNK_BYTES + SECRETSTREAM_ABYTES
    parts = []
    offset = 0
    final = False
    while offset < len(ciphertext):
        chunk = ciphertext[offset : offset + step]
        offset += len(chunk)
        try:
            part, tag = nacl.bindings.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise AttachmentError("an attachment chunk did not authenticate") from exc
        if tag == TAG_FINAL:
            if offset != len(ciphertext):
                raise AttachmentError("the attachment stream ends early")
            final = True
        elif tag != TAG_MESSAGE:
            raise AttachmentError("unexpected tag in the attachment stream")
        parts.append(part)
    if not final:
        raise AttachmentError("the attachment stream is truncated")
    return b"".join(parts)


# -------------------------------------------------------------------- call signaling


def box_to_device(
    plaintext: bytes,
    recipient_box_pub: BytesOrB64u,
    my_box_secret: bytes,
    *,
    nonce: bytes | None = None,
) -> str:
    """``b64u(n || box(plaintext, n, recipient box key, my box secret))`` (section 7)."""
    return b64u_encode(_box_encrypt(bytes(plaintext), recipient_box_pub, my_box_secret, nonce))


def box_to_devices(
    plaintext: bytes, recipients: Mapping[str, BytesOrB64u], my_box_secret: bytes
) -> dict[str, str]:
    """The same plaintext boxed separately to each device: ``{device_id: b64u}``."""
    return {
        canonical_id(device_id): box_to_device(plaintext, box_pub, my_box_secret)
        for device_id, box_pub in recipients.items()
    }


def open_from_device(
    boxed: BytesOrB64u, sender_box_pub: BytesOrB64u, my_box_secret: bytes
) -> bytes:
    """Open ``n || box`` from ``sender_box_pub``; ``DecryptionError`` on any failure."""
    try:
        data = _as_bytes(boxed, None, "boxed data")
        if len(data) < NONCE_BYTES + MAC_BYTES:
            raise ValueError("too short")
        return _box(my_box_secret, sender_box_pub, "sender box key").decrypt(data)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        raise DecryptionError("the box did not open") from exc
