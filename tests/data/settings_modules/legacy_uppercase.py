"""A Celery 3-era celeryconfig.py, still common in real projects: old upper-case names only,
module constants for the queue names, routes as a tuple of dicts (Celery tries them in order),
the old dict form of CELERY_QUEUES, annotations for every task. Shaped after the origin project
of this one's specification (gmm, synonym, vectorization queues)."""

from celery.schedules import crontab

BROKER_URL = "redis://localhost:6379/0"
CELERY_RESULT_BACKEND = "redis://localhost:6379/1"
CELERY_IMPORTS = ("nlp.tasks", "nlp.maintenance")

GMM_QUEUE = "gmm"
SYNONYM_QUEUE = "synonym"
VECTORIZATION_QUEUE = "vectorization"

CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_RESULT_EXPIRES = 3600
CELERYD_PREFETCH_MULTIPLIER = 1
CELERYD_CONCURRENCY = 2
CELERY_ACKS_LATE = True

CELERY_DEFAULT_QUEUE = "default"
CELERY_QUEUES = {
    "default": {"exchange": "default", "routing_key": "default"},
    GMM_QUEUE: {"exchange": "nlp", "exchange_type": "direct", "routing_key": "nlp.gmm"},
    SYNONYM_QUEUE: {"exchange": "nlp", "exchange_type": "direct", "binding_key": "nlp.synonym"},
    VECTORIZATION_QUEUE: {"exchange": "nlp", "exchange_type": "direct",
                          "routing_key": "nlp.vectorization"},
}

CELERY_ROUTES = (
    {
        "nlp.tasks.train_gmm": {"queue": GMM_QUEUE, "routing_key": "nlp.gmm"},
        "nlp.tasks.find_synonyms": SYNONYM_QUEUE,
        "nlp.tasks.vectorize*": {"queue": VECTORIZATION_QUEUE},
    },
    {
        # Shadowed: the first dict's "nlp.tasks.vectorize*" decides it (left out, a notice).
        "nlp.tasks.vectorize_batch": {"queue": GMM_QUEUE},
        "nlp.maintenance.*": "default",
        "nlp.*": {"queue": SYNONYM_QUEUE},
    },
)

CELERY_ANNOTATIONS = {"*": {"rate_limit": "100/m"},
                      "nlp.tasks.train_gmm": {"time_limit": 600, "acks_late": True}}

CELERYBEAT_SCHEDULE = {
    "retrain-gmm-nightly": {
        "task": "nlp.tasks.train_gmm",
        "schedule": crontab(minute=0, hour=3),
        "options": {"queue": GMM_QUEUE},
    },
    "vacuum": {"task": "nlp.maintenance.vacuum", "schedule": 600.0},
}
