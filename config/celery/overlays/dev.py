"""Local development: only what differs from ../source.py."""

worker_concurrency = 1
worker_send_task_events = True
