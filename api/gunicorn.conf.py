"""Gunicorn settings for the container and `make run`; every knob comes from the environment.

gunicorn -c api/gunicorn.conf.py 'api:create_app()'
"""

import gc
import os

# 0.0.0.0 in the container (the ALB reaches the task's ENI); `make run` binds 127.0.0.1.
bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# ECS sends SIGTERM and waits stopTimeout (30 s by default) before SIGKILL:
# finish in-flight requests well within it.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# Longer than the ALB's 60 s idle timeout, so the ALB closes idle connections first.
keepalive = 75
# The app writes one JSON line per request; gunicorn's access log would repeat it.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# Heartbeat files in memory, not on the container's overlay filesystem.
_SHM = "/dev/shm"  # noqa: S108 (gunicorn's documented choice for containers)
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
# No preload: each worker builds its own app and engine, so no pooled
# connection is ever shared across a fork.
preload_app = False
# Gunicorn's runtime control socket is one fixed path per user: several
# servers on one machine (tests, make run) would fight over it, and nothing here uses it.
control_socket_disable = True


def post_worker_init(worker: object) -> None:
    """Freeze what the worker has loaded (the app, its imports, SQLAlchemy's caches).

    Those objects live as long as the worker; frozen, Python's cyclic garbage
    collector stops re-scanning them on every full collection, so each request
    pays only for the objects it makes.
    """
    gc.freeze()
