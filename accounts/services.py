"""Every write of the accounts app: sign-up, sign-in, profile, the social graph,
privacy, API tokens, devices and keys. See docs/accounts.md and
docs/keys-and-devices.md.
"""

import hashlib
import hmac
import io
import logging
import re
import secrets
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image, UnidentifiedImageError

from accounts import crypto
from accounts.models import (
    HANDLE_RE,
    ApiToken,
    Block,
    CallPolicy,
    Device,
    DeviceLink,
    DmPolicy,
    Follow,
    HistoryKey,
    IdentityKey,
    KeyBackup,
    Mute,
    SecurityEvent,
    User,
)
from accounts.selectors import (
    contact_ids,
    device_link_check_live,
    device_link_is_requester,
    session_key_digest,
    user_get_by_login,
)
from calls.services import calls_end_for_device, calls_end_for_user
from common.counters import count_in_window, give_back
from common.errors import ApplicationError, Conflict, NotFound, PermissionDenied, RateLimited
from notifications import services as notification_services
from realtime.publish import (
    CLOSE_DEVICE_REVOKED,
    CLOSE_LOGGED_OUT,
    CLOSE_SUSPENDED,
    close_sockets_on_commit,
    publish_on_commit,
)

logger = logging.getLogger(__name__)

RESERVED_HANDLES = frozenset(
    {
        "about", "abuse", "account", "accounts", "admin", "administrator", "api", "app",
        "auth", "blog", "call", "calls", "contact", "devices", "docs", "help", "home",
        "info", "login", "logout", "me", "media", "message", "messages", "mod",
        "moderator", "moderators", "null", "official", "parley", "postmaster", "privacy",
        "root", "search", "security", "settings", "signup", "static", "staff", "status",
        "support", "system", "team", "terms", "undefined", "user", "users", "webmaster",
        "ws", "www",
    }
)  # fmt: skip

PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")  # E.164
AVATAR_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
AVATAR_SIZE = 512


# --- Sign-up and sign-in ---------------------------------------------------------------------


def handle_normalize(raw: str) -> str:
    """Check a handle as typed (a leading @ is allowed) and return it without the @."""
    handle = raw.strip().removeprefix("@")
    if not HANDLE_RE.fullmatch(handle):
        raise ApplicationError(
            "invalid_handle",
            "A handle is 1 to 15 letters, digits or underscores.",
            field="handle",
        )
    if handle.lower() in RESERVED_HANDLES:
        raise ApplicationError("handle_reserved", "That handle is reserved.", field="handle")
    return handle


def _check_email_free(email: str, *, exclude: User | None = None) -> str:
    email = email.strip()
    try:
        validate_email(email)
    except DjangoValidationError as exc:
        raise ApplicationError(
            "invalid_email", "Enter a valid e-mail address.", field="email"
        ) from exc
    taken = User.objects.filter(email__iexact=email)
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    if taken.exists():
        raise Conflict("email_taken", "That e-mail address is already in use.", field="email")
    return email


def _check_password(password: str, user: User, *, field: str = "password") -> None:
    try:
        password_validation.validate_password(password, user)
    except DjangoValidationError as exc:
        raise ApplicationError("weak_password", " ".join(exc.messages), field=field) from exc


@transaction.atomic
def user_sign_up(*, handle: str, email: str, password: str, display_name: str = "") -> User:
    handle = handle_normalize(handle)
    if User.objects.filter(handle__iexact=handle).exists():
        raise Conflict("handle_taken", "That handle is taken.", field="handle")
    email = _check_email_free(email)
    user = User(handle=handle, email=email, display_name=display_name.strip()[:50])
    _check_password(password, user)
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save(force_insert=True)
    except IntegrityError as exc:
        # Lost a race with a sign-up of the same handle or e-mail in another case.
        if User.objects.filter(email__iexact=email).exists():
            raise Conflict(
                "email_taken", "That e-mail address is already in use.", field="email"
            ) from exc
        raise Conflict("handle_taken", "That handle is taken.", field="handle") from exc
    return user


def _account_failure_key(*, login: str, user: User | None) -> str:
    # Keyed on the account, not the text typed, so that the handle and the e-mail
    # share one allowance; unknown logins are counted by their text.
    if user is not None:
        return f"login-fail:account:{user.pk}"
    text = hashlib.sha256(login.strip().removeprefix("@").lower().encode()).hexdigest()
    return f"login-fail:unknown:{text}"


def _locked_out(window: int) -> RateLimited:
    return RateLimited(
        "locked_out",
        f"Too many failed attempts. Try again in {window // 60} minutes.",
        retry_after=window,
    )


def user_authenticate(*, login: str, password: str, address: str) -> User:
    """Check a sign-in. Repeated failures lock the account and the address for a while.

    Counters live in the cache (Redis in production), so every process shares them.
    Each attempt takes its place in both counters (an atomic increment) before the
    password is tried and gives it back if the password was right: so a burst of
    attempts at once tries no more passwords than the limits allow. A successful
    sign-in clears the account's counter, not the address's.
    """
    limits = settings.LOGIN_LOCKOUT
    window = limits["WINDOW_SECONDS"]
    account_key = _account_failure_key(login=login, user=user_get_by_login(login=login))
    address_key = f"login-fail:address:{address}"
    # Taking a place is the check too: a count past the limit is a lockout.
    if count_in_window(address_key, window) > limits["ADDRESS_FAILURES"]:
        raise _locked_out(window)
    account_failures = count_in_window(account_key, window)
    if account_failures > limits["ACCOUNT_FAILURES"]:
        give_back(address_key)  # refused for the account: the address tried nothing
        raise _locked_out(window)
    try:
        user = authenticate(None, username=login, password=password)
    except Exception:  # the database, say: no password was tried
        give_back(address_key)
        give_back(account_key)
        raise
    if not isinstance(user, User):
        if account_failures == limits["ACCOUNT_FAILURES"]:
            locked = user_get_by_login(login=login)
            if locked is not None:
                security_event_record(user=locked, kind=SecurityEvent.Kind.LOCKED_OUT)
        raise ApplicationError(
            "invalid_credentials",
            "That handle or e-mail and password do not match.",
            field="password",
        )
    give_back(address_key)
    give_back(account_key)
    if not user.is_active:
        raise PermissionDenied("account_banned", "This account has been banned.")
    if user.is_suspended and user.suspended_until is not None:
        raise PermissionDenied(
            "account_suspended",
            f"This account is suspended until {user.suspended_until:%Y-%m-%d %H:%M} UTC.",
        )
    cache.delete(account_key)
    return user


def _confirm_password(*, user: User, password: str | None, error: ApplicationError) -> None:
    """Check the password of a signed-in user before a sensitive change. Wrong guesses
    count toward the account's sign-in lockout (in the cache, so a rolled-back
    transaction does not undo them): a stolen session cannot guess at leisure."""
    account_key = _account_failure_key(login="", user=user)
    limit, window = (
        settings.LOGIN_LOCKOUT["ACCOUNT_FAILURES"],
        settings.LOGIN_LOCKOUT["WINDOW_SECONDS"],
    )
    # The attempt takes its place before the password is tried, as at sign-in: a burst
    # of guesses at once tries no more than the limit, and a locked account none.
    if count_in_window(account_key, window) > limit:
        raise _locked_out(window)
    if not password or not user.check_password(password):
        raise error
    give_back(account_key)


@transaction.atomic
def user_change_password(*, user: User, old_password: str, new_password: str) -> None:
    _confirm_password(
        user=user,
        password=old_password,
        error=ApplicationError(
            "invalid_credentials", "The current password is wrong.", field="old_password"
        ),
    )
    _check_password(new_password, user, field="new_password")
    user.set_password(new_password)
    user.save(update_fields=["password"])
    security_event_record(user=user, kind=SecurityEvent.Kind.PASSWORD_CHANGED)


# --- API tokens ------------------------------------------------------------------------------

TOKEN_PREFIX = "parley_"  # noqa: S105  (a label, not a secret)


def _token_hash(key: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough to make a leaked table useless.
    return hashlib.sha256(key.encode()).hexdigest()


@transaction.atomic
def api_token_create(*, user: User, name: str = "") -> tuple[ApiToken, str]:
    """Make a token for one app install. The clear key is returned once, never stored."""
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name.strip()[:64], key_hash=_token_hash(key), prefix=key[:12]
    )
    return token, key


def api_token_authenticate(*, key: str) -> ApiToken | None:
    """The active token for ``key`` with its user, or None. Touches ``last_used_at``
    at most once a minute, so that reads do not turn into a write per request."""
    if not key.startswith(TOKEN_PREFIX) or len(key) > 100:
        return None
    token = (
        ApiToken.objects.select_related("user", "device")
        .filter(key_hash=_token_hash(key), revoked_at__isnull=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


@transaction.atomic
def api_token_revoke(*, user: User, token_id: int) -> ApiToken:
    token = ApiToken.objects.select_for_update().filter(pk=token_id, user=user).first()
    if token is None:
        raise NotFound("token_not_found", "No such token.", field="token_id")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        close_sockets_on_commit(token_id=token.pk, code=CLOSE_LOGGED_OUT, reason="token_revoked")
    return token


def session_end_sockets(*, session_key: str | None) -> None:
    """On sign-out of the site, close the sockets that the session opened."""
    if session_key:
        close_sockets_on_commit(session_key=session_key, code=CLOSE_LOGGED_OUT, reason="logged_out")


# --- Profile and privacy ---------------------------------------------------------------------


@transaction.atomic
def user_update_profile(
    *,
    user: User,
    display_name: str | None = None,
    bio: str | None = None,
    email: str | None = None,
    phone_number: str | None = None,
) -> User:
    fields: list[str] = []
    if display_name is not None:
        user.display_name = display_name.strip()
        fields.append("display_name")
    if bio is not None:
        user.bio = bio.strip()
        fields.append("bio")
    if email is not None:
        user.email = _check_email_free(email, exclude=user)
        fields.append("email")
    if phone_number is not None:
        phone = re.sub(r"[\s().-]", "", phone_number)
        if phone and not PHONE_RE.fullmatch(phone):
            raise ApplicationError(
                "invalid_phone_number",
                "Enter the number in international form, like +14155550100.",
                field="phone_number",
            )
        user.phone_number = phone
        fields.append("phone_number")
    if fields:
        try:
            user.full_clean(exclude=["password", "avatar", "handle"])
        except DjangoValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            raise ApplicationError("invalid", " ".join(messages), field=field) from exc
        try:
            with transaction.atomic():
                user.save(update_fields=fields)
        except IntegrityError as exc:  # another account took the e-mail meanwhile
            raise Conflict(
                "email_taken", "That e-mail address is already in use.", field="email"
            ) from exc
    return user


@transaction.atomic
def user_update_privacy(
    *,
    user: User,
    dm_policy: str | None = None,
    call_policy: str | None = None,
    send_read_receipts: bool | None = None,
    relay_calls: bool | None = None,
) -> User:
    fields: list[str] = []
    if dm_policy is not None:
        if dm_policy not in DmPolicy.values:
            raise ApplicationError("invalid_choice", "Unknown message policy.", field="dm_policy")
        user.dm_policy = dm_policy
        fields.append("dm_policy")
    if call_policy is not None:
        if call_policy not in CallPolicy.values:
            raise ApplicationError("invalid_choice", "Unknown call policy.", field="call_policy")
        user.call_policy = call_policy
        fields.append("call_policy")
    if send_read_receipts is not None:
        user.send_read_receipts = send_read_receipts
        fields.append("send_read_receipts")
    if relay_calls is not None:
        user.relay_calls = relay_calls
        fields.append("relay_calls")
    if fields:
        user.save(update_fields=fields)
    return user


def _avatar_reencoded(upload: UploadedFile) -> ContentFile:
    """Decode the image and write it anew: this checks it really is an image of an
    allowed type, and drops metadata such as the place a photo was taken."""
    if upload.size is None or upload.size > settings.AVATAR_MAX_BYTES:
        raise ApplicationError(
            "file_too_large",
            f"An avatar may be at most {settings.AVATAR_MAX_BYTES // (1024 * 1024)} MiB.",
            field="avatar",
        )
    try:
        with Image.open(upload) as probe:
            if probe.format not in AVATAR_FORMATS:
                raise ApplicationError(
                    "unsupported_type", "An avatar must be JPEG, PNG or WebP.", field="avatar"
                )
            if max(probe.size) > settings.AVATAR_MAX_PIXELS:
                raise ApplicationError(
                    "image_too_large",
                    f"An avatar may be at most {settings.AVATAR_MAX_PIXELS} pixels wide.",
                    field="avatar",
                )
            probe.load()
            image = probe.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ApplicationError(
            "invalid_image", "That file is not an image.", field="avatar"
        ) from exc
    image.thumbnail((AVATAR_SIZE, AVATAR_SIZE))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return ContentFile(out.getvalue(), name=f"{uuid.uuid4().hex}.png")


@transaction.atomic
def user_set_avatar(*, user: User, upload: UploadedFile) -> User:
    content = _avatar_reencoded(upload)
    old_name = user.avatar.name if user.avatar else None
    user.avatar.save(content.name or "avatar.png", content, save=False)
    user.save(update_fields=["avatar"])
    if old_name:
        storage = user.avatar.storage
        transaction.on_commit(lambda: storage.delete(old_name))
    return user


@transaction.atomic
def user_remove_avatar(*, user: User) -> User:
    old_name, storage = user.avatar.name, user.avatar.storage
    if old_name:
        user.avatar = None
        user.save(update_fields=["avatar"])
        transaction.on_commit(lambda: storage.delete(old_name))
    return user


@transaction.atomic
def user_update_settings(
    *,
    user: User,
    display_name: str | None = None,
    bio: str | None = None,
    email: str | None = None,
    phone_number: str | None = None,
    dm_policy: str | None = None,
    call_policy: str | None = None,
    send_read_receipts: bool | None = None,
    relay_calls: bool | None = None,
    avatar: UploadedFile | None = None,
    remove_avatar: bool = False,
) -> User:
    """Everything one settings form (or one PATCH of /me) changes: all of it or none.

    ``None`` leaves a field as it is. On a refusal the transaction rolls back, but
    ``user`` in memory may hold the refused values: callers that keep using it reload it.
    """
    user_update_profile(
        user=user, display_name=display_name, bio=bio, email=email, phone_number=phone_number
    )
    user_update_privacy(
        user=user,
        dm_policy=dm_policy,
        call_policy=call_policy,
        send_read_receipts=send_read_receipts,
        relay_calls=relay_calls,
    )
    if avatar is not None:
        user_set_avatar(user=user, upload=avatar)
    elif remove_avatar:
        user_remove_avatar(user=user)
    return user


def _cut_off(user: User, *, reason: str) -> None:
    """End everything the account has open: sessions (a new generation changes the
    session hash), tokens, calls and sockets. The caller has saved the restriction."""
    User.objects.filter(pk=user.pk).update(session_generation=F("session_generation") + 1)
    user.refresh_from_db(fields=["session_generation"])
    ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    calls_end_for_user(user_id=user.pk)
    close_sockets_on_commit(user_id=user.pk, code=CLOSE_SUSPENDED, reason=reason)


@transaction.atomic
def user_suspend(*, user: User, until: datetime) -> User:
    """Suspend until ``until``: sign-in is refused; sessions, tokens, calls and sockets
    end at once. Called by moderation.services, which checks who may and audits it."""
    user.suspended_until = until
    user.save(update_fields=["suspended_until"])
    _cut_off(user, reason="account_suspended")
    return user


@transaction.atomic
def user_ban(*, user: User) -> User:
    """Ban: the account is inactive until a lift; everything open ends at once."""
    user.is_active = False
    user.save(update_fields=["is_active"])
    _cut_off(user, reason="account_banned")
    return user


@transaction.atomic
def user_lift_restriction(*, user: User) -> User:
    """End a suspension or a ban. Old sessions and tokens stay ended: the user signs
    in again."""
    user.is_active = True
    user.suspended_until = None
    user.save(update_fields=["is_active", "suspended_until"])
    return user


REMOVABLE_PROFILE_FIELDS = ("display_name", "bio", "avatar")


@transaction.atomic
def user_clear_profile_field(*, user: User, field: str) -> str:
    """Clear one public profile field; returns what it held (an avatar's file name)."""
    if field not in REMOVABLE_PROFILE_FIELDS:
        raise ApplicationError("invalid_choice", "That field cannot be removed.", field="field")
    if field == "avatar":
        previous = user.avatar.name or ""
        user_remove_avatar(user=user)
        return previous
    previous = str(getattr(user, field))
    setattr(user, field, "")
    user.save(update_fields=[field])
    return previous


# --- The social graph ------------------------------------------------------------------------


def _is_blocked_either_way(a: User, b: User) -> bool:
    return (
        Block.objects.filter(blocker=a, blocked=b).exists()
        or Block.objects.filter(blocker=b, blocked=a).exists()
    )


def _not_self(actor: User, target: User, field: str = "handle") -> None:
    if actor.pk == target.pk:
        raise ApplicationError("self_target", "You cannot do that to yourself.", field=field)


@transaction.atomic
def user_follow(*, follower: User, followee: User) -> Follow:
    _not_self(follower, followee)
    if _is_blocked_either_way(follower, followee):
        raise PermissionDenied("blocked", "You cannot follow this account.")
    follow, created = Follow.objects.get_or_create(follower=follower, followee=followee)
    if created:
        notification_services.followed_on_commit(follower_id=follower.pk, followee_id=followee.pk)
        publish_on_commit(
            user_ids=[followee.pk],
            event={
                "type": "follow.new",
                "follower": {"id": str(follower.pk), "handle": follower.handle},
            },
        )
    return follow


@transaction.atomic
def user_unfollow(*, follower: User, followee: User) -> None:
    Follow.objects.filter(follower=follower, followee=followee).delete()


@transaction.atomic
def user_block(*, blocker: User, blocked: User) -> Block:
    """Block: neither side may follow, message or call the other, or find the other."""
    _not_self(blocker, blocked)
    block, _ = Block.objects.get_or_create(blocker=blocker, blocked=blocked)
    Follow.objects.filter(follower=blocker, followee=blocked).delete()
    Follow.objects.filter(follower=blocked, followee=blocker).delete()
    return block


@transaction.atomic
def user_unblock(*, blocker: User, blocked: User) -> None:
    Block.objects.filter(blocker=blocker, blocked=blocked).delete()


@transaction.atomic
def user_mute(*, muter: User, muted: User) -> Mute:
    _not_self(muter, muted)
    mute, _ = Mute.objects.get_or_create(muter=muter, muted=muted)
    return mute


@transaction.atomic
def user_unmute(*, muter: User, muted: User) -> None:
    Mute.objects.filter(muter=muter, muted=muted).delete()


# --- Security events -------------------------------------------------------------------------


def security_event_record(*, user: User, kind: str, device: Device | None = None) -> SecurityEvent:
    """Record the event and e-mail the owner after commit (accounts.tasks)."""
    from accounts.tasks import send_security_event_email

    event = SecurityEvent.objects.create(user=user, kind=kind, device=device)
    event_id = event.pk
    # Robust: the event is stored; a broker that is down must not turn the change that
    # caused it into an error after it committed (the e-mail is lost, the log says so).
    transaction.on_commit(lambda: send_security_event_email.delay(event_id), robust=True)
    return event


@transaction.atomic
def security_event_mark_emailed(*, event_id: int) -> bool:
    """Claim the event for e-mailing. False if it is gone or already sent, so that a
    retried task sends nothing twice."""
    updated = SecurityEvent.objects.filter(pk=event_id, emailed_at__isnull=True).update(
        emailed_at=timezone.now()
    )
    return updated == 1


@transaction.atomic
def security_event_release(*, event_id: int) -> None:
    """Undo a claim after a failed send, so the retry sends it."""
    SecurityEvent.objects.filter(pk=event_id).update(emailed_at=None)


# --- Keys and devices (PROTOCOL.md sections 1, 2, 6) -----------------------------------------


def _current_identity_key(user: User, *, lock: bool = False) -> IdentityKey | None:
    keys = IdentityKey.objects.filter(user=user, valid_to__isnull=True)
    if lock:
        keys = keys.select_for_update()
    return keys.first()


@transaction.atomic
def identity_key_set(*, user: User, public_key: bytes, password: str | None = None) -> IdentityKey:
    """Register the user's AIK, or replace it (a reset after losing every device and
    the backup). A replacement needs the password, revokes every device signed by the
    old key, retires the history key and drops the backup, and is announced to the
    user's other sessions. The history stays: rows are closed, never deleted.

    Locks the user row so two concurrent resets cannot both become current.
    """
    if not crypto.is_valid_ed25519_public_key(public_key):
        raise ApplicationError("invalid_key", "That is not an Ed25519 public key.", field="aik_pub")
    User.objects.select_for_update().filter(pk=user.pk).first()
    current = _current_identity_key(user, lock=True)
    if current is not None:
        if bytes(current.public_key) == public_key:
            return current  # the same key again: nothing changes
        _confirm_password(
            user=user,
            password=password,
            error=PermissionDenied(
                "password_required",
                "Replacing your identity key needs your password.",
                field="password",
            ),
        )
        now = timezone.now()
        current.valid_to = now
        current.save(update_fields=["valid_to"])
        for device in Device.objects.filter(user=user, revoked_at__isnull=True):
            _device_revoke(device, now=now)
        HistoryKey.objects.filter(user=user, valid_to__isnull=True).update(valid_to=now)
        KeyBackup.objects.filter(user=user).delete()
    new_key = IdentityKey.objects.create(user=user, public_key=public_key)
    if current is not None:
        security_event_record(user=user, kind=SecurityEvent.Kind.IDENTITY_KEY_CHANGED)
        # Contacts must see "safety number changed" (PROTOCOL.md section 1), not only
        # find out at their next directory fetch.
        publish_on_commit(
            user_ids=[user.pk, *contact_ids(user=user)],
            event={"type": "keys.changed", "user_id": str(user.pk), "identity_key_changed": True},
        )
    return new_key


@transaction.atomic
def device_register(
    *,
    user: User,
    device_id: uuid.UUID,
    name: str,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
    certificate: bytes,
    token: ApiToken | None = None,
) -> Device:
    """Store a device whose certificate verifies under the user's current AIK.

    The registering API token, if any, is bound to the device: from then on it
    speaks for that device alone. Stores nothing unless every check passes.
    """
    return _device_add(
        user=user,
        device_id=device_id,
        name=name,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
        certificate=certificate,
        token=token,
    )


def _check_device_signing_key(sign_public_key: bytes) -> None:
    """A device's signing key must be a curve point of large order, like the AIK."""
    if not crypto.is_valid_ed25519_public_key(sign_public_key):
        raise ApplicationError(
            "invalid_key", "That is not an Ed25519 public key.", field="sign_pub"
        )


def _device_add(
    *,
    user: User,
    device_id: uuid.UUID,
    name: str,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
    certificate: bytes,
    token: ApiToken | None,
) -> Device:
    """Every check and write of adding a device, in the caller's transaction: by the
    device itself (``device_register``) or by an existing one (``device_link_approve``).

    Locks the current AIK row, so that a concurrent identity key reset cannot slip in
    between the signature check and the insert.
    """
    _check_device_signing_key(sign_public_key)
    identity_key = _current_identity_key(user, lock=True)
    if identity_key is None:
        raise Conflict(
            "identity_key_missing",
            "Register your identity key before adding a device.",
            field="device_id",
        )
    message = crypto.device_certificate_input(
        user_id=user.pk,
        device_id=device_id,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
    )
    if not crypto.signature_is_valid(
        public_key=bytes(identity_key.public_key), message=message, signature=certificate
    ):
        raise ApplicationError(
            "bad_signature",
            "The certificate does not verify under your identity key.",
            field="certificate",
        )
    if Device.objects.filter(pk=device_id).exists():
        raise Conflict("device_exists", "A device with this id already exists.", field="device_id")
    active = Device.objects.filter(user=user, revoked_at__isnull=True).count()
    if active >= settings.MAX_ACTIVE_DEVICES:
        raise Conflict(
            "too_many_devices",
            f"You may have at most {settings.MAX_ACTIVE_DEVICES} devices. Remove one first.",
            field="device_id",
        )
    try:
        with transaction.atomic():
            device = Device.objects.create(
                id=device_id,
                user=user,
                identity_key=identity_key,
                name=name.strip()[:64],
                sign_public_key=sign_public_key,
                box_public_key=box_public_key,
                created_at=created_at,
                certificate=certificate,
            )
    except IntegrityError as exc:  # the same id registered concurrently
        raise Conflict(
            "device_exists", "A device with this id already exists.", field="device_id"
        ) from exc
    if token is not None:
        # Conditional update: of two concurrent registrations with one token, one binds.
        bound = ApiToken.objects.filter(
            pk=token.pk, device__isnull=True, revoked_at__isnull=True
        ).update(device=device)
        if bound != 1:
            raise Conflict(
                "token_has_device",
                "This token already belongs to a device; sign in again for a new one.",
                field="device_id",
            )
        token.device = device
    security_event_record(user=user, kind=SecurityEvent.Kind.DEVICE_ADDED, device=device)
    publish_on_commit(
        user_ids=[user.pk],
        event={"type": "device.added", "device_id": str(device.pk), "name": device.name},
    )
    return device


def _device_revoke(device: Device, *, now: datetime) -> None:
    device.revoked_at = now
    device.save(update_fields=["revoked_at"])
    ApiToken.objects.filter(device=device, revoked_at__isnull=True).update(revoked_at=now)
    calls_end_for_device(device_id=device.pk)
    notification_services.push_subscriptions_delete_for_device(device_id=device.pk)
    close_sockets_on_commit(device_id=device.pk, code=CLOSE_DEVICE_REVOKED, reason="device_revoked")
    publish_on_commit(
        user_ids=[device.user_id],
        event={"type": "device.revoked", "device_id": str(device.pk)},
    )


@transaction.atomic
def device_revoke(*, user: User, device_id: uuid.UUID) -> Device:
    """Revoke one of the user's devices: its tokens stop working and its open sockets
    close at once, on every process."""
    device = Device.objects.select_for_update().filter(pk=device_id, user=user).first()
    if device is None:
        raise NotFound("device_not_found", "No such device.", field="device_id")
    if device.revoked_at is None:
        _device_revoke(device, now=timezone.now())
        security_event_record(user=user, kind=SecurityEvent.Kind.DEVICE_REVOKED, device=device)
    return device


def device_touch(*, device_id: uuid.UUID) -> None:
    """Note that a device was seen; at most one write a minute per device."""
    now = timezone.now()
    Device.objects.filter(pk=device_id).exclude(last_seen_at__gt=now - timedelta(minutes=1)).update(
        last_seen_at=now
    )


@transaction.atomic
def history_key_set(*, user: User, public_key: bytes, certificate: bytes) -> HistoryKey:
    identity_key = _current_identity_key(user, lock=True)
    if identity_key is None:
        raise Conflict(
            "identity_key_missing",
            "Register your identity key before the history key.",
            field="hk_pub",
        )
    message = crypto.history_key_certificate_input(user_id=user.pk, public_key=public_key)
    if not crypto.signature_is_valid(
        public_key=bytes(identity_key.public_key), message=message, signature=certificate
    ):
        raise ApplicationError(
            "bad_signature",
            "The certificate does not verify under your identity key.",
            field="certificate",
        )
    current = (
        HistoryKey.objects.select_for_update().filter(user=user, valid_to__isnull=True).first()
    )
    if current is not None:
        if bytes(current.public_key) == public_key and bytes(current.certificate) == certificate:
            return current
        current.valid_to = timezone.now()
        current.save(update_fields=["valid_to"])
    history_key = HistoryKey.objects.create(
        user=user, identity_key=identity_key, public_key=public_key, certificate=certificate
    )
    publish_on_commit(user_ids=[user.pk], event={"type": "keys.changed", "user_id": str(user.pk)})
    return history_key


@transaction.atomic
def key_backup_put(
    *,
    user: User,
    nonce: bytes,
    ciphertext: bytes,
    kdf: str,
    salt: bytes | None = None,
    opslimit: int | None = None,
    memlimit: int | None = None,
) -> KeyBackup:
    """Store (or replace) the encrypted backup. The server cannot open it."""
    if len(ciphertext) > settings.BACKUP_MAX_BYTES:
        raise ApplicationError(
            "too_large",
            f"A backup may be at most {settings.BACKUP_MAX_BYTES} bytes.",
            field="ciphertext",
        )
    if kdf == KeyBackup.Kdf.RAW:
        if salt is not None or opslimit is not None or memlimit is not None:
            raise ApplicationError(
                "unexpected_kdf_params", "A raw recovery key takes no KDF parameters.", field="kdf"
            )
    elif kdf == KeyBackup.Kdf.ARGON2ID:
        for name, value in (("salt", salt), ("opslimit", opslimit), ("memlimit", memlimit)):
            if value is None:
                raise ApplicationError("required", "Argon2id needs this parameter.", field=name)
    else:
        raise ApplicationError("invalid_choice", "kdf is raw or argon2id.", field="kdf")
    backup, _ = KeyBackup.objects.update_or_create(
        user=user,
        defaults={
            "nonce": nonce,
            "ciphertext": ciphertext,
            "kdf": kdf,
            "salt": salt,
            "opslimit": opslimit,
            "memlimit": memlimit,
            "updated_at": timezone.now(),
        },
    )
    return backup


# --- Linking a new device from an existing one -----------------------------------------------
#
# PROTOCOL.md section 2 (b), with a commitment so that the server cannot swap in keys
# of its own after seeing the nonces. docs/keys-and-devices.md, "Linking a device".

LINK_LIFETIME = timedelta(minutes=10)
LINK_BUNDLE_MAX_BYTES = 1024


def _link_event(link: DeviceLink, what: str, **extra: Any) -> None:
    publish_on_commit(
        user_ids=[link.user_id],
        event={"type": f"device.link_{what}", "link_id": str(link.pk), **extra},
    )


def _link_locked(*, user: User, link_id: uuid.UUID) -> DeviceLink:
    """The user's link, its row locked (``select_for_update``) until the transaction
    ends, so that two transitions of one link run one after the other and the second
    sees the first's state. 404 for anyone else's link, 410 once expired."""
    link = DeviceLink.objects.select_for_update().filter(pk=link_id, user=user).first()
    if link is None:
        raise NotFound("link_not_found", "No such link.", field="link_id")
    device_link_check_live(link=link)
    return link


def _link_check_state(link: DeviceLink, *states: str, action: str) -> None:
    if link.state not in states:
        raise Conflict(
            "wrong_state",
            f"This link is {link.state}: it cannot be {action} now.",
            field="link_id",
            extra={"state": link.state},
        )


def _link_check_requester(
    link: DeviceLink, *, token: ApiToken | None, session_key: str | None
) -> None:
    if not device_link_is_requester(link=link, token=token, session_key=session_key):
        raise PermissionDenied(
            "not_requester",
            "Only the new device that asked for this link can do that.",
            field="link_id",
        )


def _link_check_existing_side(
    link: DeviceLink, *, device: Device, token: ApiToken | None, session_key: str | None
) -> None:
    """An action of the existing device: never from the new device's own sign-in."""
    if (
        device.user_id != link.user_id
        or device.revoked_at is not None
        or device.pk == link.new_device_id
        or device_link_is_requester(link=link, token=token, session_key=session_key)
    ):
        raise PermissionDenied(
            "wrong_party",
            "Answer this link from one of your other devices, not from the new one.",
            field="device",
        )


@transaction.atomic
def device_link_request(
    *, user: User, commitment: bytes, token: ApiToken | None, session_key: str | None
) -> DeviceLink:
    """Step 1, on the new device: open a link with the commitment to its keys.

    The link remembers who asked (the token, or a digest of the website session), as
    only that sign-in may reveal, cancel and poll. An older link still in progress is
    cancelled: one at a time per user. Locks the user row so that two requests at once
    leave one open link.
    """
    if token is not None:
        if token.device_id is not None:
            raise Conflict(
                "token_has_device",
                "This token already speaks for a device; sign in again on the new device.",
            )
        session_digest = ""
    elif session_key:
        session_digest = session_key_digest(session_key)
    else:
        raise PermissionDenied("session_required", "Sign in on the new device first.")
    User.objects.select_for_update().filter(pk=user.pk).first()
    if _current_identity_key(user) is None:
        raise Conflict(
            "identity_key_missing",
            "This account has no identity key yet: set up keys instead of linking.",
        )
    if not Device.objects.filter(user=user, revoked_at__isnull=True).exists():
        raise Conflict(
            "no_device",
            "You have no device to approve this from: restore your backup instead.",
        )
    now = timezone.now()
    for older in DeviceLink.objects.select_for_update().filter(
        user=user, state__in=DeviceLink.OPEN_STATES
    ):
        was_live = not older.is_gone(now)
        older.state = DeviceLink.State.CANCELLED
        older.closed_at = now
        older.save(update_fields=["state", "closed_at"])
        if was_live:
            _link_event(older, "cancelled")
    link = DeviceLink.objects.create(
        user=user,
        commitment=commitment,
        requester_token=token,
        requester_session=session_digest,
        requested_at=now,
        expires_at=now + LINK_LIFETIME,
    )
    _link_event(link, "requested", expires_at=link.expires_at.isoformat())
    return link


@transaction.atomic
def device_link_challenge(
    *,
    user: User,
    link_id: uuid.UUID,
    device: Device,
    nonce: bytes,
    token: ApiToken | None,
    session_key: str | None,
) -> DeviceLink:
    """Step 2, on an existing device: answer a pending link with a fresh nonce. The
    link row is locked (``_link_locked``)."""
    link = _link_locked(user=user, link_id=link_id)
    _link_check_existing_side(link, device=device, token=token, session_key=session_key)
    _link_check_state(link, DeviceLink.State.PENDING, action="challenged")
    link.state = DeviceLink.State.CHALLENGED
    link.challenger = device
    link.existing_nonce = nonce
    link.save(update_fields=["state", "challenger", "existing_nonce"])
    _link_event(link, "challenged", device_id=str(device.pk))
    return link


@transaction.atomic
def device_link_reveal(
    *,
    user: User,
    link_id: uuid.UUID,
    token: ApiToken | None,
    session_key: str | None,
    device_id: uuid.UUID,
    name: str,
    sign_public_key: bytes,
    box_public_key: bytes,
    created_at: int,
    nonce: bytes,
) -> DeviceLink:
    """Step 3, on the new device: reveal its keys and nonce. Refused, changing
    nothing, unless they are exactly what the commitment fixed. The link row is
    locked (``_link_locked``)."""
    link = _link_locked(user=user, link_id=link_id)
    _link_check_requester(link, token=token, session_key=session_key)
    _link_check_state(link, DeviceLink.State.CHALLENGED, action="revealed")
    _check_device_signing_key(sign_public_key)
    expected = crypto.link_commitment(
        new_nonce=nonce,
        user_id=user.pk,
        device_id=device_id,
        sign_public_key=sign_public_key,
        box_public_key=box_public_key,
        created_at=created_at,
    )
    if not hmac.compare_digest(expected, bytes(link.commitment)):
        raise ApplicationError(
            "commitment_mismatch",
            "These keys and nonce are not the ones this link committed to.",
            field="nonce",
        )
    if Device.objects.filter(pk=device_id).exists():
        raise Conflict("device_exists", "A device with this id already exists.", field="device_id")
    if token is not None and token.device_id is not None:
        raise Conflict(
            "token_has_device",
            "This token already speaks for a device; sign in again on the new device.",
        )
    link.state = DeviceLink.State.REVEALED
    link.new_nonce = nonce
    link.new_device_id = device_id
    link.name = name.strip()[:64]
    link.sign_public_key = sign_public_key
    link.box_public_key = box_public_key
    link.device_created_at = created_at
    link.save(
        update_fields=[
            "state", "new_nonce", "new_device_id", "name", "sign_public_key",
            "box_public_key", "device_created_at",
        ]
    )  # fmt: skip
    _link_event(link, "revealed")
    return link


@transaction.atomic
def device_link_approve(
    *,
    user: User,
    link_id: uuid.UUID,
    device: Device,
    certificate: bytes,
    bundle: bytes,
    token: ApiToken | None,
    session_key: str | None,
) -> DeviceLink:
    """Step 5, on the existing device that showed the code, once the user said the
    codes match: register the new device from its revealed keys with the AIK's
    certificate (the same checks as ``device_register``), bind the new device's token
    to it, and keep the sealed bundle for it to fetch.

    The link row is locked (``_link_locked``), so of two approvals one registers the
    device and the other finds the link approved.
    """
    link = _link_locked(user=user, link_id=link_id)
    _link_check_existing_side(link, device=device, token=token, session_key=session_key)
    _link_check_state(link, DeviceLink.State.REVEALED, action="approved")
    if link.challenger_id != device.pk:
        raise PermissionDenied(
            "not_challenger",
            "Approve from the device that showed the code.",
            field="device",
        )
    if len(bundle) > LINK_BUNDLE_MAX_BYTES:
        raise ApplicationError(
            "max_length", f"At most {LINK_BUNDLE_MAX_BYTES} bytes.", field="bundle"
        )
    if (
        link.new_device_id is None
        or link.sign_public_key is None
        or link.box_public_key is None
        or link.device_created_at is None
    ):  # a database constraint rules this out for a revealed link
        raise Conflict("wrong_state", "This link has no revealed keys.", field="link_id")
    requester_token: ApiToken | None = None
    if link.requester_token_id is not None:
        requester_token = ApiToken.objects.filter(pk=link.requester_token_id).first()
        if requester_token is None or requester_token.revoked_at is not None:
            raise Conflict(
                "requester_signed_out",
                "The new device has signed out. Start again on it.",
                field="link_id",
            )
    new_device = _device_add(
        user=user,
        device_id=link.new_device_id,
        name=link.name,
        sign_public_key=bytes(link.sign_public_key),
        box_public_key=bytes(link.box_public_key),
        created_at=link.device_created_at,
        certificate=certificate,
        token=requester_token,
    )
    link.state = DeviceLink.State.APPROVED
    link.certificate = certificate
    link.bundle = bundle
    link.device = new_device
    link.approved_by = device
    link.closed_at = timezone.now()
    link.save(
        update_fields=["state", "certificate", "bundle", "device", "approved_by", "closed_at"]
    )
    _link_event(link, "approved", device_id=str(new_device.pk), approved_by=str(device.pk))
    return link


@transaction.atomic
def device_link_deny(
    *,
    user: User,
    link_id: uuid.UUID,
    device: Device,
    token: ApiToken | None,
    session_key: str | None,
) -> DeviceLink:
    """On any existing device: refuse a link still in progress (the codes differ, or
    the user did not ask for it). The link row is locked (``_link_locked``)."""
    link = _link_locked(user=user, link_id=link_id)
    _link_check_existing_side(link, device=device, token=token, session_key=session_key)
    _link_check_state(link, *DeviceLink.OPEN_STATES, action="denied")
    link.state = DeviceLink.State.DENIED
    link.closed_at = timezone.now()
    link.save(update_fields=["state", "closed_at"])
    _link_event(link, "denied")
    return link


@transaction.atomic
def device_link_cancel(
    *, user: User, link_id: uuid.UUID, token: ApiToken | None, session_key: str | None
) -> DeviceLink:
    """On the new device: give up. Cancelling a denied or cancelled link again does
    nothing; an approved one cannot be. The link row is locked (``_link_locked``)."""
    link = _link_locked(user=user, link_id=link_id)
    _link_check_requester(link, token=token, session_key=session_key)
    if link.state in (DeviceLink.State.DENIED, DeviceLink.State.CANCELLED):
        return link
    _link_check_state(link, *DeviceLink.OPEN_STATES, action="cancelled")
    link.state = DeviceLink.State.CANCELLED
    link.closed_at = timezone.now()
    link.save(update_fields=["state", "closed_at"])
    _link_event(link, "cancelled")
    return link
