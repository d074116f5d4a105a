"""Test helpers: real models and datasets made locally, and in-process service hosts."""
