"""The base of every page of the moderation panel (docs/moderation.md)."""

from typing import Any, Generic, TypeVar

from django.contrib import admin
from django.contrib.admin import SimpleListFilter
from django.db.models import Model
from django.http import HttpRequest

_M = TypeVar("_M", bound=Model)


class PanelModelAdmin(admin.ModelAdmin[_M], Generic[_M]):
    """Filters in the URL only through the page's own filters.

    Django lets any lookup on a model's own fields through the URL
    (``?email__startswith=a``): with it a moderator could test, letter by letter, a value
    the page never shows (a phone number, an e-mail address, a report's hidden text).
    """

    def lookup_allowed(self, lookup: str, value: Any, request: HttpRequest | None = None) -> bool:
        allowed: set[str] = {self.date_hierarchy} if self.date_hierarchy else set()
        filters = self.get_list_filter(request) if request is not None else self.list_filter
        for item in filters:
            if isinstance(item, type) and issubclass(item, SimpleListFilter):
                allowed.add(str(item.parameter_name))
            elif isinstance(item, list | tuple):
                allowed.add(str(item[0]))
            else:
                allowed.add(str(item))
        return lookup in allowed or lookup.split("__")[0] in allowed
