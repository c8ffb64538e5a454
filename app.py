"""The studio: the Gradio page and the REST API on one server, with an embedded worker.

    python app.py                      # http://127.0.0.1:7860 , worker + SQLite broker + db
    python app.py --host 0.0.0.0 --port 8000
    python app.py --no-worker          # only the page and the API (workers run elsewhere)

Configuration comes from the environment (PWAN_DATA_DIR, PWAN_DATABASE_URL, PWAN_BROKER_URL,
PWAN_MODEL, PWAN_ADMIN_PASSWORD, ...): see settings.py. Never shares a public link.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "static"


def create_app(worker=None):
    """The FastAPI app: ``/api/...`` (OpenAPI at ``/openapi.json``), ``/static``, the page at ``/``."""
    import gradio as gr
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from ui.page import build_page
    from ui.rest import build_router, install_error_handlers
    from workers import config

    app = FastAPI(
        title="Pyramidal Wan studio API",
        version="1.0",
        description="Queue text-to-video runs (original or pyramidal Wan2.1), follow them, "
                    "compare them. Admin routes need the admin password (HTTP Basic or Bearer).",
    )
    install_error_handlers(app)
    app.include_router(build_router(worker))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return gr.mount_gradio_app(
        app, build_page(), path="/",
        theme=gr.themes.Soft(primary_hue="indigo", secondary_hue="amber", neutral_hue="slate"),
        css_paths=[STATIC / "studio.css"],
        head='<script src="/static/studio.js" defer></script>',
        favicon_path=STATIC / "logo.svg",
        allowed_paths=[str(config.outputs_dir())],
        footer_links=["api"],
        ssr_mode=False,
        show_error=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The Pyramidal Wan studio (page + REST API).")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ap.add_argument("--no-worker", action="store_true", help="do not start the embedded worker")
    args = ap.parse_args(argv)
    from settings import SettingsError, get_settings

    try:
        get_settings()  # a malformed PWAN_* variable stops the start, not a request later
    except SettingsError as exc:
        ap.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    import service
    import workers
    from db.session import init_db
    from workers import config

    workers.configure()
    init_db()
    for row in service.register_shipped_checkpoints():
        print(f"registered the shipped checkpoint {row['name']} (over {row['base']})", flush=True)
    worker = None
    if not args.no_worker:
        from workers.embedded import EmbeddedWorker

        worker = EmbeddedWorker()
        worker.start()
        worker.supervise()
    try:
        app = create_app(worker)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"Pyramidal Wan studio: http://{host}:{args.port}/  (API docs: /docs; data: {config.data_dir()}"
              f"; worker: {'embedded' if worker else 'none'})", flush=True)
        # proxy_headers off: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default;
        # the app decides whom to believe (PWAN_TRUSTED_PROXIES, see ui.auth.client_key)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    finally:
        if worker is not None:
            worker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
