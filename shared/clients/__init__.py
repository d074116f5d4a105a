"""SDK method groups, one module per service, mixed into ``shared.sdk.Client``.

Each mixin derives from ``shared.clients.host.ClientHost``, which declares what it may use of
the Client it is mixed into: ``self.bus`` (shared.bus.Bus), ``self.send``,
``self.send_and_collect``, ``self.upload`` and the registry reads (``self.get``, ``self.list``),
and gives the command round trip they share (``send_for_outcome``).
"""
