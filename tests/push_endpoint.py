"""A Web Push endpoint on loopback that takes pushes the way a push service and a
browser would, and checks each one on the way.

As a push service (RFC 8030, RFC 8292) it wants ``Content-Encoding: aes128gcm``, a
``TTL``, a ``Topic``, and ``Authorization: vapid t=<JWT>, k=<key>`` where the JWT is
signed (ES256) by ``k``, names this endpoint's origin as ``aud``, expires within 24
hours and carries a ``sub``; ``k`` must be the server's VAPID key. As the browser it
decrypts the body (RFC 8291 with RFC 8188), written out here with ``cryptography``
primitives only, so that the check does not share code with the sender.

What does not pass is recorded in the push's ``problems`` and answered with 400.
"""

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

# RFC 8030: a push service must take 4096 octets of body; RFC 8291 uses one record.
MAX_BODY = 4096
TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
URGENCIES = {"very-low", "low", "normal", "high"}


class PushProblem(Exception):
    pass


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise PushProblem(f"not base64url: {text[:20]!r}")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def decrypt(body: bytes, private_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """A push message's plaintext, as the browser gets it (RFC 8291, section 3.4 and 4;
    RFC 8188, section 2)."""
    if len(body) < 21:
        raise PushProblem("body shorter than the aes128gcm header")
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    keyid, records = body[21 : 21 + idlen], body[21 + idlen :]
    if idlen != 65 or keyid[:1] != b"\x04":
        raise PushProblem("keyid is not the sender's uncompressed P-256 key")
    if rs < 18:
        raise PushProblem(f"record size {rs} too small")
    if not records or len(records) > rs:
        raise PushProblem("a push message is one record (RFC 8291, section 4)")
    try:
        as_public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), keyid)
    except ValueError:
        raise PushProblem("keyid is not a point on P-256") from None
    ecdh_secret = private_key.exchange(ec.ECDH(), as_public)
    key_info = b"WebPush: info\x00" + _point(private_key.public_key()) + keyid
    ikm = _hkdf(auth_secret, ecdh_secret, key_info, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    try:
        padded = AESGCM(cek).decrypt(nonce, records, None)  # record 0: the nonce as is
    except InvalidTag:
        raise PushProblem("the body does not decrypt") from None
    unpadded = padded.rstrip(b"\x00")
    if unpadded[-1:] != b"\x02":
        raise PushProblem("no last-record padding delimiter")
    return unpadded[:-1]


def check_vapid(authorization: str, *, origin: str, vapid_public_key: str) -> dict[str, Any]:
    """The JWT claims, once ``Authorization: vapid t=..., k=...`` passes (RFC 8292)."""
    scheme, _, params = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise PushProblem(f"authorization scheme {scheme!r}, not vapid")
    values: dict[str, str] = {}
    for part in params.split(","):
        name, _, value = part.strip().partition("=")
        values[name.strip().lower()] = value.strip()
    token, key = values.get("t", ""), values.get("k", "")
    if b64u_decode(key) != b64u_decode(vapid_public_key):
        raise PushProblem("k is not the server's VAPID public key")
    try:
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64u_decode(key))
    except ValueError:
        raise PushProblem("k is not a P-256 point") from None
    pieces = token.split(".")
    if len(pieces) != 3:
        raise PushProblem("t is not a JWS compact serialization")
    header = json.loads(b64u_decode(pieces[0]))
    if header.get("alg") != "ES256":
        raise PushProblem(f"JWT alg {header.get('alg')!r}, not ES256")
    signature = b64u_decode(pieces[2])
    if len(signature) != 64:
        raise PushProblem("an ES256 signature is r || s, 64 bytes")
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s),
            f"{pieces[0]}.{pieces[1]}".encode(),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        raise PushProblem("the JWT signature does not verify with k") from None
    claims: dict[str, Any] = json.loads(b64u_decode(pieces[1]))
    if claims.get("aud") != origin:
        raise PushProblem(f"aud {claims.get('aud')!r} is not {origin}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or not now < exp <= now + 24 * 3600:
        raise PushProblem(f"exp {exp!r} is not in the next 24 hours")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise PushProblem(f"sub {sub!r} is not a mailto: or https: contact")
    return claims


@dataclass
class Subscription:
    """One browser's subscription: its keys, and what the endpoint answers."""

    path: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    status: int


@dataclass
class Push:
    """One POST to the endpoint, with what the checks found."""

    endpoint: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    problems: list[str] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    plaintext: bytes | None = None

    def payload(self) -> dict[str, Any]:
        assert self.plaintext is not None, self.problems
        payload: dict[str, Any] = json.loads(self.plaintext)
        return payload


class PushEndpoint:
    """``with PushEndpoint(vapid_public_key) as endpoint:`` serves until the block ends."""

    def __init__(self, vapid_public_key: str) -> None:
        self.vapid_public_key = vapid_public_key
        self._lock = threading.Lock()
        self._subscriptions: dict[str, Subscription] = {}
        self._pushes: list[Push] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "PushEndpoint":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def subscription_json(self, status: int = 201) -> dict[str, Any]:
        """A new subscription as a browser's ``PushSubscription.toJSON()`` gives it.
        Pushes to it are answered with ``status`` once they pass the checks."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        subscription = Subscription(
            path=f"/push/{secrets.token_urlsafe(24)}",
            private_key=private_key,
            auth=secrets.token_bytes(16),
            status=status,
        )
        with self._lock:
            self._subscriptions[subscription.path] = subscription
        return {
            "endpoint": self.origin + subscription.path,
            "expirationTime": None,
            "keys": {
                "p256dh": b64u(_point(private_key.public_key())),
                "auth": b64u(subscription.auth),
            },
        }

    def pushes(self, endpoint: str | None = None) -> list[Push]:
        with self._lock:
            return [push for push in self._pushes if endpoint is None or push.endpoint == endpoint]

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> Push:
        push = Push(endpoint=self.origin + path, headers=headers, body=body)
        with self._lock:
            subscription = self._subscriptions.get(path)
        if subscription is None:
            push.status = 404
            push.problems.append(f"no subscription at {path}")
            return push
        checks = [
            lambda: self._check_headers(headers, body),
            lambda: push.claims.update(
                check_vapid(
                    headers.get("authorization", ""),
                    origin=self.origin,
                    vapid_public_key=self.vapid_public_key,
                )
            ),
        ]
        for check in checks:
            try:
                check()
            except (PushProblem, ValueError, KeyError, AttributeError, TypeError) as exc:
                push.problems.append(str(exc) or type(exc).__name__)
        if headers.get("content-encoding") == "aes128gcm":
            try:
                push.plaintext = decrypt(body, subscription.private_key, subscription.auth)
                json.loads(push.plaintext)
            except (PushProblem, ValueError) as exc:
                push.problems.append(str(exc) or type(exc).__name__)
        push.status = 400 if push.problems else subscription.status
        return push

    @staticmethod
    def _check_headers(headers: dict[str, str], body: bytes) -> None:
        if headers.get("content-encoding") != "aes128gcm":
            raise PushProblem(f"Content-Encoding {headers.get('content-encoding')!r}")
        if not re.fullmatch(r"\d+", headers.get("ttl", "")):
            raise PushProblem(f"TTL {headers.get('ttl')!r} is not a number of seconds")
        if not TOPIC.match(headers.get("topic", "")):
            raise PushProblem(f"Topic {headers.get('topic')!r} is not 1-32 base64url characters")
        if "urgency" in headers and headers["urgency"] not in URGENCIES:
            raise PushProblem(f"Urgency {headers['urgency']!r}")
        if len(body) > MAX_BODY:
            raise PushProblem(f"body of {len(body)} bytes, over {MAX_BODY}")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                push = endpoint._take(self.path, headers, body)
                with endpoint._lock:
                    endpoint._pushes.append(push)
                self.send_response(push.status)
                if push.status == 201:
                    self.send_header(
                        "Location", f"{endpoint.origin}/message/{secrets.token_hex(8)}"
                    )
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test reads the recorded pushes

        return Handler
