"""Counters in the cache that expire with their window, shared by every process.

Django's ``incr`` on Redis is two commands (EXISTS, then INCRBY): a key that expires
between them comes back from INCRBY as 1 with no expiry, and a DECRBY of an expired key
as -1 with none. A counter without an expiry never resets, which would lock an address
or a client out for good; these helpers put the expiry back.
"""

import contextlib

from django.core.cache import cache


def count_in_window(key: str, window: int) -> int:
    """Add one to ``key`` and return the new count; the first count of a window opens
    it for ``window`` seconds, and later ones never move its end."""
    for _ in range(3):
        if cache.add(key, 1, timeout=window):
            return 1
        try:
            count = int(cache.incr(key))
        except ValueError:  # the window ended between add and incr: open the next
            continue
        if count == 1:  # INCRBY made the key anew, without an expiry
            cache.touch(key, window)
        return count
    return 1  # the key keeps expiring under us: a window this short counts from one


def give_back(key: str) -> None:
    """Take back one count (an attempt that turned out not to count)."""
    with contextlib.suppress(ValueError):  # the window ended meanwhile
        if int(cache.decr(key)) < 0:  # DECRBY made the key anew, without an expiry
            cache.delete(key)
