"""Analytics: the dashboard, agent performance, customer analyses, sales and the revenue
forecast, computed with aggregates in SQL over a period.

Every report returns a :class:`~crm_core.services.analytics.base.Report`: named tables of
plain values (the console draws charts from them and exports them as CSV or XLSX).
"""
