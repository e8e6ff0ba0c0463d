"""Reading input messages: the codec (JSON and Arrow), pseudonymised fields, events
too far ahead, and which models are tracked."""
