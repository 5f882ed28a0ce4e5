"""Print control values, one per line, for shell run scripts.

usage: python3 -IS /path/to/qmailpy/install/ctlvalue.py HOME NAME...
       python3 -IS /path/to/qmailpy/install/ctlvalue.py --present HOME NAME...

qmail-smtpd's run script reads tcpsessioncount (tcpserver -c) this way at
each start, so a changed control/tcpsessioncount (or control/options line)
applies on restart. --present prints nothing and exits 1 when one of the
NAMEs is not set (no file, nothing in control/options, no default): the run
script does not start qmail-smtpd without rcpthosts (an open relay). Runs as a file with -I -S: it puts its checkout on
sys.path itself and imports only the control reader (stdlib).
Exit 111 (and a message on stderr) when a control cannot be read.
"""
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main(argv):
    from qmailpy import exitcodes as X
    from qmailpy.ctl.reader import ControlError, Controls
    present = argv[:1] == ["--present"]
    if present:
        argv = argv[1:]
    if len(argv) < 2:
        print("usage: ctlvalue.py [--present] HOME NAME...", file=sys.stderr)
        return 2
    controls = Controls(argv[0], {})
    try:
        for name in argv[1:]:
            value = controls.value(name)
            if present:
                if value is None:
                    return 1
                continue
            print(value if value is not None else "")
    except KeyError as e:
        print("ctlvalue: no control %s" % e, file=sys.stderr)
        return 2
    except ControlError as e:
        print("ctlvalue: %s" % e, file=sys.stderr)
        return X.EXIT_TROUBLE
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
