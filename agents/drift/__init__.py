"""The drift pipeline: the agent, its handler, and the fast lanes that decode a
batch straight into columns (JSON and Arrow)."""
