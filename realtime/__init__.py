"""The live socket: one WebSocket per device (docs/realtime.md).

Other apps talk to sockets through the two doors in ``realtime.publish``:
``publish_on_commit`` and ``close_sockets_on_commit``, and receive frames by
registering handlers with ``realtime.registry.register``.
"""
