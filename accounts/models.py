"""Users, the social graph, privacy settings, API tokens, devices and keys.

See docs/accounts.md and docs/keys-and-devices.md.
"""

import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.crypto import salted_hmac

HANDLE_RE = re.compile(r"^[A-Za-z0-9_]{1,15}$")


class DmPolicy(models.TextChoices):
    EVERYONE = "everyone", "Everyone"
    FOLLOWING = "following", "People I follow"
    NOBODY = "nobody", "Nobody"


class CallPolicy(models.TextChoices):
    EVERYONE = "everyone", "Everyone"
    FOLLOWING = "following", "People I follow"
    MUTUAL = "mutual", "People I follow who follow me"
    NOBODY = "nobody", "Nobody"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def get_by_natural_key(self, username: str | None) -> "User":
        # Handles are unique without regard to case.
        return self.get(handle__iexact=username)

    def create_user(
        self, handle: str, email: str, password: str | None = None, **extra: Any
    ) -> "User":
        user = self.model(handle=handle, email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(
        self, handle: str, email: str, password: str | None = None, **extra: Any
    ) -> "User":
        extra.update(is_staff=True, is_superuser=True)
        return self.create_user(handle, email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    handle = models.CharField(max_length=15)
    display_name = models.CharField(max_length=50, blank=True)
    bio = models.CharField(max_length=160, blank=True)
    avatar = models.ImageField(upload_to="avatars/", blank=True)
    # Private: shown to its owner and to staff in the moderation panel, never to others.
    email = models.EmailField(max_length=254)
    # Private and write-only: no page, API response, log line or admin list shows it.
    phone_number = models.CharField(max_length=20, blank=True)

    dm_policy = models.CharField(max_length=10, choices=DmPolicy.choices, default=DmPolicy.EVERYONE)
    call_policy = models.CharField(
        max_length=10, choices=CallPolicy.choices, default=CallPolicy.FOLLOWING
    )
    send_read_receipts = models.BooleanField(default=True)
    relay_calls = models.BooleanField(default=False)

    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    suspended_until = models.DateTimeField(null=True, blank=True)
    # Raised to end every session of the account at once (suspension, ban).
    session_generation = models.PositiveIntegerField(default=0)
    date_joined = models.DateTimeField(default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "handle"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["email"]

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("handle"), name="user_handle_unique_ci"),
            models.UniqueConstraint(Lower("email"), name="user_email_unique_ci"),
            models.CheckConstraint(
                condition=models.Q(handle__regex=r"^[A-Za-z0-9_]{1,15}$"),
                name="user_handle_format",
            ),
        ]

    def __str__(self) -> str:
        return f"@{self.handle}"

    def _session_hash(self, secret: str | bytes | None) -> str:
        # Generation 0 keeps Django's own hash, so sessions made before the field
        # existed stay valid; any later generation makes a different hash.
        secret_input = self.password
        if self.session_generation:
            secret_input = f"{self.password}:{self.session_generation}"
        return salted_hmac(
            "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
            secret_input,
            secret=secret,
            algorithm="sha256",
        ).hexdigest()

    def get_session_auth_hash(self) -> str:
        return self._session_hash(None)

    def get_session_auth_fallback_hash(self) -> Iterator[str]:
        for fallback_secret in settings.SECRET_KEY_FALLBACKS:
            yield self._session_hash(fallback_secret)

    @property
    def is_suspended(self) -> bool:
        return self.suspended_until is not None and self.suspended_until > timezone.now()

    @property
    def name(self) -> str:
        return self.display_name or self.handle


class Follow(models.Model):
    follower = models.ForeignKey(User, on_delete=models.CASCADE, related_name="following_set")
    followee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="follower_set")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["follower", "followee"], name="follow_unique"),
            models.CheckConstraint(
                condition=~models.Q(follower=models.F("followee")), name="follow_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.follower} follows {self.followee}"


class Block(models.Model):
    blocker = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blocking_set")
    blocked = models.ForeignKey(User, on_delete=models.CASCADE, related_name="blocked_by_set")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["blocker", "blocked"], name="block_unique"),
            models.CheckConstraint(
                condition=~models.Q(blocker=models.F("blocked")), name="block_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.blocker} blocks {self.blocked}"


class Mute(models.Model):
    muter = models.ForeignKey(User, on_delete=models.CASCADE, related_name="muting_set")
    muted = models.ForeignKey(User, on_delete=models.CASCADE, related_name="muted_by_set")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["muter", "muted"], name="mute_unique"),
            models.CheckConstraint(
                condition=~models.Q(muter=models.F("muted")), name="mute_not_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.muter} mutes {self.muted}"


class IdentityKey(models.Model):
    """One account identity key (AIK) a user has had. Append-only: never edited but
    to close ``valid_to`` when a newer key replaces it."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="identity_keys")
    public_key = models.BinaryField(max_length=32)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_to = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(valid_to__isnull=True),
                name="identity_key_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"identity key of {self.user_id} from {self.valid_from:%Y-%m-%d}"


class Device(models.Model):
    """A device (app install or browser) certified by the user's AIK."""

    # Chosen by the client: it is part of the certificate the AIK signs.
    id = models.UUIDField(primary_key=True, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="devices")
    identity_key = models.ForeignKey(IdentityKey, on_delete=models.PROTECT, related_name="devices")
    name = models.CharField(max_length=64, blank=True)
    sign_public_key = models.BinaryField(max_length=32)
    box_public_key = models.BinaryField(max_length=32)
    created_at = models.BigIntegerField(help_text="Unix seconds, as the client certified it.")
    certificate = models.BinaryField(max_length=64)
    registered_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["registered_at"]
        indexes = [models.Index(fields=["user", "revoked_at"], name="device_user_active_idx")]

    def __str__(self) -> str:
        return f"{self.name or 'device'} of {self.user_id}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class HistoryKey(models.Model):
    """The user's history key (HK) public part, certified by the AIK. Append-only."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="history_keys")
    identity_key = models.ForeignKey(
        IdentityKey, on_delete=models.PROTECT, related_name="history_keys"
    )
    public_key = models.BinaryField(max_length=32)
    certificate = models.BinaryField(max_length=64)
    valid_from = models.DateTimeField(default=timezone.now)
    valid_to = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(valid_to__isnull=True),
                name="history_key_one_current",
            ),
        ]

    def __str__(self) -> str:
        return f"history key of {self.user_id}"


class KeyBackup(models.Model):
    """The encrypted backup blob (PROTOCOL.md section 2). Opaque to the server."""

    class Kdf(models.TextChoices):
        RAW = "raw", "Recovery key"
        ARGON2ID = "argon2id", "Passphrase (Argon2id)"

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="key_backup")
    nonce = models.BinaryField(max_length=24)
    ciphertext = models.BinaryField()
    kdf = models.CharField(max_length=10, choices=Kdf.choices)
    salt = models.BinaryField(max_length=16, null=True, blank=True)
    opslimit = models.PositiveBigIntegerField(null=True, blank=True)
    memlimit = models.PositiveBigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(
                        kdf="raw",
                        salt__isnull=True,
                        opslimit__isnull=True,
                        memlimit__isnull=True,
                    )
                    | models.Q(
                        kdf="argon2id",
                        salt__isnull=False,
                        opslimit__isnull=False,
                        memlimit__isnull=False,
                    )
                ),
                name="key_backup_kdf_params",
            ),
        ]

    def __str__(self) -> str:
        return f"key backup of {self.user_id}"


class ApiToken(models.Model):
    """A bearer token for one app install. Only its SHA-256 is stored."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64, blank=True)
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=12, help_text="First characters, to tell tokens apart.")
    # Set when a device is registered with this token: the token then speaks for it alone,
    # and goes with it (never left unbound, which would let it speak for any device).
    device = models.ForeignKey(
        Device, on_delete=models.CASCADE, null=True, blank=True, related_name="api_tokens"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"token {self.prefix}… of {self.user_id}"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class DeviceLink(models.Model):
    """A new device asking to be certified by one the user already has, with a short
    code compared on both (commit-reveal). See docs/keys-and-devices.md, "Linking a
    device". The rows are the link's whole state: events only ring the doorbell."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting for an existing device"
        CHALLENGED = "challenged", "Waiting for the new device's keys"
        REVEALED = "revealed", "Waiting for the user to compare the codes"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        CANCELLED = "cancelled", "Cancelled"

    OPEN_STATES: ClassVar[tuple[str, ...]] = (State.PENDING, State.CHALLENGED, State.REVEALED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="device_links")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    # mac(key = new_nonce, data = link input): fixes the new device's keys before it
    # sees the existing device's nonce.
    commitment = models.BinaryField(max_length=32)
    # Who asked, and alone may reveal, cancel and poll: an API token, or else the
    # SHA-256 (hex) of the website session key (never the key itself).
    requester_token = models.ForeignKey(
        ApiToken, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    requester_session = models.CharField(max_length=64, blank=True)
    challenger = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    existing_nonce = models.BinaryField(max_length=32, null=True, blank=True)
    # What the new device revealed: its nonce and the keys of its certificate.
    new_nonce = models.BinaryField(max_length=32, null=True, blank=True)
    new_device_id = models.UUIDField(null=True, blank=True)
    name = models.CharField(max_length=64, blank=True)
    sign_public_key = models.BinaryField(max_length=32, null=True, blank=True)
    box_public_key = models.BinaryField(max_length=32, null=True, blank=True)
    device_created_at = models.BigIntegerField(
        null=True, blank=True, help_text="Unix seconds, as the new device certifies it."
    )
    # Set on approval: the AIK's certificate, the AIK and HK sealed to the new device's
    # box key (opaque to the server), the device made, and the device that approved.
    certificate = models.BinaryField(max_length=64, null=True, blank=True)
    bundle = models.BinaryField(max_length=1024, null=True, blank=True)
    device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    approved_by = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            # One link in progress per user: a new request cancels the older one.
            models.UniqueConstraint(
                fields=["user"],
                condition=models.Q(state__in=["pending", "challenged", "revealed"]),
                name="device_link_one_open",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(requester_token__isnull=False, requester_session="")
                    | (models.Q(requester_token__isnull=True) & ~models.Q(requester_session=""))
                ),
                name="device_link_one_requester",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(state__in=["pending", "denied", "cancelled"])
                    | models.Q(existing_nonce__isnull=False)
                ),
                name="device_link_challenged_has_nonce",
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(state__in=["pending", "challenged", "denied", "cancelled"])
                    | models.Q(
                        new_nonce__isnull=False,
                        new_device_id__isnull=False,
                        sign_public_key__isnull=False,
                        box_public_key__isnull=False,
                        device_created_at__isnull=False,
                    )
                ),
                name="device_link_revealed_has_keys",
            ),
            models.CheckConstraint(
                condition=(
                    ~models.Q(state="approved")
                    | models.Q(certificate__isnull=False, bundle__isnull=False)
                ),
                name="device_link_approved_has_bundle",
            ),
        ]

    def __str__(self) -> str:
        return f"device link {self.pk} of {self.user_id} ({self.state})"

    def is_gone(self, now: datetime) -> bool:
        """Past its ten minutes. An approved link stays, so the new device can still
        fetch its bundle after a slow last poll."""
        return self.state != self.State.APPROVED and self.expires_at <= now


class SecurityEvent(models.Model):
    """What happened to an account's security, shown to its owner and e-mailed to them."""

    class Kind(models.TextChoices):
        DEVICE_ADDED = "device_added", "New device added"
        DEVICE_REVOKED = "device_revoked", "Device removed"
        IDENTITY_KEY_CHANGED = "identity_key_changed", "Identity key changed"
        PASSWORD_CHANGED = "password_changed", "Password changed"
        LOCKED_OUT = "locked_out", "Sign-in locked after failed attempts"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="security_events")
    kind = models.CharField(max_length=32, choices=Kind.choices)
    device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}"
