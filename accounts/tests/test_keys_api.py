"""Identity keys, devices, history keys, backups and the key directory over the API."""

import uuid

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey, VerifyKey

from accounts import crypto
from accounts.models import Device, HistoryKey, IdentityKey, KeyBackup, SecurityEvent
from accounts.tests.factories import (
    PASSWORD,
    DeviceKeys,
    api_client_for,
    give_identity,
    make_device,
    make_user,
)
from common.encoding import b64u_decode, b64u_encode

pytestmark = pytest.mark.django_db

DEVICES = "/api/v1/devices"


def _error(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]


@pytest.fixture
def alice():
    user = make_user("alice")
    client, token = api_client_for(user)
    return user, client, token


def test_identity_key_registers_and_directory_shows_it(alice) -> None:
    user, client, _ = alice
    aik = SigningKey.generate()
    response = client.put(
        "/api/v1/keys/identity", {"aik_pub": b64u_encode(bytes(aik.verify_key))}, format="json"
    )
    assert response.status_code == 200, response.content
    directory = client.get("/api/v1/users/alice/keys").json()
    assert directory["aik_pub"] == b64u_encode(bytes(aik.verify_key))
    assert directory["user_id"] == str(user.pk)
    assert [entry["to"] for entry in directory["aik_history"]] == [None]


def test_device_registration_with_valid_certificate(alice) -> None:
    user, client, token = alice
    aik = give_identity(user)
    keys = DeviceKeys(user_id=user.pk)
    response = client.post(DEVICES, keys.payload(aik), format="json")
    assert response.status_code == 201, response.content
    device = Device.objects.get(pk=keys.device_id)
    assert bytes(device.sign_public_key) == bytes(keys.sign.verify_key)
    token.refresh_from_db()
    assert token.device_id == keys.device_id, "the registering token now speaks for the device"
    assert SecurityEvent.objects.filter(user=user, kind="device_added").exists()


def _tampered(payload: dict, field: str, value) -> dict:
    return {**payload, field: value}


OTHER_KEY = b64u_encode(bytes(SigningKey.generate().verify_key))


def test_a_device_signing_key_of_small_order_is_refused_even_when_certified(alice) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    keys = DeviceKeys(user_id=user.pk)
    small_order = b"\x01" + b"\0" * 31  # the identity point: any signature "verifies"
    message = crypto.device_certificate_input(
        user_id=user.pk, device_id=keys.device_id, sign_public_key=small_order,
        box_public_key=bytes(keys.box.public_key), created_at=keys.created_at,
    )  # fmt: skip
    payload = {
        **keys.payload(aik),
        "sign_pub": b64u_encode(small_order),
        "certificate": b64u_encode(aik.sign(message).signature),
    }
    response = client.post(DEVICES, payload, format="json")
    assert response.status_code == 400, response.content
    assert (_error(response)["code"], _error(response)["field"]) == ("invalid_key", "sign_pub")
    assert not Device.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        # A signature that is well formed but made over other bytes.
        ("certificate", b64u_encode(b"\x01" * 64), "bad_signature"),
        ("certificate", b64u_encode(b"\x01" * 63), "length"),
        ("certificate", "not base64!!", "invalid"),
        ("certificate", b64u_encode(b"\x01" * 64) + "==", "invalid"),  # padded
        ("sign_pub", OTHER_KEY, "bad_signature"),  # key swapped after signing
        ("sign_pub", b64u_encode(b"\x02" * 31), "length"),
        ("box_pub", b64u_encode(b"\x02" * 33), "length"),
        ("box_pub", 12345, "invalid"),
        ("created_at", 1, "bad_signature"),  # a field changed after signing
        ("created_at", "yesterday", "invalid"),
        ("device_id", "not-a-uuid", "invalid"),
    ],
)
def test_device_registration_refuses_each_invalid_certificate(alice, field, value, code) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    payload = _tampered(DeviceKeys(user_id=user.pk).payload(aik), field, value)
    response = client.post(DEVICES, payload, format="json")
    assert response.status_code == 400, response.content
    error = _error(response)
    expected_field = "certificate" if code == "bad_signature" else field
    assert error["field"] == expected_field
    assert error["code"] == code
    assert not Device.objects.exists()
    assert not SecurityEvent.objects.filter(kind="device_added").exists()


def test_certificate_signed_by_another_key_or_for_another_user_is_refused(alice) -> None:
    user, client, _ = alice
    give_identity(user)
    impostor = SigningKey.generate()
    response = client.post(DEVICES, DeviceKeys(user_id=user.pk).payload(impostor), format="json")
    assert response.status_code == 400
    assert _error(response)["code"] == "bad_signature"

    bob = make_user("bob")
    bob_aik = give_identity(bob)
    # Bob's valid certificate replayed by Alice: it names Bob's user id, not hers.
    response = client.post(DEVICES, DeviceKeys(user_id=bob.pk).payload(bob_aik), format="json")
    assert response.status_code == 400
    assert not Device.objects.exists()


def test_device_needs_identity_key_first(alice) -> None:
    user, client, _ = alice
    response = client.post(
        DEVICES, DeviceKeys(user_id=user.pk).payload(SigningKey.generate()), format="json"
    )
    assert response.status_code == 409
    assert _error(response)["code"] == "identity_key_missing"


def test_duplicate_device_id_is_a_conflict(alice) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    keys = DeviceKeys(user_id=user.pk)
    assert client.post(DEVICES, keys.payload(aik), format="json").status_code == 201
    second_client, _ = api_client_for(user, "second")
    response = second_client.post(DEVICES, keys.payload(aik), format="json")
    assert response.status_code == 409
    assert _error(response)["code"] == "device_exists"
    assert Device.objects.count() == 1


def test_key_directory_lets_a_client_verify_everything_itself(alice) -> None:
    user, _, _ = alice
    aik = give_identity(user)
    make_device(user, aik)
    make_device(user, aik)
    revoked, _ = make_device(user, aik)
    revoked.revoked_at = revoked.registered_at
    revoked.save()
    hk = PrivateKey.generate()
    hk_message = crypto.history_key_certificate_input(
        user_id=user.pk, public_key=bytes(hk.public_key)
    )
    _, client_alice, _ = alice
    response = client_alice.put(
        "/api/v1/keys/history",
        {
            "hk_pub": b64u_encode(bytes(hk.public_key)),
            "certificate": b64u_encode(aik.sign(hk_message).signature),
        },
        format="json",
    )
    assert response.status_code == 200, response.content

    viewer = make_user("viewer")
    viewer_client, _ = api_client_for(viewer)
    directory = viewer_client.get("/api/v1/users/ALICE/keys").json()
    by_id = viewer_client.get(f"/api/v1/keys/{user.pk}").json()
    assert directory == by_id

    # What a client does: verify every certificate under the (pinned) AIK.
    aik_pub = VerifyKey(b64u_decode(directory["aik_pub"]))
    assert len(directory["devices"]) == 2, "revoked devices are not listed"
    for device in directory["devices"]:
        message = crypto.device_certificate_input(
            user_id=uuid.UUID(directory["user_id"]),
            device_id=uuid.UUID(device["device_id"]),
            sign_public_key=b64u_decode(device["sign_pub"]),
            box_public_key=b64u_decode(device["box_pub"]),
            created_at=device["created_at"],
        )
        aik_pub.verify(message, b64u_decode(device["certificate"]))
        assert "name" not in device, "device names are private to their owner"
    history_key = directory["history_key"]
    aik_pub.verify(
        crypto.history_key_certificate_input(
            user_id=user.pk, public_key=b64u_decode(history_key["hk_pub"])
        ),
        b64u_decode(history_key["certificate"]),
    )


def test_key_directory_query_count_does_not_grow_with_devices(
    alice, django_assert_max_num_queries
) -> None:
    user, _, _ = alice
    aik = give_identity(user)
    for _ in range(6):
        make_device(user, aik)
    viewer_client, _ = api_client_for(make_user())
    with django_assert_max_num_queries(7):  # token, touch, user + 3 prefetches, block check
        assert viewer_client.get("/api/v1/users/alice/keys").status_code == 200


def test_identity_key_change_needs_password_and_is_kept_in_history(alice) -> None:
    user, client, _ = alice
    old = give_identity(user)
    device, _ = make_device(user, old)
    KeyBackup.objects.create(user=user, nonce=b"\0" * 24, ciphertext=b"x" * 40, kdf="raw")
    new = b64u_encode(bytes(SigningKey.generate().verify_key))

    refused = client.put("/api/v1/keys/identity", {"aik_pub": new}, format="json")
    assert refused.status_code == 403
    assert _error(refused) == {
        "code": "password_required",
        "message": "Replacing your identity key needs your password.",
        "field": "password",
    }
    assert IdentityKey.objects.filter(user=user).count() == 1

    changed = client.put(
        "/api/v1/keys/identity", {"aik_pub": new, "password": PASSWORD}, format="json"
    )
    assert changed.status_code == 200
    history = client.get("/api/v1/users/alice/keys").json()["aik_history"]
    assert [entry["aik_pub"] for entry in history] == [b64u_encode(bytes(old.verify_key)), new]
    assert history[0]["to"] is not None and history[1]["to"] is None
    device.refresh_from_db()
    assert device.revoked_at is not None, "devices signed by the old key are revoked"
    assert not KeyBackup.objects.filter(user=user).exists()
    assert SecurityEvent.objects.filter(user=user, kind="identity_key_changed").exists()


def test_device_list_and_revoke(alice) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    device, _ = make_device(user, aik)
    listed = client.get(DEVICES).json()
    assert [entry["device_id"] for entry in listed["results"]] == [str(device.pk)]

    other = make_user()
    other_client, _ = api_client_for(other)
    assert other_client.delete(f"{DEVICES}/{device.pk}").status_code == 404

    response = client.delete(f"{DEVICES}/{device.pk}")
    assert response.status_code == 200
    assert response.json()["revoked_at"] is not None
    assert client.get("/api/v1/users/alice/keys").json()["devices"] == []


def test_revoking_a_device_revokes_its_token(alice) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    keys = DeviceKeys(user_id=user.pk)
    assert client.post(DEVICES, keys.payload(aik), format="json").status_code == 201
    other_client, _ = api_client_for(user, "laptop")
    assert other_client.delete(f"{DEVICES}/{keys.device_id}").status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_history_key_refuses_bad_certificate(alice) -> None:
    user, client, _ = alice
    give_identity(user)
    hk = PrivateKey.generate()
    response = client.put(
        "/api/v1/keys/history",
        {"hk_pub": b64u_encode(bytes(hk.public_key)), "certificate": b64u_encode(b"\x05" * 64)},
        format="json",
    )
    assert response.status_code == 400
    assert _error(response)["field"] == "certificate"
    assert not HistoryKey.objects.exists()


def test_backup_round_trip_and_validation(alice) -> None:
    _, client, _ = alice
    assert client.get("/api/v1/keys/backup").status_code == 404
    blob = {
        "nonce": b64u_encode(b"\x07" * 24),
        "ciphertext": b64u_encode(b"\x08" * 120),
        "kdf": "raw",
    }
    assert client.put("/api/v1/keys/backup", blob, format="json").status_code == 200
    stored = client.get("/api/v1/keys/backup").json()
    assert {key: stored[key] for key in blob} == blob

    argon = {**blob, "kdf": "argon2id", "salt": b64u_encode(b"\x01" * 16)}
    response = client.put("/api/v1/keys/backup", argon, format="json")
    assert response.status_code == 400
    assert _error(response)["field"] == "opslimit"
    weak = {**argon, "opslimit": 1, "memlimit": 64 * 1024 * 1024}
    assert _error(client.put("/api/v1/keys/backup", weak, format="json"))["field"] == "opslimit"
    good = {**argon, "opslimit": 3, "memlimit": 256 * 1024 * 1024}
    assert client.put("/api/v1/keys/backup", good, format="json").status_code == 200
    too_big = {**blob, "ciphertext": b64u_encode(b"\x08" * 5000)}
    assert (
        _error(client.put("/api/v1/keys/backup", too_big, format="json"))["field"] == "ciphertext"
    )
    assert client.get("/api/v1/keys/backup").json()["kdf"] == "argon2id", "refusals changed nothing"


def test_key_directory_is_rate_limited(alice, settings) -> None:
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "key_directory": "3/min"}
    _, client, _ = alice
    codes = [client.get("/api/v1/users/alice/keys").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    assert client.get("/api/v1/users/alice/keys").json()["error"]["code"] == "throttled"


def test_key_directory_needs_sign_in() -> None:
    from rest_framework.test import APIClient

    make_user("carol")
    response = APIClient().get("/api/v1/users/carol/keys")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_identity_key_must_be_a_curve_point(alice) -> None:
    _, client, _ = alice
    for bad in (b"\x01" + b"\0" * 31, b"\x05" * 32):  # small order; not on the curve
        response = client.put("/api/v1/keys/identity", {"aik_pub": b64u_encode(bad)}, format="json")
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_key"
    assert not IdentityKey.objects.exists()


def test_wrong_passwords_for_a_key_reset_count_toward_the_lockout(alice) -> None:
    user, client, _ = alice
    give_identity(user)
    new = {"aik_pub": b64u_encode(bytes(SigningKey.generate().verify_key)), "password": "guess"}
    codes = [client.put("/api/v1/keys/identity", new, format="json").status_code for _ in range(6)]
    assert codes == [403] * 5 + [429]
    right = {**new, "password": PASSWORD}
    assert client.put("/api/v1/keys/identity", right, format="json").status_code == 429
    assert IdentityKey.objects.filter(user=user).count() == 1


def test_devices_are_listed_active_first(alice) -> None:
    user, client, _ = alice
    aik = give_identity(user)
    old, _ = make_device(user, aik)
    newer, _ = make_device(user, aik)
    client.delete(f"{DEVICES}/{old.pk}")
    listed = [entry["device_id"] for entry in client.get(DEVICES).json()["results"]]
    assert listed == [str(newer.pk), str(old.pk)]


def test_empty_backup_is_refused(alice) -> None:
    _, client, _ = alice
    blob = {"nonce": b64u_encode(b"\x07" * 24), "ciphertext": "", "kdf": "raw"}
    response = client.put("/api/v1/keys/backup", blob, format="json")
    assert response.status_code == 400
    assert _error(response)["field"] == "ciphertext"


@pytest.mark.parametrize("handle", ["a%00b", "bad handle", "x" * 40, "%C3%A9t%C3%A9"])
def test_malformed_handles_in_paths_are_404_not_500(alice, handle) -> None:
    _, client, _ = alice
    for suffix in ("", "/keys"):
        response = client.get(f"/api/v1/users/{handle}{suffix}")
        assert response.status_code == 404, (handle, suffix)
    response = client.post(f"/api/v1/users/{handle}/follow")
    assert response.status_code == 404, (handle, "/follow")


def test_nul_in_search_and_login_is_a_clear_400(alice) -> None:
    _, client, _ = alice
    response = client.get("/api/v1/users", {"q": "al\x00"})
    assert response.status_code == 400
    assert _error(response)["field"] == "q"
    from rest_framework.test import APIClient

    body = {"login": "a\x00", "password": "x"}
    login = APIClient().post("/api/v1/auth/login", body, format="json")
    assert login.status_code == 400
    assert _error(login)["field"] == "login"
