"""Scan-resistant eviction policies for LRUCache: segmented LRU and W-TinyLFU (count-min sketch).

A policy only orders keys; the cache keeps the values. Every method runs under the cache's lock.
Hits arrive through `record` (a bounded deque's append, lock-free and atomic under the GIL) and
are replayed by `drain` before any decision that depends on order or frequency, as Caffeine
replays its read buffers.
# Ref: https://arxiv.org/abs/1512.00727 (TinyLFU: A Highly Efficient Cache Admission Policy)
# Ref: https://github.com/ben-manes/caffeine/wiki/Efficiency
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Final

POLICIES: Final[tuple[str, ...]] = ("lru", "slru", "tinylfu")
"""Policies `LRUCache(policy=...)` accepts; "lru" is the cache's own built-in order."""

READ_BUFFER_SIZE: Final = 256
"""Hits remembered between two replays. When full the oldest are dropped (a sampling loss)."""

PROTECTED_FRACTION: Final = 0.8
"""Share of the main space kept for keys read again after admission (Caffeine's split)."""

WINDOW_FRACTION: Final = 0.01
"""W-TinyLFU: share of the capacity given to the admission window, a plain LRU for new keys."""

SKETCH_MAX_WIDTH_BITS: Final = 20
"""The sketch has at most 2^20 counters per row (4 MiB in all), however large the cache."""

SAMPLE_FACTOR: Final = 20
"""The sketch halves every counter after `SAMPLE_FACTOR x capacity` increments (aging)."""

_COUNTER_MAX: Final = 15
_MIX: Final = 0x9E3779B97F4A7C15  # an odd 64-bit constant (golden ratio) to spread int hashes
_MIX2: Final = 0xBF58476D1CE4E5B9  # a second odd constant (splitmix64's) for rows 3 and 4
_MASK64: Final = (1 << 64) - 1
_HALVE: Final = bytes(i >> 1 for i in range(256))  # bytes.translate table: halves every counter


class FrequencySketch:
    """Count-min sketch of recent key frequencies: 4 rows of saturating counters (0-15).

    An estimate never undercounts the increments since the last halving (a collision can only
    overcount). Memory is fixed at construction: 4 x width bytes, width the power of two at or
    above the capacity (at least 1,024), capped at 2^`SKETCH_MAX_WIDTH_BITS`. After
    `SAMPLE_FACTOR x capacity` increments every counter is halved, so old popularity fades.

    Thread safety: none of its own; the owning cache calls it under its lock.
    """

    __slots__ = ("_additions", "_bits", "_mask", "_sample_size", "_table")

    def __init__(self, capacity: int) -> None:
        # At least 1,024 counters a row: a small cache still sees many more keys than it holds.
        self._bits = min(max(10, (capacity - 1).bit_length()), SKETCH_MAX_WIDTH_BITS)
        self._mask = (1 << self._bits) - 1
        self._table = bytearray(4 << self._bits)
        self._sample_size = SAMPLE_FACTOR * max(capacity, 1)
        self._additions = 0

    # The four counter indexes come from one 64-bit mix of hash(key), written out inline in
    # increment and frequency: a helper returning a tuple cost about 40% more per call.

    def increment(self, key: Hashable) -> None:
        """Count one access of `key`; halve every counter once the sample is full."""
        h = (hash(key) * _MIX) & _MASK64
        mask, bits, table = self._mask, self._bits, self._table
        low = h ^ (h >> 29)
        high = (h >> 32) ^ (h * _MIX2 & _MASK64) >> 31
        width = mask + 1
        i = low & mask
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = width + ((low >> bits) & mask)
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = 2 * width + (high & mask)
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        i = 3 * width + ((high >> bits) & mask)
        if table[i] < _COUNTER_MAX:
            table[i] += 1
        self._additions += 1
        if self._additions >= self._sample_size:
            self._table = bytearray(table.translate(_HALVE))
            self._additions //= 2

    def frequency(self, key: Hashable) -> int:
        """Estimated accesses of `key` since the last halvings (0-15)."""
        h = (hash(key) * _MIX) & _MASK64
        mask, bits, table = self._mask, self._bits, self._table
        low = h ^ (h >> 29)
        high = (h >> 32) ^ (h * _MIX2 & _MASK64) >> 31
        width = mask + 1
        return min(
            table[low & mask],
            table[width + ((low >> bits) & mask)],
            table[2 * width + (high & mask)],
            table[3 * width + ((high >> bits) & mask)],
        )

    def clear(self) -> None:
        """Forget every count."""
        self._table = bytearray(len(self._table))
        self._additions = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the counters (fixed at construction)."""
        return len(self._table)


def _first(segment: OrderedDict[Hashable, None], keep: Hashable) -> Hashable | None:
    # The least recent key of `segment` other than `keep` (at most one key is skipped).
    for key in segment:
        if key != keep:
            return key
    return None


_NONE: Final = object()


class SegmentedPolicy:
    """Segmented LRU, optionally behind a W-TinyLFU admission window and frequency filter.

    Keys live in exactly one segment, each an LRU order (least recent first):

    - window (W-TinyLFU only, `WINDOW_FRACTION` of capacity): every new key enters here;
    - probation: keys that left the window (SLRU: new keys), read at most once since;
    - protected (`PROTECTED_FRACTION` of the main space): keys read again while in probation.
      When it overflows, its least recent key goes back to probation.

    The victim is probation's least recent key (then protected's, then the window's). With a
    sketch (W-TinyLFU), when the window is full its least recent key is a candidate for the
    main space: it is admitted, and probation's victim evicted, only if the sketch says it
    was requested more often; otherwise the candidate itself is evicted. A one-time scan thus
    passes through the window without pushing out keys that are read again and again.

    Thread safety: none of its own; the owning cache calls every method but `record` under its
    lock. `record` is a deque append, atomic under the GIL.
    """

    __slots__ = (
        "_buffer",
        "_protected_cap",
        "_sketch",
        "_window_cap",
        "name",
        "probation",
        "protected",
        "record",
        "window",
    )

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        has_window = name == "tinylfu"
        self._window_cap = max(1, round(capacity * WINDOW_FRACTION)) if has_window else 0
        main = max(capacity - self._window_cap, 1)
        self._protected_cap = max(1, int(main * PROTECTED_FRACTION)) if main > 1 else 0
        self._sketch = FrequencySketch(capacity) if has_window else None
        self.window: OrderedDict[Hashable, None] = OrderedDict()
        self.probation: OrderedDict[Hashable, None] = OrderedDict()
        self.protected: OrderedDict[Hashable, None] = OrderedDict()
        self._buffer: deque[Hashable] = deque(maxlen=READ_BUFFER_SIZE)
        self.record = self._buffer.append

    @property
    def sketch(self) -> FrequencySketch | None:
        """The frequency sketch (W-TinyLFU), None for plain segmented LRU."""
        return self._sketch

    def drain(self) -> None:
        """Replay the hits recorded since the last drain, oldest first."""
        buffer = self._buffer
        touch = self.touch
        # At most what is there now: readers appending meanwhile must not keep the lock held.
        for _ in range(len(buffer)):
            touch(buffer.popleft())

    def touch(self, key: Hashable) -> None:
        """A read or an overwrite of a stored key: count it and refresh its recency."""
        if self._sketch is not None:
            self._sketch.increment(key)
        if key in self.protected:
            self.protected.move_to_end(key)
        elif key in self.probation:
            del self.probation[key]
            self.protected[key] = None
            if len(self.protected) > self._protected_cap:
                demoted, _ = self.protected.popitem(last=False)
                self.probation[demoted] = None
        elif key in self.window:
            self.window.move_to_end(key)
        # else: removed since the hit was recorded; nothing to refresh.

    def insert(self, key: Hashable) -> None:
        """A new key was stored (room was made first with `victim`)."""
        if self._sketch is None:
            self.probation[key] = None
            return
        self._sketch.increment(key)
        self.window[key] = None
        if len(self.window) > self._window_cap:
            moved, _ = self.window.popitem(last=False)
            self.probation[moved] = None

    def victim(self, keep: Hashable = _NONE) -> Hashable:
        """Choose the next key to evict (never `keep`) and forget it; the cache is not empty."""
        sketch = self._sketch
        if sketch is not None and len(self.window) >= self._window_cap:
            candidate = _first(self.window, keep)
            main = _first(self.probation, keep)
            if main is None:
                main = _first(self.protected, keep)
            if candidate is not None and main is not None:
                del self.window[candidate]
                if sketch.frequency(candidate) > sketch.frequency(main):
                    self.probation[candidate] = None
                    self.remove(main)
                    return main
                return candidate
        for segment in (self.probation, self.protected, self.window):
            key = _first(segment, keep)
            if key is not None:
                del segment[key]
                return key
        msg = f"no key to evict in policy {self.name!r} (only {keep!r} is stored)"
        raise LookupError(msg)

    def remove(self, key: Hashable) -> None:
        """Forget `key` (deleted, expired or rejected by the cache)."""
        for segment in (self.probation, self.protected, self.window):
            if segment.pop(key, _NONE) is None:
                return

    def clear(self) -> None:
        """Forget every key and recorded hit; the sketch keeps its counts (they age out)."""
        self._buffer.clear()
        self.window.clear()
        self.probation.clear()
        self.protected.clear()

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)


def make_policy(name: str, capacity: int) -> SegmentedPolicy | None:
    """The policy object for `name`; None for "lru", which the cache runs itself."""
    return None if name == "lru" else SegmentedPolicy(name, capacity)
