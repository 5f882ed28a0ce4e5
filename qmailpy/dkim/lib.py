"""dkimpy, imported without its own DNS module.

`import dkim` runs dkim.dnsplug, which imports dnspython's resolver (about
85 ms, most of dkimpy's import) only to offer a default get_txt(). qmailpy
never uses it: signing needs no DNS and verify.py passes every key lookup
its own resolver's answer (dnsfunc=). So a stand-in dkim.dnsplug is put in
place first; asking it for a record is an error, never a silent lookup
through the machine's resolver.
"""
import sys


def dkimpy():
    """The dkim package (dkimpy)."""
    if "dkim" not in sys.modules and "dkim.dnsplug" not in sys.modules:
        import types
        stub = types.ModuleType("dkim.dnsplug")

        def get_txt(name, timeout=5):
            raise RuntimeError("DKIM key %r: qmailpy looks keys up with its own resolver" % (name,))
        stub.get_txt = get_txt
        stub.__all__ = ["get_txt"]
        sys.modules["dkim.dnsplug"] = stub
    import dkim
    return dkim
