"""Tools for debugging any HTTP traffic, webhooks above all.

``inspector``: a request bin that keeps every request byte for byte, shows
it as HTML and JSON, writes it as a curl command and replays it (what
requestbin.com and Postman do). ``relay``: a tunnel in front of a local
server, with its own log and a seeded bad network (what ngrok does, plus the
latency and loss a real network adds), and ``PublicUrl`` for signatures a
provider computed over the public URL.
"""

from labkit.debug.inspector import CapturedRequest, Inspector, as_curl, replay, serve_inspector
from labkit.debug.relay import PublicUrl, Relay, serve_relay

__all__ = ["CapturedRequest", "Inspector", "PublicUrl", "Relay", "as_curl", "replay",
           "serve_inspector", "serve_relay"]
