"""A fake daemon on a Unix socket for the filter tests: it accepts one connection (or, as
UnixServer, every one until closed) on its own thread and hands it to serve_conn() (each fake
says what it reads and answers)."""
import socket
import threading


class OneShotUnixServer:
    BACKLOG = 1

    def __init__(self, path):
        self.path = str(path)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(self.BACKLOG)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.srv.accept()
        with conn:
            self.serve_conn(conn)
        self.srv.close()

    def serve_conn(self, conn):
        raise NotImplementedError


class UnixServer(OneShotUnixServer):
    """Every connection, one after the other, until close()."""
    BACKLOG = 16

    def serve(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            with conn:
                self.serve_conn(conn)

    def close(self):
        self.srv.close()


def read_to_eof(conn):
    """What the client sent until its shutdown(SHUT_WR)."""
    data = b""
    while True:
        more = conn.recv(65536)
        if not more:
            return data
        data += more
