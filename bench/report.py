"""The bench's report: medians and ratios, the Markdown table, the machine, docs/performance.md."""
import os
import platform
import shutil
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "performance.md")
DOC_START, DOC_END = "<!-- bench:start -->", "<!-- bench:end -->"


def fmt(x):
    """3 significant digits at most, whole numbers from 100 up."""
    return "%.0f" % x if x >= 100 else "%.3g" % x


def build_rows(rows_wanted, samples, na):
    """Medians of each side, and the median of the per-run ratios (pairs measured together)."""
    rows = []
    for measure, q, peer, p in rows_wanted:
        row = {"measure": measure, "peer": peer, "qmailpy_quantity": q, "peer_quantity": p}
        if q in na or p in na or q not in samples or p not in samples:
            row["na"] = na.get(q) or na.get(p) or "not measured"
            row.update(qmailpy=None, peer_value=statistics.median(samples[p]) if p in samples else None,
                       ratio=None, ratios=[])
        else:
            ratios = [a / b for a, b in zip(samples[q], samples[p])]
            row.update(qmailpy=statistics.median(samples[q]), peer_value=statistics.median(samples[p]),
                       ratio=statistics.median(ratios), ratios=ratios)
        rows.append(row)
    return rows


def table(rows):
    lines = ["| measure | qmailpy | peer | peer value | ratio |", "|---|---:|---|---:|---:|"]
    for r in rows:
        if r["ratio"] is None:
            lines.append("| %s | n/a (%s) | %s | %s | n/a |" % (
                r["measure"], r["na"].replace("|", "/"), r["peer"],
                fmt(r["peer_value"]) if r["peer_value"] is not None else "n/a"))
        else:
            lines.append("| %s | %s | %s | %s | %s× |" % (r["measure"], fmt(r["qmailpy"]), r["peer"],
                                                         fmt(r["peer_value"]), fmt(r["ratio"])))
    return "\n".join(lines) + "\n"


def create_cost(tmp, files=200):
    """CPU ms per file created (open O_CREAT|O_EXCL, close) in a new directory of the tree: on
    this project's machines it moves from 0.03 to 1 ms between directories and hours
    (bench/settings.py), and qmail's queue creates more files per message than Postfix's."""
    import tempfile
    d = tempfile.mkdtemp(prefix="create-cost.", dir=tmp)
    try:
        start = time.thread_time()
        for i in range(files):
            os.close(os.open(os.path.join(d, str(i)), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return round((time.thread_time() - start) * 1000 / files, 3)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def file_system(path):
    """What `path` is on, for the table's header: type and, for ext4, whether it has a journal.

    ext4 without a journal (this project's machines) passes over every inode freed in the
    last 60 s (360 s while its inode table block is still dirty) before it hands out a new
    one, so creating a file costs more the more files were deleted near it lately
    (bench/settings.py). `stat -f` calls ext4 "ext2/ext3"; /proc/self/mountinfo names it.
    """
    dev = os.stat(path).st_dev
    wanted = "%d:%d" % (os.major(dev), os.minor(dev))
    fstype = source = "?"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[2] == wanted and " - " in line:
                    fstype, source = line.split(" - ", 1)[1].split()[:2]
                    break
    except OSError:
        return "?"
    if fstype == "?":               # no mount with that device number (a btrfs subvolume, say)
        return "?"
    if fstype != "ext4":
        return "%s on %s%s" % (fstype, source, _backing(source))
    try:
        name = os.path.basename(os.readlink("/sys/dev/block/" + wanted))
        journal = any(j.rsplit("-", 1)[0] == name for j in os.listdir("/proc/fs/jbd2"))
    except OSError:
        journal = False         # no /proc/fs/jbd2 at all: no ext4 journal is running
    return "ext4 %s on %s%s" % ("with a journal" if journal else "without a journal", source, _backing(source))


def _backing(source):
    """For a loop device (bench/run.py --journal): what its image file is on."""
    if not source.startswith("/dev/loop"):
        return ""
    try:
        with open("/sys/block/%s/loop/backing_file" % os.path.basename(source)) as f:
            image = f.read().strip()
        return ", an image file on %s" % file_system(os.path.dirname(image))
    except OSError:
        return ""


def machine(tmp, vpy):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    postfix = subprocess.run(["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True)
    aio = subprocess.run([vpy, "-c", "import aiosmtpd; print(aiosmtpd.__version__)"],
                         capture_output=True, text=True)
    versions = {}
    for name, argv in (("clamd", ["clamd", "--version"]), ("spamd", ["spamd", "--version"])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()
            versions[name] = out[0].strip() if out else "?"
        except (OSError, subprocess.TimeoutExpired):
            versions[name] = "not installed"
    return {"nproc": subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip(),
            "cpu": cpu, "mem_mib": mem, "tmp_fs": file_system(tmp),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "kernel": platform.release(), "python": platform.python_version(),
            "postfix": postfix.stdout.strip() or "?", "aiosmtpd": aio.stdout.strip() or "?",
            "clamd": versions["clamd"], "spamd": versions["spamd"],
            "loadavg_at_end": open("/proc/loadavg").read().split()[:3],
            "create_ms_at_end": create_cost(tmp),
            "python3_on_path": shutil.which("python3"), "venv_python": os.path.realpath(vpy)}


def write_doc(block):
    """Replace the bench block of docs/performance.md, keeping the prose around it."""
    text = open(DOC).read() if os.path.exists(DOC) else "# Performance\n\n"
    if DOC_START not in text:
        text = text.rstrip("\n") + "\n\n%s\n%s\n" % (DOC_START, DOC_END)
    head, rest = text.split(DOC_START, 1)
    tail = rest.split(DOC_END, 1)[1]
    with open(DOC + ".tmp", "w") as f:
        f.write(head + DOC_START + "\n" + block + DOC_END + tail)
    os.rename(DOC + ".tmp", DOC)
