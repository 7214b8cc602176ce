"""The tests' starter of entry-script processes (tests/entry_processes.py talks to it): a Python process
that imports the entry scripts' modules once, then forks one child per request, and each child runs the
entry script as `python SCRIPT ARGUMENTS...` would after those imports: in its own process group (its
own session when asked), in the request's folder, environment and umask, stdin /dev/null, stdout and
stderr into the request's files, `sys.argv` the script and its arguments, the request's fault code first.
The child runs the script at this file's top level, so that what ends it (an exception, a signal,
`sys.exit`) ends it as it ends a Python started for the script: traceback and exit 1, death by the
signal, the exit code; atexit handlers run.

Protocol: one JSON object per line on stdin, {"script", "module" (null, or run as `python -m MODULE`
instead of the script), "arguments", "cwd", "environment", "umask", "stdout", "stderr", "fault",
"new_session"}; on the reply stream (the stdout it was started with), one
JSON line per event: {"started": pid} for each request in order, {"ended": n, "returncode": code} as
the child of the n-th request (from 0) ends (negative: killed by that signal, as subprocess reports it;
numbered, not named by pid, because pids are reused). EOF on stdin ends it."""
import gc
import json
import os
import runpy
import select
import sys

import main_cross_cs  # noqa: F401  (the imports every child would otherwise repeat)
import main_cross_nyu  # noqa: F401
import training.report  # noqa: F401


def reap(replies, running):
    """Reply "ended" for every child that has ended; `running`: {pid: request number} of the children."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        replies.write(json.dumps({"ended": running.pop(pid), "returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        replies.flush()


def serve(requests, replies):
    """Fork a child for each request line read from the file descriptor `requests`; in the child, return
    the request; in the server, reply and reap until EOF, then exit."""
    pending, running, count = b"", {}, 0
    while True:
        readable, _, _ = select.select([requests], [], [], 0.05)
        if readable:
            chunk = os.read(requests, 65536)
            if not chunk:
                sys.exit(0)
            pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                os.close(requests)
                replies.close()
                return request
            running[pid], count = count, count + 1
            replies.write(json.dumps({"started": pid}) + "\n")
            replies.flush()
        reap(replies, running)


def become_the_entry_process(request):
    """Set up this child as the process of `python SCRIPT ARGUMENTS` started from the request's folder."""
    if request["new_session"]:
        os.setsid()
    else:
        os.setpgid(0, 0)
    os.chdir(request["cwd"])
    if request["umask"] is not None:
        os.umask(request["umask"])
    os.environ.clear()
    os.environ.update(request["environment"])
    for descriptor, path, flags in [(0, os.devnull, os.O_RDONLY),
                                    (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                    (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]:
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, descriptor)
        os.close(opened)
    if request["module"] is None:
        sys.argv = [request["script"], *request["arguments"]]
        sys.path[0] = os.path.dirname(request["script"])
    else:  # python -m MODULE: runpy sets argv[0] to the module's file
        sys.argv = ["-m", *request["arguments"]]
        sys.path[0] = os.getcwd()


if __name__ == "__main__":
    gc.freeze()  # the imported modules' objects: never collected, so no child's exit walks them (about 1 s each)
    reply_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # a stray print of the server goes to its stderr, not into the replies
    entry = serve(0, reply_stream)
    become_the_entry_process(entry)
    if entry["fault"] is not None:
        exec(compile(entry["fault"], "<fault>", "exec"), {"__name__": "__fault__"})
    if entry["module"] is None:
        runpy.run_path(entry["script"], run_name="__main__")
    else:
        runpy.run_module(entry["module"], run_name="__main__", alter_sys=True)
