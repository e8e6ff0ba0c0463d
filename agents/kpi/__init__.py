"""The KPI pipeline: predictions and delayed labels in, KpiReports out."""
