"""SDK methods of the converter (mixed into ``shared.sdk.Client``)."""

from __future__ import annotations


class ConversionApi:
    """Methods that talk to the converter."""
