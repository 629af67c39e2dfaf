"""RFC 6455 without sockets: bytes in, values out (the handshake, frames, permessage-deflate, a reader)."""
