"""Stopping a run cleanly: SIGINT/SIGTERM between steps or at once while it starts, non-finite
training, and another torchrun process lost.

The first SIGINT or SIGTERM asks the loop to stop after the step in progress (no file is left half
written: every write is atomic); a second one stops at once. While the run starts (the data read and
cached, the model built: nothing of the run is written yet) the first one stops it at once. The run
then exits with 128 + the signal number (130 for SIGINT, 143 for SIGTERM), 3 when training became
non-finite, or 4 when another process of its torchrun group exited or cannot be reached.
"""
import contextlib
import signal

from utils import distributed

NON_FINITE_EXIT_CODE = 3
LOST_PEER_EXIT_CODE = 4
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):
    """The run was stopped by a signal (`signal_number`); `before_training` when it came while the run
    started, before anything of it was written. A BaseException, as KeyboardInterrupt is: a signal raises
    it wherever the code is, and an `except Exception` there must not take it for an error of its own."""

    def __init__(self, signal_number, before_training=False):
        super().__init__(f"stopped by {signal.Signals(signal_number).name}")
        self.signal_number = signal_number
        self.before_training = before_training

    @property
    def exit_code(self):
        """128 + the signal number, as a shell reports a process killed by it."""
        return 128 + self.signal_number


class NonFiniteTraining(Exception):
    """Training produced a NaN or an infinity: the message names the epoch, the step and what."""


class StopSignals:
    """Context manager that turns SIGINT and SIGTERM into a stop request (`requested`, the signal
    number, or None) that the training loop checks after each step; a second signal, or the first one
    inside `at_once()`, raises RunInterrupted at once. The previous handlers are restored on exit."""

    def __init__(self):
        self.requested = None
        self.stops_at_once = False
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
        """Signal handler: record the first request; a second one, or one inside `at_once()`, interrupts
        immediately."""
        if self.requested is not None or self.stops_at_once:
            raise RunInterrupted(signal_number)
        self.requested = signal_number

    @contextlib.contextmanager
    def at_once(self):
        """A with-block that a signal interrupts at once (RunInterrupted, raised where the code is), for
        work that leaves nothing half done when interrupted anywhere; a stop already requested raises on
        entry."""
        if self.requested is not None:
            raise RunInterrupted(self.requested)
        previous, self.stops_at_once = self.stops_at_once, True
        try:
            yield self
        finally:
            self.stops_at_once = previous

    def check(self):
        """Raise RunInterrupted when a stop was requested (called between steps). Under torchrun every
        process calls this after each step and they agree (a CPU collective): when any of them got a
        signal, all stop after the same step, so none waits for the others in a collective."""
        requested = distributed.largest_over_processes(self.requested or 0) or None
        if requested is not None:
            raise RunInterrupted(requested)


def lost_peer_cause(error):
    """"another torchrun process exited or cannot be reached (<reason>)" when `error` is a collective
    operation's failure to reach another process of the group (utils.distributed.peer_failure), else
    None."""
    reason = distributed.peer_failure(error)
    return None if reason is None else f"another torchrun process exited or cannot be reached ({reason})"
