"""The inbox reads each member's own membership with the conversation row, in one pass."""

import re

import pytest

from messaging import selectors
from messaging.tests.support import Person, envelope, person

pytestmark = pytest.mark.django_db


def post_message(sender: Person, conversation_id: str, recipients: list[Person]) -> None:
    body, _ = envelope(
        sender=sender.phones[0], conversation_id=conversation_id, recipients=recipients
    )
    response = sender.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 201, response.content


def inbox(someone: Person) -> list[dict]:
    response = someone.phones[0].api.get("/api/v1/conversations")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def test_each_member_sees_their_own_membership_of_a_shared_group() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    response = alice.phones[0].api.post(
        "/api/v1/conversations",
        {"kind": "group", "name": "Trip", "handles": ["bob"]},
        format="json",
    )
    group_id = response.json()["id"]
    bob.phones[0].api.post(f"/api/v1/conversations/{group_id}/accept")
    post_message(alice, group_id, [alice, bob])
    alice.phones[0].api.post(
        f"/api/v1/conversations/{group_id}/members", {"handles": ["carol"]}, format="json"
    )
    carol.phones[0].api.post(f"/api/v1/conversations/{group_id}/accept")
    post_message(bob, group_id, [alice, bob, carol])
    bob.phones[0].api.post(f"/api/v1/conversations/{group_id}/mute", {"seconds": None},
                           format="json")  # fmt: skip

    (alices,), (bobs,), (carols,) = inbox(alice), inbox(bob), inbox(carol)
    assert [alices["my_role"], bobs["my_role"], carols["my_role"]] == ["admin", "member", "member"]
    # Carol joined after the first message: it is neither her last message nor unread.
    assert [alices["unread_count"], bobs["unread_count"], carols["unread_count"]] == [1, 0, 1]
    assert alices["last_message"]["seq"] == bobs["last_message"]["seq"] == 2
    assert carols["last_message"]["seq"] == 2
    assert bobs["muted_until"].startswith("9999-12-31")
    assert alices["muted_until"] is None and carols["muted_until"] is None
    assert {alices["my_state"], bobs["my_state"], carols["my_state"]} == {"accepted"}


def test_the_inbox_looks_up_the_users_membership_once_not_per_conversation() -> None:
    sql = str(selectors.inbox(user=person("alice", phones=0).user).query)
    # Subqueries per row are evaluated for every row up to the end of the page.
    assert len(re.findall(r'(?:FROM|JOIN) "messaging_membership"', sql)) == 1, sql
