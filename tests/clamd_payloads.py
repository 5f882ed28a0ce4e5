"""Messages that try clamd's limits, built in memory (tests/test_filters.py; no tools needed).

Each returns a whole message (bytes, LF line ends) with EICAR somewhere clamd
must reach: MIME parts nested `depth` levels, zips nested `depth` levels, a zip
with `count` empty files before EICAR, a zip with `count` x `size` bytes of
zeros before EICAR, EICAR in a ZipCrypto (password) zip, and EICAR at the start
of a message of `size` bytes.
"""
import base64
import io
import os
import struct
import zipfile
import zlib

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HEAD = (b"From: Mallory <mallory@evil.example>\nTo: bob@example.net\nSubject: limits\n"
        b"Date: Mon, 1 Jan 2024 12:00:00 +0000\nMessage-ID: <limits@evil.example>\nMIME-Version: 1.0\n")


def _b64(data):
    return base64.encodebytes(data)


def attachment_message(name, data, content_type=b"application/zip"):
    """A message with `data` as a base64 attachment."""
    return (HEAD + b'Content-Type: multipart/mixed; boundary="top"\n\n--top\nContent-Type: text/plain\n\nsee attached\n'
            b"--top\nContent-Type: " + content_type + b'; name="' + name + b'"\nContent-Transfer-Encoding: base64\n'
            b'Content-Disposition: attachment; filename="' + name + b'"\n\n' + _b64(data) + b"--top--\n")


def nested_mime(depth):
    """EICAR as an attachment inside `depth` nested multipart/mixed parts."""
    inner = (b"Content-Type: application/octet-stream; name=\"e.com\"\nContent-Transfer-Encoding: base64\n\n"
             + _b64(EICAR))
    for level in range(depth, 0, -1):
        b = b"b%d" % level
        inner = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\n\n--' + b + b"\n" + inner
                 + b"--" + b + b"--\n")
    return HEAD + inner


def _zip(entries, compression=zipfile.ZIP_DEFLATED):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z:
        for name, data in entries:
            z.writestr(name, data)
    return out.getvalue()


def nested_zip(depth):
    data, name = EICAR, "eicar.com"
    for level in range(depth):
        data, name = _zip([(name, data)]), "level%d.zip" % level
    return attachment_message(name.encode(), data)


def many_files_zip(count):
    entries = [("f%05d.txt" % i, b"") for i in range(count)] + [("eicar.com", EICAR)]
    return attachment_message(b"many.zip", _zip(entries))


def zeros_zip(count, size):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        chunk = bytes(1 << 20)
        for i in range(count):
            with z.open("zeros%d.bin" % i, "w", force_zip64=True) as f:
                for _ in range(size >> 20):
                    f.write(chunk)
        z.writestr("eicar.com", EICAR)
    return attachment_message(b"zeros.zip", out.getvalue())


# -- ZipCrypto (traditional PKWARE encryption), which zipfile reads but cannot write
def _crc_step(crc, byte):
    return zlib.crc32(bytes((byte,)), crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _zipcrypto(password, plain, check_byte):
    k = [0x12345678, 0x23456789, 0x34567890]

    def update(c):
        k[0] = _crc_step(k[0], c)
        k[1] = ((k[1] + (k[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        k[2] = _crc_step(k[2], k[1] >> 24)

    for c in password:
        update(c)
    out = bytearray()
    for p in os.urandom(11) + bytes((check_byte,)) + plain:
        t = (k[2] | 2) & 0xFFFF
        out.append(p ^ (((t * (t ^ 1)) >> 8) & 0xFF))
        update(p)
    return bytes(out)


def encrypted_zip(password=b"secret", name=b"eicar.com", data=EICAR):
    """A one-file zip, stored and ZipCrypto-encrypted (general purpose flag bit 0)."""
    crc = zlib.crc32(data)
    body = _zipcrypto(password, data, crc >> 24)
    fields = struct.pack("<HHHHHIII", 20, 1, 0, 0, 0x21, crc, len(body), len(data))
    local = b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + body
    central = (b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, 0)
               + name)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local), 0)
    archive = local + central + end
    with zipfile.ZipFile(io.BytesIO(archive)) as z:          # the archive is what it claims to be
        assert z.read(name.decode(), pwd=password) == data
    return attachment_message(b"secret.zip", archive)


def big_message(size):
    """EICAR at the start of the body, then text up to `size` bytes."""
    head = HEAD + b"Content-Type: text/plain\n\n" + EICAR + b"\n"
    line = b"x" * 75 + b"\n"
    return head + line * ((size - len(head)) // len(line) + 1)
