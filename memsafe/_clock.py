"""Clock type shared by memsafe containers, injectable so tests never sleep."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""A zero-argument function returning seconds from a monotonic origin."""

monotonic: Clock = time.monotonic
