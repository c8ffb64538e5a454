"""The studio: the Gradio page (:mod:`ui.page`, a module per tab in :mod:`ui.tabs`), the REST API
(:mod:`ui.rest`), and the small pieces they share (admin guard, formatting, video metrics). The
page never runs a model: it writes rows through :mod:`service` and follows them.
"""
