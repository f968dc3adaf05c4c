"""Crops of the coming steps, read in the background while the current step runs.

A batch depends only on (seed, step) (data.global_batch), so the crops of steps
s+1..s+depth can be read while step s trains without changing a single result.
One producer thread walks the steps in order and calls MelCache.crops once per
step (in fp16, as stored, into pinned memory when the device is a GPU); crops
spreads each batch's reads over a small thread pool, so that many reads are in
flight when the cache is not in the page cache. The consumer copies the fp16
batch to the device and converts it to fp32 there.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .data import MelCache, expand_half, global_batch

PREFETCH = 4  # steps read ahead
HINT_AHEAD = 8  # steps whose reads the kernel is asked to start (POSIX_FADV_WILLNEED)
READ_THREADS = 16  # reads in flight per process: a disk serves random reads faster with a deep queue


class CropLoader:
    """The local slice [lo, hi) of each global batch of steps start..stop-1, as
    fp32 [hi - lo, 1, n_mels, crop_frames] on `device` (not normalised),
    bit-identical to cache.crops of global_batch(...) at that step.

    get(step) must be called for start, start+1, ... in order. depth=0 reads
    each batch when asked, in the caller's thread. Use as a context manager, or
    call close(): it stops the producer and the read threads."""

    def __init__(self, cache: MelCache, batch_size: int, crop_frames: int, seed: int, lo: int, hi: int,
                 start: int, stop: int, device: torch.device | str = "cpu", depth: int = PREFETCH,
                 threads: int = READ_THREADS):
        self.cache, self.batch_size, self.crop_frames, self.seed = cache, batch_size, crop_frames, seed
        self.lo, self.hi, self.next_step, self.stop = lo, hi, start, stop
        self.device = torch.device(device)
        self.depth = max(0, depth)
        pin = self.device.type == "cuda" and torch.cuda.is_available()
        shape = (hi - lo, crop_frames, cache.mel.n_mels)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="crop-read") if threads > 1 and stop > start else None
        self._free: queue.Queue = queue.Queue()  # buffers the producer may fill, each with the event of its last copy
        for _ in range(self.depth + 1 if self.depth else 1):
            self._free.put([torch.empty(shape, dtype=torch.float16, pin_memory=pin), None])
        # At most `depth` batches wait (on the CPU a batch frees its buffer as soon as it is converted).
        self._ready: queue.Queue = queue.Queue(maxsize=max(1, self.depth))
        self._stopping = threading.Event()
        self._thread = None
        if self.depth and stop > start:
            self._thread = threading.Thread(target=self._produce, name="crop-prefetch", daemon=True)
            self._thread.start()

    def _read(self, step: int, slot: list) -> tuple[torch.Tensor, list[int]]:
        """The step's fp16 crops and their padded rows; on the CPU already
        converted to fp32 (here, off the training thread), the slot then free."""
        if slot[1] is not None:  # the device copy of this buffer's last batch must be done before overwriting it
            slot[1].synchronize()
            slot[1] = None
        idx, u = global_batch(len(self.cache), self.batch_size, step, self.seed)
        idx, u = idx[self.lo : self.hi], u[self.lo : self.hi]
        # Positional, so that a wrapper of crops(self, *args) (tests inject faults so) passes every argument on.
        x16 = self.cache.crops(idx, u, self.crop_frames, True, slot[0], self.pool)
        padded = self.cache.padded_rows(idx, self.crop_frames)
        if self.device.type == "cpu":
            x16 = expand_half(x16, self.cache.pad_value, padded)
            self._free.put(slot)
        return x16, padded

    def _hint(self, step: int) -> None:
        """Start the reads of a coming step in the kernel (see MelCache.will_read)."""
        idx, u = global_batch(len(self.cache), self.batch_size, step, self.seed)
        self.cache.will_read(idx[self.lo : self.hi], u[self.lo : self.hi], self.crop_frames)

    def _produce(self) -> None:
        hinted = self.next_step
        for step in range(self.next_step, self.stop):
            slot = None
            while slot is None:
                if self._stopping.is_set():
                    return
                with contextlib.suppress(queue.Empty):
                    slot = self._free.get(timeout=0.1)
            if self._stopping.is_set():
                return
            try:
                # The kernel reads HINT_AHEAD steps ahead, all at once; crops() then mostly finds the page cache.
                while hinted < min(self.stop, step + HINT_AHEAD):
                    self._hint(hinted)
                    hinted += 1
                item = (step, slot, self._read(step, slot), None)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
                item = (step, slot, None, e)
            while not self._stopping.is_set():
                try:
                    self._ready.put(item, timeout=0.1)
                    break
                except queue.Full:
                    pass
            if item[3] is not None:
                return

    def get(self, step: int) -> torch.Tensor:
        """The batch of `step` on the device, fp32."""
        if step != self.next_step or step >= self.stop:
            raise ValueError(f"CropLoader: asked for step {step}, expected {self.next_step} (steps up to {self.stop - 1})")
        self.next_step += 1
        if self._thread is None:
            slot = self._free.get()
            got, error = self._read(step, slot), None
        else:
            while True:
                try:
                    at, slot, got, error = self._ready.get(timeout=1.0)
                    break
                except queue.Empty:
                    if not self._thread.is_alive():
                        raise RuntimeError("CropLoader: the prefetch thread stopped without a batch") from None
            assert at == step, (at, step)
        if error is not None:
            self._free.put(slot)
            raise error
        x, padded = got
        if self.device.type == "cpu":
            return x
        x16, x = x, x.to(self.device, non_blocking=True)
        if x16.device.type == "cpu" and x.device.type == "cuda":
            slot[1] = torch.cuda.Event()
            slot[1].record()
        self._free.put(slot)
        return expand_half(x, self.cache.pad_value, padded)  # fp32 on the device

    def close(self) -> None:
        """Stop reading ahead and wait for the threads to end."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> CropLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
