"""Starting a delivery program (qmail-local, qmail-remote) as qmail's spawn does;
where it is found: qmailpy.paths.program_path."""


def start(args, fdmess, fdout, cwd, env, unable, ids=None, refused=None):
    """Popen a delivery program (message on fd 0, output and errors on fdout), or the
    report `unable` gives for a failed exec: (soft, hard) by errno, as qmail's spawn does;
    `refused`, when given, for a child that failed before its exec (the id switch, the chdir:
    Popen names cwd, not the program, in that error)."""
    import subprocess
    from qmailpy.errstr import error_temp
    try:
        return subprocess.Popen(args, stdin=fdmess, stdout=fdout, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, **(ids or {}))
    except OSError as e:
        if refused is not None and e.filename != args[0]:
            return refused
        soft, hard = unable
        return soft if error_temp(e) else hard
