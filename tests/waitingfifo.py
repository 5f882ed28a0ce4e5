"""A FIFO whose writer waits in open() for a reader, linked in where a reader must not open it.

Root-run code must not open for reading whatever a less privileged owner links a file name
to (a device's open has side effects; a FIFO's open lets its waiting writer go): the test
body reads the linked name, and the writer must still be waiting afterwards.
"""
import contextlib
import os
import subprocess
import time

import pytest


@contextlib.contextmanager
def writer_waiting_behind(directory, link):
    """directory/fifo with a writer blocked in open(), and directory/link -> fifo; after the
    body, the writer must still be waiting (nobody opened the FIFO)."""
    directory = str(directory)
    fifo = os.path.join(directory, "fifo")
    os.mkfifo(fifo)
    os.symlink("fifo", os.path.join(directory, link))
    writer = subprocess.Popen(["sh", "-c", "echo x > fifo"], cwd=directory)
    try:
        for _ in range(1000):                       # until the writer waits in open() for a reader
            with open("/proc/%d/wchan" % writer.pid) as f:
                if f.read() == "wait_for_partner":
                    break
            time.sleep(0.01)
        yield
        with pytest.raises(subprocess.TimeoutExpired):
            writer.wait(1)
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))     # lets the writer go
        writer.wait(10)
