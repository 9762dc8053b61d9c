"""Root wiring of the harness's pytest plugin.

Installed (``pip install -e .``), the plugin arrives through the ``pytest11`` entry
point; run from a bare source tree, it is wired here instead — never both, since pytest
refuses a plugin registered twice.
"""

from importlib.metadata import entry_points

if not any(ep.value == "chaos.plugin" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["chaos.plugin"]
