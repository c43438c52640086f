"""Two Celery apps with the same no-op task and the same settings, for bench/integration_cost.py:
one attached to the shared configuration, one configured the plain way."""
