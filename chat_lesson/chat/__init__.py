"""The chat: the pure room, the server that puts it on the wire, a client, and the wire constants."""
