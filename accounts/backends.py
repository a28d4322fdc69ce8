from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest

from accounts.models import User
from accounts.selectors import user_get_by_login


class HandleOrEmailBackend(ModelBackend):
    """Sign in with a handle (with or without @) or an e-mail address, in any case.

    A suspended or banned account still authenticates here so that the service can
    say why it is refused; ``get_user`` drops their sessions.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        if username is None or password is None:
            return None
        user = user_get_by_login(login=username)
        if user is None:
            # Spend the same time as a real check, so timing does not reveal handles.
            User().set_password(password)
            return None
        if user.check_password(password):
            return user
        return None

    def get_user(self, user_id: Any) -> User | None:
        user = super().get_user(user_id)
        if user is None or user.is_suspended:
            return None
        return user
