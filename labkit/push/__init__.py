"""Server-to-client push: the server has news; how does the client learn of it?

=============  ==========================================  ======================================
technique      how the news travels                        modules
=============  ==========================================  ======================================
polling        the client asks again every interval;       :mod:`labkit.push.polling`
               most answers carry nothing new
long-polling   the server holds each request until there   :mod:`labkit.push.polling`
               is news or the hold runs out
sse            one long HTTP response the server keeps     :mod:`labkit.push.sse` (server,
               appending events to; the client reconnects  client), :mod:`labkit.push.sse_protocol`
               and resumes with ``Last-Event-ID``          (the ``text/event-stream`` format)
websocket      one upgraded connection, frames both ways   :mod:`labkit.push.websocket`
               (the two-way contrast)
webpush        a push service stores each encrypted        :mod:`labkit.push.webpush` (service,
               message until the device connects; the      device, app server, crypto, vapid)
               app may be closed
=============  ==========================================  ======================================

:mod:`labkit.push.clients` holds what every client here shares (start, stop,
``wait_for``, its cursor), and :mod:`labkit.push.scale` runs any technique
with 1 to 1,000 simulated clients (``run_clients``, ``scaling``).
"""
