"""chat_lesson: WebSocket from the wire up, and a real chat server to try it on.

    from chat_lesson import ChatServer, ChatClient
    server = ChatServer(port=8000).start()     # shows a link to open in a browser
"""

from .client import ChatClient
from .notebook import run
from .server import ChatServer

__all__ = ["ChatClient", "ChatServer", "run"]
