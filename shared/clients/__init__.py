"""SDK method groups, one module per service, mixed into ``shared.sdk.Client``.

Each mixin derives from ``shared.clients.host.ClientHost``, which sends commands and collects
their replies (``send``, ``send_and_collect``, ``send_for_outcome``) over ``self.bus``
(shared.bus.Bus), and declares the Client members a mixin may call besides: ``self.upload``
and the registry reads (``self.get``, ``self.list``).
"""
