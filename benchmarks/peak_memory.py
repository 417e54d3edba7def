"""Peak memory of this process on CPU: anonymous resident memory (RssAnon, the process's own
pages, not memory-mapped files), sampled by a thread every few milliseconds. ru_maxrss is a
lifetime peak and also counts mapped file pages, so it cannot isolate one phase of a run."""

from __future__ import annotations

import threading


def rss_anon() -> int:
    """This process's anonymous resident memory in bytes (Linux /proc)."""
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024


class AnonPeak:
    """Samples `rss_anon()` from construction until `stop()`, which returns the peak."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.peak = rss_anon()
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_anon())
