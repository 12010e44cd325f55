"""Memory the machine can give now: read before anything large is allocated, so that a job or a
file too big for it is refused with the figures instead of dying in an allocation."""

from __future__ import annotations


def available_bytes() -> int | None:
    """Memory the OS can give now (Linux /proc/meminfo; None where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
