"""The lessons' experiments, one module per topic, each experiment one call.

A lesson shows an idea in prose, runs one short call, and reads the result.
The call lives here: a function named for what it does starts every server
and client it needs, runs, stops them all (also when something fails) and
returns a small frozen result: the trace, the numbers the lesson asserts on,
and a ``figure()`` method that draws the lesson's chart (matplotlib is
imported inside it, never when the module loads). Experiments that take more
than about two seconds show a :class:`labkit.progress.Progress` bar in a
notebook and print nothing anywhere else.

- ``start``: lesson 00, a shop posting order updates to a receiver.
- ``queues``: lesson 01, a direct call against a queue, an outage, a crash before the ack.
- ``webhooks``: lesson 02, lost pushes, a relay, SMS status, payments, thin payloads, a race
  against polling.
- ``security``: lesson 03, attacks on receivers, refusals by reason, a live secret rotation.
- ``reliability``: lesson 04, outages, backoff, a herd, dead letters, duplicates, order.
- ``debugging``: lesson 05, headers, curl, a slow and a lossy relay, a "doesn't arrive" checklist.
- ``polling``: lesson 06, plain HTTP's silence, a weather app against the theory, how often to
  poll, a chat over long polling, the same events three ways, 1 to 100 clients.
- ``sse``: lesson 07, a live cricket score: the stream's bytes, resume, gaps, six tabs, a slow fan,
  WebSocket beside it, 1 to 1,000 clients.
- ``webpush``: lesson 08, a food app's alerts: subscription, TTL, topics, urgency, 410, VAPID.
- ``processes``: lesson 07 or 09, two servers on one Redis stream, clients moving between them.
- ``head_to_head``: lesson 09, every technique on the same events, the notes' table measured.
"""
