"""chat_lesson: WebSocket from the wire up, and a real chat server to try it on.

    from chat_lesson import ChatServer, ChatClient
    server = ChatServer(port=8000).start()     # shows a link to open in a browser

The package has four parts (the README draws the map):

- ``protocol/``: pure RFC 6455 code: the handshake, frames, deflate, an incremental reader;
- ``chat/``: the chat: the pure room, the server around it, a client, the wire constants;
- ``tap/``: the frame inspector: a pure recorder, the proxy with its faults, notebook views;
- ``lessons/``: the course's helpers, exercises and figures (nothing else imports them);

and beside them ``rawclient`` (one blocking raw client), ``notebook`` (the only module
that knows Jupyter), ``browser`` (the only one that knows Chromium) and ``bench``.
"""

from .chat.client import ChatClient
from .chat.server import ChatServer

__all__ = ["ChatClient", "ChatServer"]
