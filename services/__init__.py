"""The four inferlab services. Each depends on ``shared`` only, never on another service."""
