"""Programs that run *inside* the lab's pods, as a platform's own images run them.

Each module here is a standalone program for the pod's interpreter (Debian's
``/usr/bin/python3``, mounted read-only from the host): standard library only, no
import of ``chaos`` or ``chaoslab``, nothing done at import time. The lab mounts the
file into the pod; the project's tests import the same file for its pure functions.
"""
