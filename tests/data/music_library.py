"""Corpus: a self-hosted music library (scanner, metadata, artwork, audio analysis, playlists).

Routes rely on Celery's MapRoute: exact names first, then globs in declared order, so the
narrow globs ("media.covers.special*") are declared before the broad ones ("media.*").
"""

from datetime import timedelta

from celery.schedules import crontab
from kombu import Exchange, Queue

_default = Exchange("library", type="direct")
_media = Exchange("media", type="topic")  # covers, audio and waveforms bound by pattern
_events = Exchange("library_events", type="fanout")  # every worker hears library changes

task_queues = (
    Queue("library", _default, routing_key="library"),
    Queue("scan", Exchange("scan", type="direct"), routing_key="scan"),
    Queue("tags", Exchange("tags", type="direct"), routing_key="tags"),
    Queue(
        "interactive",
        Exchange("interactive", type="direct"),
        routing_key="interactive",
        queue_arguments={"x-max-priority": 10},
        max_priority=10,
    ),
    Queue("covers", _media, routing_key="media.covers.#"),
    Queue("audio", _media, routing_key="media.audio.#"),
    Queue("waveforms", _media, routing_key="media.waveform.*"),
    Queue("media_misc", _media, routing_key="media.#"),
    Queue("transcode", Exchange("transcode", type="direct"), routing_key="transcode",
          message_ttl=3600.0, max_length=5000),
    Queue("playlists", Exchange("playlists", type="direct"), routing_key="playlists"),
    Queue("lyrics", Exchange("lyrics", type="direct"), routing_key="lyrics"),
    Queue("scrobbles", Exchange("scrobbles", type="direct"), routing_key="scrobbles",
          durable=False),
    Queue("housekeeping", Exchange("housekeeping", type="direct"), routing_key="housekeeping"),
    Queue("events", _events, routing_key="events", auto_delete=True, expires=600.0),
)

task_routes = {
    # scanning the filesystem
    "library.scan.folder": {"queue": "scan"},
    "library.scan.file": {"queue": "scan"},
    "library.scan.watch_event": {"queue": "scan", "priority": 6},
    "library.scan.full": {"queue": "scan", "priority": 1},
    # tags and metadata
    "library.tags.read": {"queue": "tags"},
    "library.tags.write": {"queue": "tags"},
    "library.tags.musicbrainz_match": {"queue": "tags"},
    "library.tags.normalize_artist": {"queue": "tags"},
    # a user waiting in front of the screen
    "ui.play_now": {"queue": "interactive", "priority": 9},
    "ui.search": {"queue": "interactive", "priority": 8},
    "ui.queue_album": {"queue": "interactive", "priority": 7},
    "ui.rate_track": {"queue": "interactive", "priority": 3},
    # artwork, routed through the topic exchange
    "media.covers.fetch_album": {"queue": "covers", "routing_key": "media.covers.album"},
    "media.covers.fetch_artist": {"queue": "covers", "routing_key": "media.covers.artist"},
    "media.covers.resize": {"queue": "covers", "routing_key": "media.covers.resize"},
    "media.covers.special_edition_refresh": {"queue": "covers",
                                             "routing_key": "media.covers.special"},
    "media.audio.bpm": {"queue": "audio", "routing_key": "media.audio.bpm"},
    "media.audio.key": {"queue": "audio", "routing_key": "media.audio.key"},
    "media.audio.replaygain": {"queue": "audio", "routing_key": "media.audio.replaygain"},
    "media.audio.fingerprint": {"queue": "audio", "routing_key": "media.audio.fingerprint"},
    "media.waveform.render": {"queue": "waveforms", "routing_key": "media.waveform.render"},
    # transcoding for mobile clients
    "transcode.opus": {"queue": "transcode"},
    "transcode.mp3_v0": {"queue": "transcode"},
    "transcode.flac_to_alac": {"queue": "transcode"},
    "transcode.cleanup_cache": {"queue": "housekeeping"},
    # playlists
    "playlists.smart_refresh": {"queue": "playlists"},
    "playlists.daily_mix": {"queue": "playlists"},
    "playlists.export_m3u": {"queue": "playlists"},
    "playlists.import_spotify": {"queue": "playlists"},
    "lyrics.fetch": {"queue": "lyrics"},
    "lyrics.sync_lrc": {"queue": "lyrics"},
    "scrobbles.submit": {"queue": "scrobbles"},
    "scrobbles.now_playing": {"queue": "scrobbles", "priority": 8},
    "scrobbles.backfill": {"queue": "scrobbles"},
    "housekeeping.vacuum": {"queue": "housekeeping"},
    "housekeeping.prune_results": {"queue": "housekeeping"},
    "housekeeping.rotate_logs": {"queue": "housekeeping"},
    "events.library_changed": {"queue": "events"},
    "events.device_connected": {"queue": "events"},
    # Globs, narrowest first: declared order decides between overlapping patterns.
    "media.covers.special*": {"queue": "interactive", "priority": 4},
    "media.covers.*": {"queue": "covers", "routing_key": "media.covers.other"},
    "media.audio.*": {"queue": "audio", "routing_key": "media.audio.other"},
    "media.*": {"queue": "media_misc", "routing_key": "media.other"},
    # Broad before narrow on purpose: "library.scan.*" below is shadowed by "library.*".
    "library.*": {"queue": "library"},
    "library.scan.*": {"queue": "scan"},
    "ui.*": {"queue": "interactive", "priority": 5},
    "transcode.*": {"queue": "transcode"},
    "housekeeping.*": {"queue": "housekeeping"},
    "*.events.*": {"queue": "events"},
    "*": {"queue": "library"},
}

beat_schedule = {
    "rescan-library-nightly": {"task": "library.scan.full", "schedule": crontab(minute=30, hour=3),
                               "options": {"queue": "scan", "priority": 1}},
    "refresh-smart-playlists": {"task": "playlists.smart_refresh",
                                "schedule": crontab(minute="*/20")},
    "daily-mix": {
        "task": "playlists.daily_mix",
        "schedule": crontab(minute=0, hour=6, day_of_week="mon-fri"),
        "kwargs": {"size": 50, "fresh_ratio": 0.3},
        "options": {"queue": "playlists"},
    },
    "monthly-vacuum": {
        "task": "housekeeping.vacuum",
        "schedule": crontab(minute=15, hour=4, day_of_month="1", month_of_year="*/1"),
        "options": {"queue": "housekeeping", "expires": 3600},
    },
    "backfill-scrobbles": {
        "task": "scrobbles.backfill",
        "schedule": timedelta(minutes=45),
        "args": ("lastfm", 200),
    },
}

task_default_queue = "library"
task_default_exchange = "library"
task_default_routing_key = "library"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Paris"
enable_utc = True
result_expires = timedelta(hours=1)
task_time_limit = 900
task_soft_time_limit = 840
task_acks_late = True
worker_prefetch_multiplier = 1
broker_transport_options = {"visibility_timeout": 7200, "queue_order_strategy": "priority",
                            "priority_steps": list(range(10)), "sep": ":"}

app_settings = {
    "library_roots": ["/srv/music", "/mnt/nas/flac"],
    "covers_min_size": 600,
    "lyrics_enabled": True,
    "transcode_profiles": {"mobile": "opus-96", "car": "mp3-v0"},
}
