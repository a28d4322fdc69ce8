"""Parley reference client (Python).

``parley_client.crypto`` implements every construction of docs/PROTOCOL.md on
PyNaCl; ``parley_client/vectors.json`` holds the test vectors other clients check
themselves against.
"""

__version__ = "0.1.0"
