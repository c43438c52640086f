"""Corpus: IoT telemetry ingestion (sensors, alerts, firmware, device commands).

Devices publish on topic exchanges: queues bind several patterns at once (kombu ``binding``).
task_queues is in consumption order (alerts first), not alphabetical: the Redis transport's
"priority" queue order strategy reads it in that order.
"""

from datetime import timedelta

from celery.schedules import crontab
from kombu import Exchange, Queue, binding

_telemetry = Exchange("telemetry", type="topic")
_alerts = Exchange("alerts", type="topic")
_commands = Exchange("device_commands", type="direct")
_firmware = Exchange("firmware", type="fanout")

task_queues = (
    Queue("alerts.critical", bindings=[
        binding(_alerts, routing_key="alert.critical.#"),
        binding(_telemetry, routing_key="*.*.smoke"),
    ], queue_arguments={"x-max-priority": 10}),
    Queue("ingest.temperature", bindings=[
        binding(_telemetry, routing_key="*.*.temperature"),
        binding(_telemetry, routing_key="*.*.humidity"),
    ]),
    Queue("ingest.power", _telemetry, routing_key="*.*.power"),
    Queue("ingest.default", _telemetry, routing_key="#"),
    Queue("device.commands", _commands, routing_key="device.commands"),
    Queue("firmware.rollout", _firmware, routing_key="firmware"),
    Queue("alerts.warning", bindings=[
        binding(_alerts, routing_key="alert.warning.*"),
        binding(_alerts, routing_key="alert.info.*"),
    ]),
    Queue("aggregation", Exchange("aggregation", type="topic"), routing_key="agg.#",
          message_ttl=86400.0),
    Queue("archive", Exchange("archive", type="direct"), routing_key="archive",
          durable=True, max_length=1_000_000),
)

task_routes = {
    "iot.alerts.fire": {"queue": "alerts.critical", "exchange": "alerts",
                        "routing_key": "alert.critical.fire", "priority": 9},
    "iot.alerts.flood": {"queue": "alerts.critical", "exchange": "alerts",
                         "routing_key": "alert.critical.flood", "priority": 9},
    "iot.alerts.battery_low": {"queue": "alerts.warning", "exchange": "alerts",
                               "routing_key": "alert.warning.battery"},
    "iot.alerts.offline": {"queue": "alerts.warning", "exchange": "alerts",
                           "routing_key": "alert.warning.offline"},
    "iot.ingest.temperature": {"queue": "ingest.temperature",
                               "routing_key": "site.room.temperature"},
    "iot.ingest.humidity": {"queue": "ingest.temperature", "routing_key": "site.room.humidity"},
    "iot.ingest.power": {"queue": "ingest.power", "routing_key": "site.meter.power"},
    "iot.commands.reboot": {"queue": "device.commands", "exchange_type": "direct"},
    "iot.commands.set_interval": {"queue": "device.commands"},
    "iot.firmware.announce": {"queue": "firmware.rollout", "exchange": "firmware",
                              "exchange_type": "fanout"},
    "iot.aggregate.hourly": {"queue": "aggregation", "routing_key": "agg.hourly"},
    "iot.aggregate.daily": {"queue": "aggregation", "routing_key": "agg.daily"},
    "iot.archive.*": {"queue": "archive"},
    "iot.ingest.*": {"queue": "ingest.default", "routing_key": "site.unknown.reading"},
    "iot.alerts.*": {"queue": "alerts.warning", "routing_key": "alert.warning.other"},
    "iot.aggregate.*": {"queue": "aggregation", "routing_key": "agg.other"},
}

task_default_queue = "ingest.default"
task_default_exchange = "telemetry"
task_default_exchange_type = "topic"
task_default_routing_key = "site.unknown.reading"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
task_time_limit = 30
task_soft_time_limit = 25.5
worker_prefetch_multiplier = 8
worker_concurrency = 4
broker_pool_limit = 20
timezone = "UTC"
result_expires = timedelta(minutes=30)
broker_transport_options = {
    "queue_order_strategy": "priority",
    "priority_steps": [0, 5, 9],
    "fanout_prefix": True,
    "fanout_patterns": True,
}

beat_schedule = {
    "aggregate-hourly": {
        "task": "iot.aggregate.hourly",
        "schedule": crontab(minute=1),
        "options": {"queue": "aggregation", "routing_key": "agg.hourly"},
    },
    "aggregate-daily": {
        "task": "iot.aggregate.daily",
        "schedule": crontab(minute=10, hour=0),
        "args": ("UTC", ("temperature", "humidity", "power")),
    },
    "weekend-polling": {
        "task": "iot.commands.set_interval",
        "schedule": crontab(minute=0, hour="7-22/3", day_of_week="sat,sun"),
        "kwargs": {"group": "garden", "interval": 5},
    },
    "heartbeat-sweep": {
        "task": "iot.alerts.offline",
        "schedule": timedelta(seconds=90),
        "relative": True,
    },
}

app_settings = {
    "sites": ["paris-01", "lyon-02"],
    "offline_after_seconds": 300,
    "units": {"temperature": "celsius", "power": "watt"},
}
