"""Rows 4-5: TLS handshakes, SMTP and SMTP -> Maildir against smtp-sink, aiosmtpd and the private Postfix."""
import os
import re
import subprocess
import time

import postfix
import qmailsend
import tcpserver_rows
from procs import BenchFailure, count_files, progress, tool
from settings import DOMAIN, ROOT, SIZES, VPY


class SmtpRows:
    """Bench's TLS, SMTP and SMTP -> Maildir rows (a mixin: the state is Bench's)."""
    # -- TLS handshakes -------------------------------------------------------
    def start_tls(self, servers):
        """A certificate made now (openssl req -x509), qmail-smtpd with SMTPS=1 under tcpserver
        and under qmail-tcpserver using it as control/servercert.pem, and `openssl s_server`
        with the same one."""
        d = os.path.join(self.tmp, "tlscert")
        os.makedirs(d)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost"], check=True, capture_output=True)
        home = self.new_home("tls", {"me": DOMAIN, "rcpthosts": DOMAIN})
        with open(cert) as a, open(key) as b:
            self.control(home, "servercert.pem", a.read() + b.read().rstrip("\n"))
        env = dict(self.env, QMAILHOME=home, SMTPS="1", QMAILPY_SINGLEUSER="1")
        smtpd = ["-R", "-H", "-l", "localhost", "-c", "100", "127.0.0.1", "PORT", os.path.join(home, "bin", "qmail-smtpd")]
        self.tls_ports = {
            "qmail": servers.start([tool("tcpserver")] + smtpd, env, self.log),
            "qmail_fork": servers.start([os.path.join(home, "bin", "qmail-tcpserver")] + smtpd, env, self.log),
            "s_server": servers.start(["openssl", "s_server", "-quiet", "-accept", "127.0.0.1:PORT", "-cert", cert,
                                       "-key", key, "-naccept", "100000000"], os.environ, self.log),
        }
        self.postfix_tls = None
        try:
            self.postfix_tls = postfix.start_tls(os.path.join(self.tmp, "postfix"), DOMAIN, cert, key)
            self.tls_ports["postfix"] = self.postfix_tls.port
        except postfix.PostfixUnavailable as e:
            progress("private Postfix (TLS): n/a (%s)" % e)
            self.na["pf_tls_handshakes_per_s"] = str(e)[:300]

    def tls(self):
        """Full handshakes per second (openssl s_time -new) against each, one after the other."""
        for name, quantity in (("qmail", "tls_handshakes_per_s"), ("qmail_fork", "tls_handshakes_fork_per_s"),
                               ("s_server", "s_server_handshakes_per_s"), ("postfix", "pf_tls_handshakes_per_s")):
            if name not in self.tls_ports:
                continue
            start = time.perf_counter()
            r = subprocess.run(["openssl", "s_time", "-connect", "127.0.0.1:%d" % self.tls_ports[name], "-new",
                                "-time", str(SIZES["tls_seconds"])], capture_output=True, text=True, timeout=120)
            elapsed = time.perf_counter() - start
            got = re.search(r"(\d+) connections in [\d.]+ real seconds", r.stdout)
            if r.returncode != 0 or got is None or int(got.group(1)) == 0:
                raise BenchFailure("openssl s_time against %s: %s" % (name, (r.stdout + r.stderr)[-300:]))
            self.record(quantity, int(got.group(1)) / elapsed)

    # -- 4. SMTP ----------------------------------------------------------------
    def start_servers(self, servers):
        """smtp-sink, qmail-smtpd under tcpserver, aiosmtpd: name -> (port, directory to count or None)."""
        aio_dir = os.path.join(self.tmp, "aiosmtpd")
        os.makedirs(aio_dir)
        self.ports = {
            # -m: more simultaneous sessions than the 500 remote deliveries at once
            "sink": (servers.start([tool("smtp-sink")] + (["-u", "nobody"] if os.geteuid() == 0 else [])
                                   + ["-m", "1024", "127.0.0.1:PORT", "1024"], os.environ, self.log), None),
            "qmail": (self.smtpd_server(servers, self.home), self.todo),
            "fork": (tcpserver_rows.start(self, servers, tool), self.todo),
            "aio": (servers.start([VPY, os.path.join(ROOT, "bench", "aiosmtpd_sink.py"), "PORT",
                                   aio_dir], os.environ, self.log), aio_dir),
        }
        self.start_postfix()
        return self.ports

    # -- the private Postfix (bench/postfix.py) ------------------------------------------
    PF_QUANTITIES = ["pf_1_msgs_per_s", "pf_d_msgs_per_s", "pf_e2e_per_s"] + [
        "pf_remote_c%d_per_s" % c for c, _ in SIZES["postfix_remote"]]

    def start_postfix(self):
        """The "accept" instance joins the SMTP rows (its queue/incoming counted); "mta" is for the
        end-to-end and remote rows. Rows say n/a (reason) when Postfix cannot run here."""
        self.postfix = None
        try:
            accept, mta = postfix.start_pair(os.path.join(self.tmp, "postfix"), DOMAIN,
                                             self.mailbox[1:] if self.mailbox else None, self.ports["sink"][0])
        except postfix.PostfixUnavailable as e:
            progress("private Postfix: n/a (%s)" % e)
            self.postfix_na(str(e))
            return
        self.postfix = (accept, mta)
        self.ports["pf"] = (accept.port, accept.incoming())
        progress("private Postfix: accept on 127.0.0.1:%d, mta on 127.0.0.1:%d" % (accept.port, mta.port))

    def postfix_na(self, reason):
        for q in self.PF_QUANTITIES:
            self.na[q] = reason[:300]

    def postfix_e2e(self):
        if not self.postfix:
            return
        mta = self.postfix[1]
        m = SIZES["e2e_messages"]
        argv = self.smtp_source(["-s", str(SIZES["e2e_parallel"])], mta.port, m)
        try:
            self.record("pf_e2e_per_s", postfix.end_to_end(mta, argv, m))
        except postfix.PostfixUnavailable as e:
            raise BenchFailure(str(e)) from None

    def postfix_remote(self, run):
        if not self.postfix:
            return
        mta = self.postfix[1]
        for conc, m in SIZES["postfix_remote"]:
            argv = self.smtp_source(["-s", "20"], mta.port, m, rcpt="r@remote.example")
            try:
                self.record("pf_remote_c%d_per_s" % conc, postfix.remote(mta, argv, m, conc))
            except postfix.PostfixUnavailable as e:
                raise BenchFailure(str(e)) from None

    def stop_postfix(self):
        for pf in getattr(self, "postfix", None) or ():
            pf.stop()
        if getattr(self, "postfix_tls", None) is not None:
            self.postfix_tls.stop()

    def smtp_source(self, opts, port, m, rcpt="rcpt@" + DOMAIN):
        return [tool("smtp-source")] + opts + [
            "-m", str(m), "-l", str(SIZES["message_bytes"]), "-M", DOMAIN,
            "-f", "bench@" + DOMAIN, "-t", rcpt, "127.0.0.1:%d" % port]

    def smtp(self):
        """smtp-source against each server in turn: messages/s, each message counted on disk."""
        m = SIZES["smtp_messages"]
        for mode, opts in (("1", ["-s", str(SIZES["smtp_parallel"])]),
                           ("d", ["-d", "-s", str(SIZES["smtp_d_sessions"])])):
            for name, (port, directory) in self.ports.items():
                before = len(os.listdir(directory)) if directory else 0
                start = time.perf_counter()
                r = subprocess.run(self.smtp_source(opts, port, m), capture_output=True, timeout=300)
                elapsed = time.perf_counter() - start
                if r.returncode:
                    raise BenchFailure("smtp-source against %s: %s" % (name, r.stderr.decode()[-500:]))
                if directory and len(os.listdir(directory)) - before != m:
                    raise BenchFailure("%s stored %d of %d messages"
                                       % (name, len(os.listdir(directory)) - before, m))
                self.record("%s_%s_msgs_per_s" % (name, mode), m / elapsed)

    # -- 5. SMTP -> Maildir -------------------------------------------------------
    def start_e2e(self, servers):
        """A home with a virtual domain, one mailbox made by qmail-users, qmail-send and tcpserver."""
        home = self.new_home("e2e", {"me": "mx." + DOMAIN, "locals": "mx." + DOMAIN,
                                     "virtualdomains": "%s:%s" % (DOMAIN, DOMAIN), "rcpthosts": DOMAIN})
        vdir = os.path.join(home, "vpopmail")      # qmail-users gives new mailboxes this directory's owner
        os.makedirs(vdir, 0o755)
        if self.mailbox:
            os.chown(vdir, *self.mailbox[1:])
        env = dict(self.env, QMAILHOME=home)
        for argv in (["adddomain", DOMAIN, "--no-rcpthosts"], ["adduser", "rcpt@" + DOMAIN, "-p", "bench"]):
            r = subprocess.run([os.path.join(home, "bin", "qmail-users")] + argv, env=env,
                               capture_output=True, timeout=60)
            if r.returncode:
                raise BenchFailure("qmail-users %s: %s" % (" ".join(argv), r.stderr.decode()[-300:]))
        self.maildir_new = os.path.join(vdir, "domains", DOMAIN, "rcpt", "Maildir", "new")
        if not os.path.isdir(self.maildir_new):
            raise BenchFailure("qmail-users made no %s" % self.maildir_new)
        self.e2e_send = qmailsend.QmailSend(home, os.path.join(self.tmp, "e2e-send.log"))
        self.sends.append(self.e2e_send)
        self.e2e_send.ready()
        self.e2e_port = self.smtpd_server(servers, home)
        self.e2e_fork_port = tcpserver_rows.start(self, servers, tool, home, "e2e-fork")

    def e2e(self):
        """smtp-source into qmail-smtpd, under tcpserver and under qmail-tcpserver; each done when
        every message is a file in the mailbox's Maildir/new."""
        self.disk("disk_raw_e2e_per_s")
        self.e2e_run(self.e2e_port, "e2e_msgs_per_s")
        self.e2e_run(self.e2e_fork_port, "e2e_fork_msgs_per_s")

    def e2e_run(self, port, quantity):
        m, send = SIZES["e2e_messages"], self.e2e_send
        before = count_files(self.maildir_new)
        argv = self.smtp_source(["-s", str(SIZES["e2e_parallel"])], port, m)
        start = time.perf_counter()
        source = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        try:
            end = send.wait(lambda: count_files(self.maildir_new) - before >= m, 60 + m, "%d Maildir files" % m)
        except qmailsend.SendFailure as e:
            raise BenchFailure(str(e)) from None
        finally:
            err = source.communicate(timeout=120)[1]
        if source.returncode:
            raise BenchFailure("smtp-source into the e2e home: %s" % err.decode()[-500:])
        self.record(quantity, m / (end - start))
        if "maildir_file_owner" not in self.details:       # who qmail-local ran as
            with os.scandir(self.maildir_new) as it:
                uid = next(it).stat().st_uid
            try:
                import pwd
                self.details["maildir_file_owner"] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self.details["maildir_file_owner"] = uid
