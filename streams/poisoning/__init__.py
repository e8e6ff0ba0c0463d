"""The poisoning guard: screening of training records before retraining (see ``guard``)."""

from streams.poisoning.guard import PoisoningGuard, Verdict
from streams.poisoning.trusted import sample_trusted, trusted_from_records

__all__ = ["PoisoningGuard", "Verdict", "sample_trusted", "trusted_from_records"]
