"""The Celery worker service. It loads the shared configuration through celery_config_sync and
never imports the API (an import-linter contract checks it)."""
