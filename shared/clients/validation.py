"""SDK methods of the validator (mixed into ``shared.sdk.Client``)."""

from __future__ import annotations


class ValidationApi:
    """Methods that talk to the validator."""
