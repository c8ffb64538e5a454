"""The Celery app: broker from ``PWAN_BROKER_URL``, queues ``infer`` and ``train``.

The database is the truth and the broker only carries row ids, so there is no result backend.
Long tasks follow Celery's advice: ``acks_late`` (a message is acknowledged when the task ends,
so a worker that dies mid-run does not lose it), ``task_reject_on_worker_lost``, prefetch 1
(a worker holds only the message it is running), and, on Redis, a visibility timeout above the
longest job. Run workers with ``--pool solo`` (or prefork ``--concurrency 1``): one model per
process, and with solo the process that ``kill -9`` hits is the one running the task.
"""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from db.session import prepare_sqlite_file
from settings import get_settings, reload_settings
from workers import config

app = Celery("pwan", include=["workers.tasks", "workers.lifecycle"])


def _set_sql_broker_polling(seconds: float) -> None:
    # Celery's virtual transports poll an idle queue once a second. The interval is a class
    # attribute; passing it in broker_transport_options would hand it to create_engine().
    from kombu.transport import sqlalchemy as kombu_sqlalchemy

    kombu_sqlalchemy.Transport.polling_interval = seconds


def celery_settings(broker_url: str) -> dict:
    """The Celery configuration for a broker URL."""
    is_sql = broker_url.startswith(("sqla+", "sqlalchemy+"))
    is_redis = broker_url.startswith(("redis://", "rediss://", "redis+socket://"))
    settings = dict(
        broker_url=broker_url,
        broker_connection_retry_on_startup=True,
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # One model per process, and kill -9 hits the process running the task. A plain
        # ``celery -A workers worker -Q infer`` gets this; --pool/--concurrency override it.
        worker_pool="solo",
        worker_concurrency=1,
        task_default_queue=config.INFER_QUEUE,
        task_queues=(Queue(config.INFER_QUEUE), Queue(config.TRAIN_QUEUE)),
        task_routes={
            "workers.tasks.generate": {"queue": config.INFER_QUEUE},
            "workers.tasks.finetune": {"queue": config.TRAIN_QUEUE},
        },
        task_create_missing_queues=True,
        worker_send_task_events=False,
        # Remote control needs fanout exchanges, which the SQL transport does not have.
        worker_enable_remote_control=not is_sql,
        broker_transport_options={},
    )
    if is_redis:
        settings["broker_transport_options"] = {
            "visibility_timeout": get_settings().visibility_timeout,
            "socket_connect_timeout": 5,
        }
    if is_sql and "+sqlite" in broker_url:
        # Passed to create_engine(): wait for the file lock instead of failing at once.
        settings["broker_transport_options"] = {"connect_args": {"timeout": 30}}
    return settings


def configure(broker_url: str | None = None) -> Celery:
    """(Re)configure the app from the environment or for ``broker_url``.

    Called at import. Call it again after changing ``PWAN_*`` variables in a running process
    (tests, benchmarks): the settings are read again, and pooled broker connections to the old
    URL are closed.
    """
    reload_settings()
    url = broker_url or get_settings().broker_url
    if url.startswith(("sqla+", "sqlalchemy+")):
        _set_sql_broker_polling(get_settings().broker_poll_seconds)
        prepare_sqlite_file(url.split("+", 1)[1])
    if app.conf.get("broker_url") and app.conf.broker_url != url:
        _close_broker_connections()
    app.conf.update(celery_settings(url))
    return app


def _close_broker_connections() -> None:
    pool = getattr(app, "_pool", None)
    if pool is not None:
        pool.force_close_all()
        app._pool = None
    amqp = app.__dict__.get("amqp")
    if amqp is not None and getattr(amqp, "_producer_pool", None) is not None:
        amqp._producer_pool.force_close_all()
        amqp._producer_pool = None


configure()
