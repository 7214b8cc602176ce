"""What the helper processes of a run (DataLoader workers, the cache build's pool) do about signals: the
run's main process alone handles SIGINT and SIGTERM, and it ends its helpers itself. Both start as forks
of the main process, with its handlers (training.interrupts.StopSignals), which are replaced here."""
import signal


def ignore_stop_signals(*_):
    """Ignore SIGINT and SIGTERM in this DataLoader worker (its worker_init_fn; the worker id is ignored):
    Ctrl-C reaches every process of the terminal's group, and a cluster may send SIGTERM to every process
    of a job; the DataLoader of the main process tells its workers to end."""
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, signal.SIG_IGN)


def ignore_interrupts_and_end_on_sigterm():
    """Ignore SIGINT in this worker of a multiprocessing Pool (its initializer), and let SIGTERM end it:
    Pool.terminate() ends the workers with SIGTERM, and waits for them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
