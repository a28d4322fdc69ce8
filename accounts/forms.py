"""Forms of the accounts website. They check shape only (required, lengths, two
passwords alike); the rules live in accounts.services, whose ApplicationError the
views hand back to the form with ``add_service_error``. See docs/accounts.md."""

from typing import Any

from django import forms

from accounts.models import CallPolicy, DmPolicy
from common.errors import ApplicationError

PASSWORD_MAX_LENGTH = 256


class ServiceForm(forms.Form):
    """A form whose data goes to a service; the service's refusals become form errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def add_service_error(self, error: ApplicationError) -> None:
        """Show the error next to the field it names, or above the form."""
        field = error.field if error.field in self.fields else None
        self.add_error(field, error.message)


class WriteOnlyInput(forms.TextInput):
    """A text input that never renders a value, not even the one just submitted:
    for data the user may set but no page may show (the phone number)."""

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        return super().get_context(name, None, attrs)


def _password_field(label: str, autocomplete: str) -> forms.CharField:
    return forms.CharField(
        label=label,
        max_length=PASSWORD_MAX_LENGTH,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": autocomplete}),
    )


class RepeatedPasswordForm(ServiceForm):
    """A form where a new password is typed twice: ``repeated = (first, second)``."""

    repeated: tuple[str, str]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = self.repeated
        one, two = cleaned.get(first), cleaned.get(second)
        if one and two and one != two:
            self.add_error(second, "The two passwords do not match.")
        return cleaned


class SignUpForm(RepeatedPasswordForm):
    repeated = ("password", "password2")
    handle = forms.CharField(
        max_length=16,
        help_text="1 to 15 letters, digits or underscores. People find you by it.",
        widget=forms.TextInput(
            attrs={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )
    email = forms.EmailField(
        label="E-mail",
        max_length=254,
        help_text="Private: only you see it.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    display_name = forms.CharField(
        label="Display name (optional)",
        max_length=50,
        required=False,
        widget=forms.TextInput(attrs={"autocomplete": "name"}),
    )
    password = _password_field("Password", "new-password")
    password2 = _password_field("Password again", "new-password")


class LoginForm(ServiceForm):
    login = forms.CharField(
        label="Handle or e-mail",
        max_length=254,
        widget=forms.TextInput(
            attrs={"autocomplete": "username", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )
    password = _password_field("Password", "current-password")


class PasswordChangeForm(RepeatedPasswordForm):
    repeated = ("new_password", "new_password2")
    old_password = _password_field("Current password", "current-password")
    new_password = _password_field("New password", "new-password")
    new_password2 = _password_field("New password again", "new-password")


class ProfileForm(ServiceForm):
    display_name = forms.CharField(
        max_length=50, required=False, widget=forms.TextInput(attrs={"autocomplete": "name"})
    )
    bio = forms.CharField(
        max_length=160, required=False, widget=forms.Textarea(attrs={"rows": 3, "cols": 40})
    )
    email = forms.EmailField(
        label="E-mail",
        max_length=254,
        help_text="Private: only you see it.",
        widget=forms.EmailInput(attrs={"autocomplete": "email"}),
    )
    # Write-only: never pre-filled, never echoed back (accounts.models.User.phone_number).
    phone_number = forms.CharField(
        label="New phone number",
        max_length=32,
        required=False,
        help_text=(
            "Private: no page shows it. In international form, like +14155550100. "
            "Leave empty to keep the current one."
        ),
        widget=WriteOnlyInput(attrs={"type": "tel", "autocomplete": "tel"}),
    )
    remove_phone_number = forms.BooleanField(label="Remove phone number", required=False)
    avatar = forms.FileField(
        label="New avatar",
        required=False,
        help_text="JPEG, PNG or WebP, at most 2 MiB.",
        widget=forms.FileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
    )
    remove_avatar = forms.BooleanField(label="Remove avatar", required=False)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # On the fields always shown: the remove boxes are only shown when there is
        # something to remove.
        if cleaned.get("phone_number") and cleaned.get("remove_phone_number"):
            self.add_error("phone_number", "Enter a new number or remove the number, not both.")
        if cleaned.get("avatar") and cleaned.get("remove_avatar"):
            self.add_error("avatar", "Choose a new avatar or remove it, not both.")
        return cleaned


class PrivacyForm(ServiceForm):
    dm_policy = forms.ChoiceField(
        label="Who may message me", choices=DmPolicy.choices, widget=forms.RadioSelect
    )
    call_policy = forms.ChoiceField(
        label="Who may call me", choices=CallPolicy.choices, widget=forms.RadioSelect
    )
    send_read_receipts = forms.BooleanField(
        label="Send read receipts",
        required=False,
        help_text="Let people see when you have read their messages.",
    )
    relay_calls = forms.BooleanField(
        label="Relay calls to hide my IP address",
        required=False,
        help_text=(
            "Calls go through Parley's relay instead of straight between devices, "
            "so the other side does not learn your IP address. Quality may be a little lower."
        ),
    )


class SearchForm(ServiceForm):
    q = forms.CharField(
        label="Handle or name",
        max_length=50,
        required=False,
        widget=forms.TextInput(
            attrs={"type": "search", "autocapitalize": "none", "spellcheck": "false"}
        ),
    )
