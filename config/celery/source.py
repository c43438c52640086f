"""The single source of truth for the Celery configuration shared by the worker and the API.

Celery-style module: every public, non-module name is a Celery setting, except
``task_queues`` and ``task_routes`` which are published as their own Redis hashes.
A name Celery does not know (a typo such as ``task_serialiser``) is refused at publish.

Per-environment values live in ``overlays/<name>.py`` beside this file and hold only what
differs (selected with ``--overlay`` or ``CELERY_CONFIG_OVERLAY``); never copy this file.

Credentials never belong here: broker and result URLs come from each service's environment.
"""

from kombu import Exchange, Queue

_default = Exchange("celery", type="direct")
_media = Exchange("media", type="topic")  # one exchange, several queues bound by pattern
_broadcast = Exchange("control_broadcast", type="fanout")

task_queues = (
    Queue("celery", _default, routing_key="celery"),
    Queue("scan", Exchange("scan", type="direct"), routing_key="scan"),
    Queue("extract", Exchange("extract", type="direct"), routing_key="extract"),
    Queue("batch", Exchange("batch", type="direct"), routing_key="batch"),
    Queue("insert", Exchange("insert", type="direct"), routing_key="insert"),
    Queue(
        "priority",
        Exchange("priority", type="direct"),
        routing_key="priority",
        queue_arguments={"x-max-priority": 10},
        max_priority=10,
    ),
    Queue("covers", _media, routing_key="media.covers.#"),
    Queue("audio_analysis", _media, routing_key="media.audio.#"),
    Queue("vectorization", Exchange("vectorization", type="direct"), routing_key="vectorization"),
    Queue("enrichment", Exchange("enrichment", type="direct"), routing_key="enrichment"),
    Queue("lastfm", Exchange("lastfm", type="direct"), routing_key="lastfm"),
    Queue("deferred", Exchange("deferred", type="direct"), routing_key="deferred"),
    Queue("maintenance", Exchange("maintenance", type="direct"), routing_key="maintenance"),
    Queue("monitoring", _broadcast, routing_key="monitoring"),
)

task_routes = {
    # scan: walking the music library
    "scan.discovery": {"queue": "scan"},
    "scan.directory": {"queue": "scan"},
    "scan.file_changed": {"queue": "scan"},
    "scan.full_rescan": {"queue": "scan"},
    "scan.validate_paths": {"queue": "scan"},
    # metadata extraction
    "metadata.extract_batch": {"queue": "extract"},
    "metadata.extract_file": {"queue": "extract"},
    "metadata.extract_tags": {"queue": "extract"},
    "metadata.extract_artwork": {"queue": "extract"},
    "metadata.normalize": {"queue": "extract"},
    # batching extracted records
    "batch.process_entities": {"queue": "batch"},
    "batch.group_albums": {"queue": "batch"},
    "batch.group_artists": {"queue": "batch"},
    "batch.flush": {"queue": "batch"},
    "batch.dedupe": {"queue": "batch"},
    # database inserts
    "insert.direct_batch": {"queue": "insert"},
    "insert.tracks": {"queue": "insert"},
    "insert.albums": {"queue": "insert"},
    "insert.artists": {"queue": "insert"},
    "insert.genres": {"queue": "insert"},
    # user-facing, latency-sensitive work
    "priority.user_request": {"queue": "priority", "priority": 9},
    "priority.playlist_refresh": {"queue": "priority", "priority": 7},
    "priority.search_reindex": {"queue": "priority", "priority": 5},
    "priority.now_playing": {"queue": "priority", "priority": 9},
    # media: covers and audio analysis share a topic exchange
    "covers.fetch_album": {"queue": "covers", "routing_key": "media.covers.album"},
    "covers.fetch_artist": {"queue": "covers", "routing_key": "media.covers.artist"},
    "covers.resize": {"queue": "covers", "routing_key": "media.covers.resize"},
    "covers.cleanup": {"queue": "covers", "routing_key": "media.covers.cleanup"},
    "audio.analyze_track": {"queue": "audio_analysis", "routing_key": "media.audio.track"},
    "audio.detect_bpm": {"queue": "audio_analysis", "routing_key": "media.audio.bpm"},
    "audio.detect_key": {"queue": "audio_analysis", "routing_key": "media.audio.key"},
    "audio.loudness": {"queue": "audio_analysis", "routing_key": "media.audio.loudness"},
    "audio.fingerprint": {"queue": "audio_analysis", "routing_key": "media.audio.fingerprint"},
    # embeddings
    "vectorization.track": {"queue": "vectorization"},
    "vectorization.artist": {"queue": "vectorization"},
    "vectorization.batch": {"queue": "vectorization"},
    "vectorization.rebuild_index": {"queue": "vectorization"},
    # enrichment from external catalogues
    "enrichment.musicbrainz": {"queue": "enrichment"},
    "enrichment.lyrics": {"queue": "enrichment"},
    "enrichment.genres": {"queue": "enrichment"},
    "enrichment.similar_artists": {"queue": "enrichment"},
    "lastfm.sync_scrobbles": {"queue": "lastfm"},
    "lastfm.fetch_artist_info": {"queue": "lastfm"},
    "lastfm.fetch_similar": {"queue": "lastfm"},
    "lastfm.update_tags": {"queue": "lastfm"},
    # work that can wait
    "deferred.retry_failed": {"queue": "deferred"},
    "deferred.recompute_stats": {"queue": "deferred"},
    "deferred.rebuild_thumbnails": {"queue": "deferred"},
    "deferred.*": {"queue": "deferred"},
    # housekeeping
    "maintenance.cleanup_orphans": {"queue": "maintenance"},
    "maintenance.vacuum": {"queue": "maintenance"},
    "maintenance.rotate_logs": {"queue": "maintenance"},
    "maintenance.purge_results": {"queue": "maintenance"},
    "maintenance.*": {"queue": "maintenance"},
    # health probes: fanned out to every worker
    "monitoring.heartbeat": {"queue": "monitoring"},
    "monitoring.queue_depths": {"queue": "monitoring"},
    "monitoring.worker_stats": {"queue": "monitoring"},
    "monitoring.disk_usage": {"queue": "monitoring"},
    # anything else left in the default queue
    "celery.ping": {"queue": "celery"},
    "demo.*": {"queue": "celery"},
}

task_default_queue = "celery"
task_default_exchange = "celery"
task_default_routing_key = "celery"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
timezone = "UTC"
enable_utc = True
task_acks_late = True
task_reject_on_worker_lost = True
task_track_started = True
task_time_limit = 600
task_soft_time_limit = 540
task_default_priority = 5
result_expires = 3600
result_extended = True
worker_prefetch_multiplier = 1
worker_max_tasks_per_child = 200
worker_send_task_events = False
broker_connection_retry_on_startup = True
broker_transport_options = {"visibility_timeout": 3600, "priority_steps": [0, 3, 6, 9]}

# celery beat (the stack's beat service, `celery -A worker_service.app beat`) follows this
# schedule live: a publish that adds, removes or changes an entry needs no restart.
beat_schedule = {
    "demo-echo-every-30s": {"task": "demo.echo", "schedule": 30.0, "args": ["from beat"]},
}
