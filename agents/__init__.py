"""Everything with I/O: the Faust app, topics and codecs, agents, broker and the CLI."""

from agents.config import Settings

__all__ = ["Settings"]
