"""A celeryconfig.py as Celery's documentation writes one ("First Steps", "Configuration and
defaults", "Routing Tasks", "Periodic Tasks"), as-is: broker and backend URLs, imports, a
plain annotations dict, routes given as queue names, topic exchanges, a regex route."""

import re
from datetime import timedelta

from celery.schedules import crontab
from kombu import Exchange, Queue

## Broker settings.
broker_url = "pyamqp://guest@localhost//"

# List of modules to import when the Celery worker starts.
imports = ("myapp.tasks",)

## Using RPC to send task states and results back ("First Steps with Celery").
result_backend = "rpc://"

task_annotations = {"tasks.add": {"rate_limit": "10/s"}}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = True

task_default_queue = "default"
task_default_exchange = "tasks"
task_default_exchange_type = "topic"
task_default_routing_key = "task.default"

media_exchange = Exchange("media", type="topic")
task_queues = (
    Queue("default", routing_key="task.#"),
    Queue("feed_tasks", routing_key="feed.#"),
    Queue("videos", media_exchange, routing_key="media.video"),
    Queue("images", media_exchange, routing_key="media.image"),
    Queue("low-priority", Exchange("low-priority"), routing_key="low-priority"),
)

task_routes = {
    "feed.tasks.import_feed": "feed_tasks",
    "tasks.add": "low-priority",
    "feed.tasks.*": {"queue": "feed_tasks", "routing_key": "feed.import"},
    re.compile(r"(image|video)\.tasks\..*"): {"queue": "images"},
    "web.*": {"queue": "default", "priority": 3},
}

beat_schedule = {
    "add-every-30-seconds": {
        "task": "tasks.add",
        "schedule": 30.0,
        "args": (16, 16),
    },
    "add-every-monday-morning": {
        "task": "tasks.add",
        "schedule": crontab(hour=7, minute=30, day_of_week=1),
        "args": (16, 16),
    },
    "refresh-feeds": {
        "task": "feed.tasks.import_feed",
        "schedule": timedelta(minutes=15),
        "options": {"queue": "feed_tasks"},
    },
}

worker_prefetch_multiplier = 1
task_acks_late = True
result_expires = timedelta(hours=1)
