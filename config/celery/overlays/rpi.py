"""Raspberry Pi 4 (4 GB): only what differs from ../source.py."""

worker_concurrency = 2
worker_max_tasks_per_child = 50
worker_max_memory_per_child = 200_000  # KiB: recycle a child before it crowds the Pi
broker_pool_limit = 4
