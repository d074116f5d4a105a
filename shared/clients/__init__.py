"""SDK method groups, one module per service, mixed into ``shared.sdk.Client``.

Each mixin may use ``self.bus`` (shared.bus.Bus), ``self.send``, ``self.send_and_collect`` and
the registry reads (``self.get``, ``self.resolve``) of the Client it is mixed into.
"""
