"""Profile edits and avatars over the API."""

import io

import pytest
from PIL import Image

from accounts.models import User
from accounts.tests.factories import api_client_for, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _media(settings, tmp_path) -> None:
    settings.MEDIA_ROOT = tmp_path


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), exif: bool = False) -> bytes:
    image = Image.new("RGB", size, (200, 30, 30))
    out = io.BytesIO()
    if exif:
        data = Image.Exif()
        data[0x010F] = "SecretCameraMaker"  # Make
        data[0x010E] = "Taken at SecretPlace"  # ImageDescription
        image.save(out, format=fmt, exif=data)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def upload(client, data: bytes, name: str = "a.png"):
    file = io.BytesIO(data)
    file.name = name
    return client.put("/api/v1/me/avatar", {"avatar": file}, format="multipart")


def test_avatar_is_reencoded_without_metadata() -> None:
    user = make_user()
    client, _ = api_client_for(user)
    original = image_bytes("JPEG", exif=True)
    assert b"SecretCameraMaker" in original and b"SecretPlace" in original
    response = upload(client, original, "photo.jpg")
    assert response.status_code == 200, response.content
    assert response.json()["avatar_url"].endswith(".png")
    user.refresh_from_db()
    with user.avatar.open("rb") as stored:
        content = stored.read()
    assert b"SecretCameraMaker" not in content
    assert b"SecretPlace" not in content
    with Image.open(io.BytesIO(content)) as image:
        assert image.format == "PNG"
        assert not image.getexif()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GIF89a" + b"\0" * 100, "invalid_image"),
        (b"definitely not an image", "invalid_image"),
        ("gif", "unsupported_type"),
        ("huge", "image_too_large"),
        ("heavy", "file_too_large"),
    ],
)
def test_bad_avatars_are_refused_and_change_nothing(data, code, settings) -> None:
    if data == "gif":
        data = image_bytes("GIF")
    elif data == "huge":
        data = image_bytes("PNG", size=(5000, 10))
    elif data == "heavy":
        settings.AVATAR_MAX_BYTES = 100
        data = image_bytes("PNG")
    user = make_user()
    client, _ = api_client_for(user)
    response = upload(client, data)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["field"] == "avatar"
    assert not User.objects.get(pk=user.pk).avatar


def test_avatar_replace_and_remove() -> None:
    user = make_user()
    client, _ = api_client_for(user)
    assert upload(client, image_bytes("PNG")).status_code == 200
    assert upload(client, image_bytes("WEBP")).status_code == 200
    removed = client.delete("/api/v1/me/avatar")
    assert removed.status_code == 200
    assert removed.json()["avatar_url"] is None


def test_profile_fields_are_validated() -> None:
    user = make_user()
    client, _ = api_client_for(user)
    too_long = client.patch("/api/v1/me", {"bio": "x" * 161}, format="json")
    assert too_long.status_code == 400
    assert too_long.json()["error"]["field"] == "bio"
    taken = make_user("taken")
    clash = client.patch("/api/v1/me", {"email": taken.email.upper()}, format="json")
    assert clash.status_code == 409
    ok = client.patch("/api/v1/me", {"display_name": " Alice A. ", "bio": "hi"}, format="json")
    assert ok.status_code == 200
    assert (ok.json()["display_name"], ok.json()["bio"]) == ("Alice A.", "hi")
