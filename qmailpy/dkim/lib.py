"""dkimpy, imported without its own DNS module.

`import dkim` runs dkim.dnsplug, which imports dnspython's resolver (about
85 ms, most of dkimpy's import) only to offer a default get_txt(). qmailpy
never uses it: signing needs no DNS and verify.py passes every key lookup
its own resolver's answer (dnsfunc=). So a stand-in dkim.dnsplug is put in
place first; asking it for a record is an error, never a silent lookup
through the machine's resolver.

dkimpy's steps whose time is quadratic in what a sender writes are replaced,
once imported, by linear ones with the same results: the header parser
(rfc822_parse), the relaxed body's strip_trailing_whitespace, select_headers
(the fields h= names) and RE_BTAG (b= taken out of the signature field).
tests/test_dkim.py runs each case under a CPU limit.
"""
import re
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
    dkim.rfc822_parse = rfc822_parse          # set_message()'s parser (a module global there)
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace   # relaxed body's
    dkim.select_headers = select_headers      # hash_headers()'s (sign and verify)
    dkim.RE_BTAG = RE_BTAG                    # the b= value taken out of the signature field
    return dkim


# dkimpy's RE_BTAG with its FWS, (?:(?:\s*\r?\n)?\s+)?, written as \s*: the same strings and the
# same matches (a run of white space is all FWS can be), without the two ways to read a run
# that made a b= of many blank continuation lines (" \r\n" * 8,000) take seconds, quadratic.
RE_BTAG = re.compile(br"([;\s]b\s*=)(?:\s*[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")


def select_headers(headers, include_headers):
    """dkimpy's select_headers() (1.1.8) over an index of the fields by name: for each name of
    h=, the last field of that name not taken yet. dkimpy searched the header from the bottom
    for each name, so h= of thousands of names no field has, over a header of many fields,
    took minutes (a signer's key and body hash are all it takes to get there)."""
    where = {}
    for i, field in enumerate(headers):
        where.setdefault(field[0].lower(), []).append(i)
    sign_headers = []
    for h in include_headers:
        assert h == h.lower()
        found = where.get(h)
        if found:
            sign_headers.append(headers[found.pop()])
    return sign_headers


def strip_trailing_whitespace(content):
    """dkimpy's re.sub(b"[\\t ]+\\r\\n", b"\\r\\n", content) (relaxed body canonicalization) line
    by line: the regex tried the whole rest of a run of blanks from each of its bytes, quadratic
    in a run not followed by CRLF (a body line of 200,000 spaces then "x" took two minutes
    under a key the signer publishes). Every line but the last loses its trailing blanks."""
    lines = content.split(b"\r\n")
    last = lines.pop()
    return b"\r\n".join([line.rstrip(b"\t ") for line in lines] + [last])


def rfc822_parse(message):
    """dkimpy's rfc822_parse() (1.1.8) with a continuation line's text collected in a list and
    joined once: its `headers[-1][1] += line` copied the field so far for each line, quadratic
    in the lines of one field (a client's field of a million " x" lines held qmail-queued for
    minutes per DKIM-Signature). Same result, same errors: IndexError for a continuation line
    with no field before it, MessageFormatError for a line that is no field."""
    import re

    from dkim import MessageFormatError
    headers, pieces = [], None
    lines = re.split(b"\r?\n", message)
    i = 0
    while i < len(lines):
        line = lines[i]
        if len(line) == 0:
            i += 1
            break
        if line[0] in (0x09, 0x20):
            if pieces is None:
                headers[-1]                 # dkimpy's IndexError: no field to continue
            pieces += (line, b"\r\n")
        else:
            m = re.match(br"([\x21-\x7e]+?):", line)
            if m is not None:
                pieces = [line[m.end(0):], b"\r\n"]
                headers.append([m.group(1), pieces])
            elif line.startswith(b"From "):
                pass
            else:
                raise MessageFormatError("Unexpected characters in RFC822 header: %s" % line)
        i += 1
    for field in headers:
        field[1] = b"".join(field[1])
    return (headers, b"\r\n".join(lines[i:]))
