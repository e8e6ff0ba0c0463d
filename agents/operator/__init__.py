"""What operators run by hand: commands, the quarantine, dead letters, tail and its
views, replay, reference build and the audit report."""
