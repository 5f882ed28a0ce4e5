"""Which pages a forked qmail-remote copies on write, and what lives on them.

usage: .venv/bin/python bench/forkpages.py [N]   (N deliveries, default 5; the last one is described)

Not part of `make bench`: a narrow driver for the one cost qmail-rspawn's
forked deliveries cannot shed (docs/performance.md). As qmail-rspawn does
(qmailpy.spawn.fork), this process preloads qmail-remote's modules and forks
a child per delivery of one queued 2 KB message into Postfix's smtp-sink on
a free 127.0.0.1 port. At the end of its delivery the child lists its
writable pages that are now its own (/proc/self/pagemap: present and
exclusively mapped, bit 56), which were shared with this process at the fork
or were new, and finds the objects the garbage collector knows (and what
they refer to) on each of those pages, by id(). It prints the child's page
faults, the copied pages by mapping, and per page the type with the most
objects on it.
"""
import collections
import gc
import os
import resource
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
import spawnmodes  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
PRESENT, EXCLUSIVE = 1 << 63, 1 << 56
MARK = b"\n--forkpages--\n"       # between the delivery's report and the description


def writable_maps():
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if "w" in fields[1]:
                out.append((start // PAGE, end // PAGE, os.path.basename(fields[5]) if len(fields) > 5 else "[anon]"))
    return out


def own_pages(maps):
    """Page numbers of the writable pages this process alone maps."""
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        pages = set()
        for first, end, _ in maps:
            data = os.pread(fd, (end - first) * 8, first * 8)
            for i, (v,) in enumerate(struct.iter_unpack("Q", data)):
                if v & PRESENT and v & EXCLUSIVE:
                    pages.add(first + i)
        return pages
    finally:
        os.close(fd)


def describe(faults):
    """What the child writes to fd 2 at the end of its delivery (the report pipe's other end)."""
    maps = writable_maps()
    pages = own_pages(maps)
    gc.unfreeze()
    known = {}
    for o in gc.get_objects():
        known[id(o)] = o
        for r in gc.get_referents(o):
            known.setdefault(id(r), r)
    on_page = collections.defaultdict(list)
    for address, o in known.items():
        on_page[address // PAGE].append(type(o).__name__)
    by_map, by_type, unknown = collections.Counter(), collections.Counter(), 0
    for page in pages:
        by_map[next((name for first, end, name in maps if first <= page < end), "?")] += 1
        names = on_page.get(page)
        if names:
            by_type[collections.Counter(names).most_common(1)[0][0]] += 1
        else:
            unknown += 1
    return ("page faults %d; pages now the child's own: %d\nby mapping: %s\nby the commonest type on the "
            "page: %s; no object the collector knows: %d\n"
            % (faults, len(pages), ", ".join("%s %d" % kv for kv in by_map.most_common(8)),
               ", ".join("%s %d" % kv for kv in by_type.most_common(15)), unknown))


def deliver(home, mess, last):
    from qmailpy.spawn import fork
    fd = os.open(mess, os.O_RDONLY)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        import qmailpy.remote.main as remote
        real = remote.main

        def main():
            try:
                return real()
            finally:
                sys.stdout.flush()
                if last:
                    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    os.write(2, MARK + describe(faults).encode())
        remote.main = main
        args = [os.fsencode(fork.beside_me("qmail-remote")), b"remote.example", b"a@spawn.example",
                b"r@remote.example"]
        os._exit(fork._child("qmailpy.remote.main:main", args, fd, w, home, os.environ, (111, 100), None))
    os.close(w)
    os.close(fd)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    os.waitpid(pid, 0)
    report, _, described = out.partition(MARK)
    if b"K" not in report:
        raise SystemExit("delivery failed: %r" % report)
    return described.decode()


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with spawnmodes.preloaded_remote("qmailpy-forkpages.") as (home, mess):
        for i in range(n):
            described = deliver(home, mess, i == n - 1)
        print(described, end="")


if __name__ == "__main__":
    main()
