"""Missing-value and unseen-category shifts between a reference and a window."""

from __future__ import annotations

from collections.abc import Collection, Mapping


def missing_rate_change(
    reference_missing: int, reference_total: int, window_missing: int, window_total: int
) -> float:
    """Window missing rate minus reference missing rate, in [-1, 1].

    Totals count every value, missing included. A side with zero total has no
    rate, so the change is 0.0.

    >>> missing_rate_change(5, 100, 30, 100)
    0.25
    >>> missing_rate_change(5, 100, 0, 0)
    0.0
    """
    for name, missing, total in (
        ("reference", reference_missing, reference_total),
        ("window", window_missing, window_total),
    ):
        if missing < 0 or total < 0:
            raise ValueError(f"{name} counts must be non-negative, got {missing}/{total}")
        if missing > total:
            raise ValueError(f"{name} missing {missing} exceeds total {total}")
    if reference_total == 0 or window_total == 0:
        return 0.0
    return window_missing / window_total - reference_missing / reference_total


def unseen_share(
    window_counts_by_category: Mapping[str, int], reference_categories: Collection[str]
) -> float:
    """Share of the window's non-missing values whose category the reference never saw.

    ``window_counts_by_category`` counts non-missing values only. An empty
    window (no values) gives 0.0.

    >>> unseen_share({"a": 6, "b": 2, "z": 2}, {"a", "b"})
    0.2
    >>> unseen_share({}, {"a"})
    0.0
    """
    seen = (
        reference_categories
        if isinstance(reference_categories, set | frozenset)
        else set(reference_categories)
    )
    total = 0
    unseen = 0
    for category, n in window_counts_by_category.items():
        if n < 0:
            raise ValueError(f"count for {category!r} must be non-negative, got {n}")
        total += n
        if category not in seen:
            unseen += n
    if total == 0:
        return 0.0
    return unseen / total
