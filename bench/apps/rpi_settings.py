"""config/celery/source.py with its rpi overlay on top, as one settings module: what the plain
app reads with ``config_from_object`` (the old way: import the worker's config module). The
attached app gets the same settings from ``celery-config publish --overlay rpi``. (The rpi
overlay holds plain settings only: on top of the source, they replace the source's.)"""

from importlib import import_module

for _module in ("config.celery.source", "config.celery.overlays.rpi"):
    globals().update({name: value for name, value in vars(import_module(_module)).items()
                      if not name.startswith("_")})
