"""DKIM (see docs/dkim.md): keys (control/domainkeys/DOMAIN/SELECTOR, the qmail DKIM patches'
layout), sign (qmail-remote signs before it sends), verify (qmail-queue's step that adds
Authentication-Results). dkimpy is imported only by sign and verify, which run only when a
key or control/dkimverify asks for them.
"""
