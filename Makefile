# qmailpy: `make` builds .venv and bin/; `make test` runs the suite; `make run`
# starts a demo instance under ./run/. Every install step lives here.

# Debian's interpreter, not a per-user one (pyenv under /root): qmail-local and
# the other programs run as qmail's users and the mailbox owners, who must be
# able to execute it.
PYTHON    ?= $(shell test -x /usr/bin/python3.11 && echo /usr/bin/python3.11 || command -v python3.11 || command -v python3)
VENV      := .venv
VPY       := $(CURDIR)/$(VENV)/bin/python3
QMAILHOME ?= /var/qmail
# Debian packages the test suite, `make run` and `make bench` use (real peers, not mocks).
APT_PACKAGES := python3 python3-venv ucspi-tcp swaks srs daemontools curl dovecot-core dovecot-pop3d dovecot-sqlite dovecot-mysql \
	clamav-daemon spamd spamassassin libdbd-mysql-perl postfix opendkim-tools \
	time clamdscan spamc fastforward dot-forward strace
# strace: tests/durability.py replays a program's system calls to check what a power loss
# may take (tests/test_durability.py).
# fastforward and dot-forward: djb's add-ons that .qmail files run (tests/test_addons.py);
# Debian builds them for the qmail home /var/lib/qmail, which they create (empty but for
# their links); the tests bind-mount a home there in a private mount namespace.
# System services these packages may start; the suite runs its own instances. While
# installing, a policy-rc.d keeps them from starting at all (freshclam would go online).
# postfix is there for smtp-sink and smtp-source only: installed as "No configuration",
# so it has no main.cf and never listens on port 25.
APT_SERVICES := dovecot clamav-daemon clamav-freshclam spamd postfix
# The IPv6 reference for tests/test_tcpserver.py: Debian's ucspi-tcp-ipv6 conflicts with
# ucspi-tcp (the IPv4 one), so its tcpserver and tcprules are taken out of the downloaded
# package into this git-ignored folder, and the package is never installed.
UCSPI6 := vendor/ucspi-tcp-ipv6

.PHONY: all deps venv launchers test run stop install docs bench fuzz coverage mutate clean
all: venv launchers

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "please install as root:$$missing" >&2; exit 1; fi; \
	  echo "installing:$$missing"; \
	  norc=""; if [ ! -e /usr/sbin/policy-rc.d ]; then norc=1; \
	    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; rc=$$?; \
	  [ -z "$$norc" ] || rm -f /usr/sbin/policy-rc.d; \
	  for s in $(APT_SERVICES); do service $$s stop >/dev/null 2>&1 || true; done; \
	  [ $$rc = 0 ] || exit $$rc; \
	  if ss -Hltnp 'sport = :25' 2>/dev/null | grep -q '"master"'; then \
	    echo "make deps: Postfix listens on port 25; the tests bind it themselves" >&2; exit 1; fi; \
	fi
	@if [ ! -x $(UCSPI6)/tcpserver ] || [ ! -x $(UCSPI6)/tcprules ]; then \
	  tmp=$$(mktemp -d) || exit 1; [ "$$(id -u)" != 0 ] || chown _apt $$tmp 2>/dev/null || true; \
	  get() { ( cd $$tmp && apt-get download -qq ucspi-tcp-ipv6 ); }; \
	  get 2>/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && get; } || \
	    { echo "make deps: cannot download ucspi-tcp-ipv6 (apt-get download)" >&2; rm -rf $$tmp; exit 1; }; \
	  dpkg-deb -x $$tmp/ucspi-tcp-ipv6_*.deb $$tmp/root && mkdir -p $(UCSPI6) && \
	    cp $$tmp/root/usr/bin/tcpserver $$tmp/root/usr/bin/tcprules $(UCSPI6)/; rc=$$?; \
	  rm -rf $$tmp; [ $$rc = 0 ] || exit $$rc; \
	  echo "unpacked ucspi-tcp-ipv6's tcpserver and tcprules into $(UCSPI6)/ (not installed)"; \
	fi

venv: $(VENV)/.stamp
$(VENV)/.stamp: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv --clear $(VENV)
	$(VPY) -m pip install -q -e '.[test]'
	$(VPY) -m compileall -q qmailpy
	touch $@

launchers: $(VENV)/.stamp tools/mklaunchers.py
	$(VPY) tools/mklaunchers.py $(CURDIR) $(VPY) bin
	@$(VPY) -m compileall -q qmailpy

# The suite waits on daemons and clocks more than it computes (6 of 10.5 min of CPU on
# 2 cores when run in one process), so it runs as TESTJOBS processes, a file to each at a time
# (module fixtures such as clamd, spamd and Postfix stay one per file); TESTJOBS=0 runs it in one.
TESTJOBS  ?= 2
test: deps all
	$(VPY) -m pytest -q -p no:cacheprovider -n $(TESTJOBS) --dist loadfile

# make bench BENCHFLAGS=--quick for one run; BENCHFLAGS=--journal puts the bench's tree on
# a loop-mounted ext4 with a journal (root; bench/journalfs.py). Uses Postfix's smtp-source
# and smtp-sink and a private Postfix instance (bench/postfix.py; postfix comes with make
# deps, services kept from starting), ucspi-tcp and time: deps installs what is missing.
bench: deps all
	$(VPY) bench/run.py $(BENCHFLAGS)

# make fuzz: the fuzz targets and the SMTP state machine at length (docs/security.md);
# FUZZ=<n> runs n examples per target instead of the long profile.
fuzz: all
	QMAILPY_FUZZ=$(or $(FUZZ),long) $(VPY) -m pytest -q -p no:cacheprovider tests/fuzz tests/test_adversarial_statemachine.py

# make mutate: mutation testing of the modules listed in setup.cfg's [mutmut] section
# (docs/development.md); MUTATE="relay send.bounce" runs only those modules.
coverage: all
	@$(VPY) -c "import coverage" 2>/dev/null || $(VPY) -m pip install -q -e '.[test,coverage]'
	$(VPY) tools/coverage.py

mutate: all
	@$(VPY) -c "import mutmut" 2>/dev/null || $(VPY) -m pip install -q -e '.[test,mutate]'
	$(VPY) tools/mutate.py $(MUTATE)

docs: all
	$(VPY) -m qmailpy.docgen docs

# PORT=2525 and POP3PORT=1110 by default; it fails (and says why) when one is taken.
run: deps all
	./tools/run.sh

stop:
	./tools/run.sh stop

# As root, `make install` also runs it as qmail runs (tools/install.py --production: qmail's
# users, queue owners, service/ run scripts, etc/crontab, postmaster's alias files; docs/operations.md).
# ME=mx.example.com writes control/me, defaultdomain, plusdomain, locals, rcpthosts where absent
# (qmail's config-fast; --production uses the host name without it); POSTMASTER=you@example.net
# makes postmaster's alias files forward there. INSTALLFLAGS adds options, e.g.
# INSTALLFLAGS="--smtp-listen 192.0.2.1 --softlimit 64000000".
install: all
	$(VPY) tools/install.py $(QMAILHOME) $(CURDIR) $(VPY) $$([ "$$(id -u)" = 0 ] && echo --production) \
	  $(if $(ME),--me $(ME)) $(if $(POSTMASTER),--postmaster $(POSTMASTER)) $(INSTALLFLAGS)

# A running demo is stopped first: its pid files are in run/.
clean:
	./tools/run.sh stop
	rm -rf $(VENV) bin/qmail-* bin/setsrssecret bin/sendmail bin/maildirmake run mutants
