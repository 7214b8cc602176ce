"""What the helper processes of a run (DataLoader workers, the cache build's pool) do about signals."""
import signal


def ignore_interrupts(*_):
    """Ignore SIGINT in this helper process: Ctrl-C reaches every process of the terminal's group, and only
    the run's main process handles it (it stops its helpers itself). Any arguments (a DataLoader's worker
    id) are ignored, so that it serves as a worker_init_fn and as a Pool initializer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
