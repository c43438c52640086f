"""The plain app with the same settings given as a dict (``app.conf.update``) rather than as a
module: only bench/integration_cost.py's ``send_task`` comparison uses it. Celery looks a
setting up in a ``config_from_object`` module with ``getattr``, and every setting the module
leaves out (under each of its names, new and old) costs an AttributeError turned into a
KeyError, several of them per ``send_task``; a dict costs none. The attached app's settings are
a dict too."""

from __future__ import annotations

from celery import Celery

from . import rpi_settings
from .noop import register

app = Celery("bench_plain_dict")
app.conf.update({name: value for name, value in vars(rpi_settings).items()
                 if not name.startswith("_")})
noop = register(app)
