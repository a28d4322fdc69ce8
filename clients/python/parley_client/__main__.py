"""A small command line on the reference client.

    python -m parley_client signup alice alice@example.com
    python -m parley_client init                  # keys; prints the recovery code once
    python -m parley_client send @bob "hi"
    python -m parley_client listen
    python -m parley_client link                  # new device: shows a code, waits
    python -m parley_client approve-link          # existing device: shows the code, asks y/n

Passwords come from PARLEY_PASSWORD or a prompt; recovery codes from a prompt.
State (keys, pins, cursor) lives in --state, ~/.parley/state.json by default.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path

from parley_client.client import (
    ApiError,
    DirectoryMismatch,
    IdentityKeyChanged,
    LinkError,
    ParleyClient,
    Received,
)


def _password(prompt: str = "Password: ") -> str:
    return os.environ.get("PARLEY_PASSWORD") or getpass.getpass(prompt)


def _show(received: Received) -> str:
    sender = received.message.get("sender_id", "?")
    if not received.verified:
        return f"[{sender}] (could not be verified: {received.error})"
    return f"[{sender}] {received.text}"


def _format_code(code: str) -> str:
    return f"{code[:3]} {code[3:]}"


def _link(client: ParleyClient, name: str, timeout: float, poll: float) -> None:
    """The new device's side: commit, wait for an existing device, show the code, wait
    for the approval."""
    client.request_link(name)
    print("Waiting for one of your devices: run approve-link on it.", flush=True)
    code = client.reveal_link(timeout=timeout, poll=poll)
    print(f"Code: {_format_code(code)}", flush=True)
    print("Check that your other device shows the same code, and approve there.", flush=True)
    client.complete_link(timeout=timeout, poll=poll)
    print("Linked: this device now holds your identity and history keys.", flush=True)


def _approve_link(client: ParleyClient, link_id: str | None, timeout: float, poll: float) -> bool:
    """The existing device's side: answer the link, show the code, ask the user."""
    if link_id is None:
        links = client.pending_links()
        if not links:
            raise LinkError("no device is waiting to be linked: run link on the new device first")
        link_id = str(links[0]["id"])

    def confirm(code: str) -> bool:
        print(f"Code: {_format_code(code)}", flush=True)
        answer = input("Does the new device show the same code? [y/N] ")
        return answer.strip().lower() in {"y", "yes"}

    approved = client.approve_link(link_id, confirm, timeout=timeout, poll=poll)
    print("Approved: the new device is linked." if approved else "Denied.", flush=True)
    return approved


async def _listen(client: ParleyClient) -> None:
    for received in client.sync():
        print(_show(received), flush=True)
    socket = await client.connect()
    print("listening; Ctrl-C to stop", file=sys.stderr)
    try:
        while True:
            try:
                print(_show(await socket.next_message(within=3600)), flush=True)
            except TimeoutError:
                continue
    finally:
        await socket.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="parley_client", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server", default=os.environ.get("PARLEY_SERVER", "http://127.0.0.1:8000")
    )
    parser.add_argument("--state", type=Path, default=Path.home() / ".parley" / "state.json")
    commands = parser.add_subparsers(dest="command", required=True)
    signup = commands.add_parser("signup", help="make an account")
    signup.add_argument("handle")
    signup.add_argument("email")
    login = commands.add_parser("login", help="sign in on this device")
    login.add_argument("login")
    init = commands.add_parser("init", help="first device: make keys, show the recovery code")
    init.add_argument("--name", default="reference client")
    restore = commands.add_parser("restore", help="new device: restore keys from the backup")
    restore.add_argument("--name", default="reference client")
    send = commands.add_parser("send", help="send a text message")
    send.add_argument("handle")
    send.add_argument("text")
    commands.add_parser("sync", help="print messages since the last sync")
    commands.add_parser("listen", help="print messages as they arrive")
    safety = commands.add_parser("safety", help="show the safety number with someone")
    safety.add_argument("handle")
    link = commands.add_parser("link", help="new device: link it from one you already have")
    link.add_argument("--name", default="reference client")
    approve_link = commands.add_parser(
        "approve-link", help="existing device: approve a new device after comparing codes"
    )
    approve_link.add_argument("link_id", nargs="?", help="default: the link in progress")
    for waiting in (link, approve_link):
        waiting.add_argument("--timeout", type=float, default=600, help="seconds to wait")
        waiting.add_argument("--poll", type=float, default=3, help="seconds between polls")
    args = parser.parse_args(argv)

    client = ParleyClient(args.server, state_file=args.state)
    try:
        if args.command == "signup":
            client.sign_up(args.handle, args.email, _password())
        elif args.command == "login":
            client.log_in(args.login, _password())
        elif args.command == "init":
            code = client.set_up_keys(args.name)
            print("Your recovery key. Write it down; it is shown only this once:")
            print(code)
        elif args.command == "restore":
            client.restore(recovery_code=getpass.getpass("Recovery key: "), device_name=args.name)
        elif args.command == "send":
            conversation_id = client.open_direct(args.handle)
            sent = client.send_text(conversation_id, args.text)
            print(f"sent #{sent['seq']}")
        elif args.command == "sync":
            for received in client.sync():
                print(_show(received))
        elif args.command == "listen":
            asyncio.run(_listen(client))
        elif args.command == "safety":
            print(client.safety_number(args.handle))
        elif args.command == "link":
            _link(client, args.name, args.timeout, args.poll)
        elif args.command == "approve-link":
            approved = _approve_link(client, args.link_id, args.timeout, args.poll)
            return 0 if approved else 1
    except ApiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except IdentityKeyChanged as error:
        print(f"error: {error}; compare safety numbers before sending", file=sys.stderr)
        return 1
    except (LinkError, DirectoryMismatch) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
