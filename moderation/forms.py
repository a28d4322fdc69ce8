"""The panel's forms: what a moderator fills in for an action or a role."""

from datetime import timedelta
from typing import Any, cast

from django import forms
from django.utils import timezone

from accounts.models import User
from accounts.services import REMOVABLE_PROFILE_FIELDS
from moderation.models import ModerationAction
from moderation.roles import ROLE_PERMISSIONS
from moderation.services import ActionInput, moderator_can

Kind = ModerationAction.Kind

ACTION_LABELS: dict[str, str] = {
    Kind.DISMISS: "Dismiss: no action",
    Kind.WARN: "Warn the user",
    Kind.SUSPEND: "Suspend until…",
    Kind.BAN: "Ban",
    Kind.LIFT: "Lift the suspension or ban",
    Kind.REMOVE_FIELD: "Remove a profile field",
}
FIELD_LABELS = {"display_name": "Display name", "bio": "Bio", "avatar": "Avatar"}


class ActionForm(forms.Form):
    """One action against a user (or a report's dismissal). The choices are the ones
    the moderator's role allows; the service checks again."""

    action = forms.ChoiceField()
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why. Kept in the audit log; the user does not see it.",
    )
    note = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="Note to the user",
        help_text="For a warning: what the user reads.",
    )
    until = forms.DateTimeField(
        required=False,
        label="Suspended until (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="For a suspension.",
    )
    field = forms.ChoiceField(
        required=False,
        choices=[("", "—"), *((name, FIELD_LABELS[name]) for name in REMOVABLE_PROFILE_FIELDS)],
        label="Profile field",
        help_text="For removing a profile field.",
    )

    def __init__(self, *args: Any, moderator: User, kinds: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = [kind for kind in kinds if moderator_can(moderator, kind)]
        action_field = cast(forms.ChoiceField, self.fields["action"])
        action_field.choices = [(kind, ACTION_LABELS[kind]) for kind in allowed]
        self.initial.setdefault("until", timezone.now() + timedelta(days=7))

    @property
    def has_choices(self) -> bool:
        action_field = self.fields["action"]
        return isinstance(action_field, forms.ChoiceField) and bool(action_field.choices)

    def action_input(self) -> ActionInput:
        data = self.cleaned_data
        return ActionInput(
            kind=data["action"],
            reason=data["reason"],
            until=data.get("until"),
            field=data.get("field") or "",
            note=data.get("note") or "",
        )


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(role, role) for role in ROLE_PERMISSIONS])
    grant = forms.TypedChoiceField(
        choices=[("1", "Give"), ("0", "Take away")], coerce=lambda value: value == "1"
    )
    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
