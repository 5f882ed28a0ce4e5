"""A file system with a journal for the bench's tree: `bench/run.py --journal`.

This project's machines run ext4 without a journal, where creating a file costs
more the more files were deleted near it in the last minutes (bench/settings.py).
A mail host would not run so, and the ratios against Postfix depend on it:
qmail's queue creates and deletes more inodes per message than Postfix's. With
--journal the bench makes an ext4 image with its default journal (a sparse file
beside where its tree would go), mounts it through a loop device and puts the
whole tree there, every peer included, so that both kinds of file system can be
measured on one machine. The image's own writes go to the file system under it:
its fsync is a journal commit followed by a flush of the image file. Needs root
(mount); fails rather than measure something else.
"""
import contextlib
import os
import shutil
import subprocess
import tempfile
import time

IMAGE_BYTES = 8 << 30          # sparse: only what the bench writes takes room
INODES = 1 << 20               # the held-messages phase alone makes ~40,000 files per run


class JournalError(Exception):
    pass


def _run(argv):
    try:
        got = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise JournalError("%s: %s" % (argv[0], e)) from None
    if got.returncode:
        raise JournalError("%s: %s" % (" ".join(argv), (got.stderr or got.stdout).strip()))


@contextlib.contextmanager
def journaled_tree(parent=None):
    """Yield a directory on a freshly made, loop-mounted ext4 with a journal; unmount and
    remove it all afterwards."""
    if os.geteuid() != 0:
        raise JournalError("--journal needs root (it mounts a loop image)")
    for tool in ("mkfs.ext4", "mount", "umount"):
        if not shutil.which(tool):
            raise JournalError("--journal needs %s" % tool)
    top = tempfile.mkdtemp(prefix="qmailpy-bench-journal.", dir=parent)
    os.chmod(top, 0o755)           # qmail's users walk through it to their homes, as through /tmp
    image, mnt = os.path.join(top, "ext4.img"), os.path.join(top, "mnt")
    mounted = False
    try:
        with open(image, "wb") as f:
            f.truncate(IMAGE_BYTES)
        _run(["mkfs.ext4", "-q", "-F", "-N", str(INODES), "-O", "has_journal", image])
        os.mkdir(mnt)
        _run(["mount", "-o", "loop", image, mnt])
        mounted = True
        os.chmod(mnt, 0o755)
        yield mnt
    finally:
        if mounted:
            for _ in range(10):            # a server stopped a moment ago may still hold a file
                try:
                    _run(["umount", mnt])
                    break
                except JournalError:
                    time.sleep(0.5)
            else:                          # detach it anyway: the image goes with the tree below
                subprocess.run(["umount", "-l", mnt], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
