"""Stopping a training run cleanly on Ctrl-C (SIGINT) or a cluster scheduler's SIGTERM (its time limit,
`scancel`): the first signal is recorded and the run stops after the optimizer step in progress, saving a
checkpoint that `--resume` continues from; a second signal acts as it would without retina (Ctrl-C
raises KeyboardInterrupt at once, SIGTERM ends the process).

Data-loading workers ignore both signals (`ignore_stop_signals`, their `worker_init_fn`): a terminal's
Ctrl-C and a scheduler's SIGTERM reach every process of the job, and a worker that died of it would fail
the batch the main process is waiting for instead of letting it finish the step. The workers still end
with the main process (PyTorch's loader shuts them down, and they watch their parent).
"""

from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """`signal`: the number of the first stop signal received, or None."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    @property
    def name(self) -> Optional[str]:
        return signal.Signals(self.signal).name if self.signal is not None else None


@contextmanager
def stop_on_signals(announce: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM are recorded in the yielded StopRequest instead of acting;
    the previous handlers come back at the first signal (so a second one acts) and when the block ends.
    Outside the main thread (where Python cannot handle signals) nothing is installed."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def record(number: int, frame) -> None:
        if request.signal is None:
            request.signal = number
        for stop in STOP_SIGNALS:  # the next signal of either kind acts as without retina
            signal.signal(stop, _handler_or_default(previous[stop]))
        if announce:
            again = "Ctrl-C" if number == signal.SIGINT else "it"
            print(f"\n{signal.Signals(number).name}: stopping after this step and saving checkpoint.pt "
                  f"(send {again} again to stop at once)", file=sys.stderr, flush=True)

    for number in STOP_SIGNALS:
        signal.signal(number, record)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, _handler_or_default(handler))


def _handler_or_default(handler):
    return signal.SIG_DFL if handler is None else handler  # None: installed outside Python


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the worker ignores SIGINT and SIGTERM (module docstring)."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
