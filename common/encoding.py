"""Wire encodings of PROTOCOL.md: base64url without padding, and signing inputs."""

import base64
import binascii


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Decode unpadded base64url strictly; raises ValueError on anything else."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not base64url")
    if "=" in text or "+" in text or "/" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    # Reject non-canonical encodings (stray low bits), so one value has one spelling.
    if b64u_encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


def signing_input(label: str, *fields: str | int) -> bytes:
    """ASCII lines joined with \\n, no trailing newline, the label first."""
    lines = [label, *(str(field) for field in fields)]
    for line in lines:
        if "\n" in line:
            raise ValueError("a signing input field may not contain a newline")
    return "\n".join(lines).encode("ascii")
