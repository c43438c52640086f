"""Corpus: an online shop (orders, payments, e-mails, reports), direct exchanges only.

Payments must not be lost on a worker crash: late acks and one message prefetched at a time.
"""

from datetime import timedelta

from celery.schedules import crontab, schedule
from kombu import Exchange, Queue

_shop = Exchange("shop", type="direct")

task_queues = [
    Queue("default", _shop, routing_key="default"),
    Queue("orders", _shop, routing_key="orders"),
    Queue("orders.high", Exchange("orders_high", type="direct"), routing_key="orders.high",
          queue_arguments={"x-max-priority": 5}),
    Queue("payments", Exchange("payments", type="direct", delivery_mode="persistent"),
          routing_key="payments"),
    Queue("emails", Exchange("emails", type="direct"), routing_key="emails",
          consumer_arguments={"x-priority": 1}),
    Queue("reports", Exchange("reports", type="direct", durable=True), routing_key="reports",
          max_length_bytes=50_000_000),
    Queue("webhooks", Exchange("webhooks", type="direct"), routing_key="webhooks",
          message_ttl=900.0),
]

task_routes = {
    "shop.orders.create": {"queue": "orders", "routing_key": "orders.create"},
    "shop.orders.cancel": {"queue": "orders", "routing_key": "orders.cancel"},
    "shop.orders.ship": {"queue": "orders", "routing_key": "orders.ship"},
    "shop.orders.refund": {"queue": "orders.high", "routing_key": "orders.high", "priority": 4},
    "shop.orders.fraud_check": {"queue": "orders.high", "routing_key": "orders.high",
                                "priority": 5},
    "shop.payments.capture": {"queue": "payments", "routing_key": "payments", "priority": 9},
    "shop.payments.authorize": {"queue": "payments", "routing_key": "payments", "priority": 9},
    "shop.payments.settle_batch": {"queue": "payments", "routing_key": "payments",
                                   "priority": 2},
    "shop.payments.reconcile": {"queue": "payments", "exchange": "payments",
                                "routing_key": "payments"},
    "shop.emails.order_confirmation": {"queue": "emails", "priority": 7},
    "shop.emails.shipping_notice": {"queue": "emails", "priority": 5},
    "shop.emails.newsletter": {"queue": "emails", "priority": 0},
    "shop.emails.abandoned_cart": {"queue": "emails", "priority": 1},
    "shop.reports.daily_sales": {"queue": "reports"},
    "shop.reports.inventory": {"queue": "reports"},
    "shop.reports.tax_export": {"queue": "reports", "routing_key": "reports"},
    "shop.webhooks.deliver": {"queue": "webhooks"},
    "shop.webhooks.retry": {"queue": "webhooks", "priority": 3},
    "shop.emails.*": {"queue": "emails", "priority": 4},
    "shop.reports.*": {"queue": "reports"},
    "shop.orders.*": {"queue": "orders", "routing_key": "orders.misc"},
}

task_default_queue = "default"
task_default_exchange = "shop"
task_default_exchange_type = "direct"
task_default_routing_key = "default"
task_default_priority = 5
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_max_tasks_per_child = 500
task_time_limit = 120
task_soft_time_limit = 100
task_default_rate_limit = "100/s"
result_expires = timedelta(days=2)
task_track_started = True
timezone = "America/New_York"
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": 3600, "priority_steps": [0, 3, 6, 9]}

beat_schedule = {
    "settle-payments": {
        "task": "shop.payments.settle_batch",
        "schedule": schedule(run_every=timedelta(minutes=10)),
        "args": ("stripe", 500),
        "options": {"queue": "payments", "priority": 2},
    },
    "retry-webhooks": {
        "task": "shop.webhooks.retry",
        "schedule": 30.0,
        "args": (),
        "kwargs": {"max_attempts": 8},
    },
    "abandoned-carts": {
        "task": "shop.emails.abandoned_cart",
        "schedule": 3600,
        "args": (timedelta(hours=2).total_seconds(), ("eu", "us")),
    },
    "daily-sales": {
        "task": "shop.reports.daily_sales",
        "schedule": crontab(minute=5, hour=0),
        "args": ("csv",),
        "options": {"queue": "reports", "expires": 6 * 3600},
    },
    "inventory-hourly": {
        "task": "shop.reports.inventory",
        "schedule": schedule(run_every=timedelta(hours=1), relative=True),
    },
}

app_settings = {
    "currency": "USD",
    "free_shipping_threshold": 75.0,
    "payment_providers": ["stripe", "adyen"],
}
