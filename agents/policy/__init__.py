"""The policy pipeline: reports in, signed commands out."""
