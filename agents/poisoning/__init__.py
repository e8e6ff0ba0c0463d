"""The poisoning guard pipeline: training records in; clean, quarantined and reports out."""
