"""The reading room's review page: the worklist in reading order, with a review action.

:func:`web.app.create_app` builds the FastAPI application (server-rendered Jinja2 pages and
a JSON API, both behind a login); ``cxr-triage web`` serves it. The page never imports
TensorFlow: the heatmap layer and the thumbnails are what the worker stored
(:mod:`web.overlays`); films are decoded from the archive by ingest (:mod:`web.films`).
"""
