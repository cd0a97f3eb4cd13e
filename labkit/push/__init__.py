"""Server-to-client push: the server has news; how does the client learn of it?

=============  ==========================================  ======================================
technique      how the news travels                        modules
=============  ==========================================  ======================================
sse            one long HTTP response the server keeps     :mod:`labkit.push.sse` (server,
               appending events to; the client reconnects  client), :mod:`labkit.push.sse_protocol`
               and resumes with ``Last-Event-ID``          (the ``text/event-stream`` format)
webpush        a push service stores each encrypted        :mod:`labkit.push.webpush` (service,
               message until the device connects; the      device, app server, crypto, vapid)
               app may be closed
=============  ==========================================  ======================================
"""
