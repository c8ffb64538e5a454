"""The page's tabs, a module each: its components (a dataclass), its handlers (methods that return
``{component: value}``), ``build`` to lay it out and ``wire`` to attach its events. What the tabs
share (page-wide state, errors, model choices) is in :mod:`ui.tabs.common`; pure formatting of rows
is in :mod:`ui.views`; :mod:`ui.page` composes the tabs.
"""
