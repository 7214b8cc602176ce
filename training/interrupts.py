"""Stopping a run cleanly: SIGINT/SIGTERM between steps, and non-finite training.

The first SIGINT or SIGTERM asks the loop to stop after the step in progress (no file is left half
written: every write is atomic); a second one stops at once. The run then exits with 128 + the
signal number (130 for SIGINT, 143 for SIGTERM), or 3 when training became non-finite.
"""
import signal

from utils import distributed

NON_FINITE_EXIT_CODE = 3
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(Exception):
    """The run was stopped by a signal (`signal_number`)."""

    def __init__(self, signal_number):
        super().__init__(f"stopped by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number

    @property
    def exit_code(self):
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + self.signal_number


class NonFiniteTraining(Exception):
    """Training produced a NaN or an infinity: the message names the epoch, the step and what."""


class StopSignals:
    """Context manager that turns SIGINT and SIGTERM into a stop request (`requested`, the signal
    number, or None) that the training loop checks after each step; a second signal raises
    RunInterrupted at once. The previous handlers are restored on exit."""

    def __init__(self):
        self.requested = None
        self.previous_handlers = {}

    def __enter__(self):
        for signal_number in HANDLED_SIGNALS:
            self.previous_handlers[signal_number] = signal.signal(signal_number, self.handle)
        return self

    def __exit__(self, *exception):
        for signal_number, handler in self.previous_handlers.items():
            signal.signal(signal_number, handler)
        return False

    def handle(self, signal_number, frame):
        """Signal handler: record the first request; a second one interrupts immediately."""
        if self.requested is not None:
            raise RunInterrupted(signal_number)
        self.requested = signal_number

    def check(self):
        """Raise RunInterrupted when a stop was requested (called between steps). Under torchrun every
        process calls this after each step and they agree (a CPU collective): when any of them got a
        signal, all stop after the same step, so none waits for the others in a collective."""
        requested = distributed.largest_over_processes(self.requested or 0) or None
        if requested is not None:
            raise RunInterrupted(requested)
