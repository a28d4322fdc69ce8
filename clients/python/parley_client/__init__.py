"""Parley reference client (Python).

``parley_client.crypto`` implements every construction of docs/PROTOCOL.md on
PyNaCl; ``parley_client/vectors.json`` holds the test vectors other clients check
themselves against. ``parley_client.client`` is a device (HTTP and the live socket);
``parley_client.calls`` places and answers calls on aiortc, which only it needs (the
socket imports it when a call is made or taken).
"""

__version__ = "0.1.0"
