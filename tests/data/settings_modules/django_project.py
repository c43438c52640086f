"""The Celery part of a Django-style project's settings (``app.config_from_object`` over a
module holding them, lower-case names), with a list of routers mixing globs, a regex with
flags, queue-name shorthands, an annotations list and transport options shared by every
service."""

import re
from datetime import timedelta

from celery.schedules import crontab, solar
from kombu import Exchange, Queue

DEBUG = False  # Django's own settings: not Celery's, left out
ALLOWED_HOSTS = ["shop.example"]

broker_url = "redis://redis:6379/0"
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": 3600, "queue_order_strategy": "priority"}
result_backend = "redis://redis:6379/1"
result_extended = True
worker_state_db = "/var/run/celery/worker.state"
beat_schedule_filename = "/var/run/celery/beat-schedule"

task_default_queue = "web"
task_queues = [
    Queue("web", Exchange("web"), routing_key="web"),
    Queue("emails", Exchange("emails"), routing_key="emails"),
    Queue("reports", Exchange("reports"), routing_key="reports",
          queue_arguments={"x-max-priority": 10}),
    Queue("search", Exchange("search", type="topic"), routing_key="search.#"),
]

task_routes = [
    {
        "shop.emails.*": "emails",
        re.compile(r"^shop\.(reports|exports)\.", re.IGNORECASE): {"queue": "reports",
                                                                   "priority": 5},
    },
    {
        "shop.search.reindex": {"queue": "search", "routing_key": "search.reindex"},
        "shop.emails.digest": "reports",  # shadowed by "shop.emails.*" above: left out
        "shop.*": "web",
    },
]

task_annotations = [
    {"shop.emails.send": {"rate_limit": "30/m", "max_retries": 5}},
    {"*": {"soft_time_limit": 120}},
]

task_time_limit = 300
task_track_started = True
task_send_sent_event = True
worker_send_task_events = True

beat_schedule = {
    "nightly-report": {"task": "shop.reports.nightly", "schedule": crontab(minute=0, hour=2)},
    "reindex": {"task": "shop.search.reindex", "schedule": timedelta(hours=6),
                "kwargs": {"full": False}},
    "sunrise-banner": {"task": "shop.banners.sunrise",
                       "schedule": solar("sunrise", 59.91, 10.75)},
}
