"""Transports: the Redis store and pub/sub, wire messages, websocket server and client."""
