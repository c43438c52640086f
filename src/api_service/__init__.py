"""The HTTP API service. It loads the shared configuration through celery_config_sync and
never imports the worker (an import-linter contract checks it)."""
