"""The studio: the Gradio page (:mod:`ui.page`), the REST API (:mod:`ui.rest`), and the small
pieces they share (admin guard, formatting, video metrics). The page never runs a model: it
writes rows through :mod:`service` and follows them.
"""
