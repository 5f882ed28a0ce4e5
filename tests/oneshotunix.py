"""A fake daemon on a Unix socket for the filter wire tests: it accepts one connection on its
own thread and hands it to serve_conn() (each fake says what it reads and answers)."""
import socket
import threading


class OneShotUnixServer:
    def __init__(self, path):
        self.path = str(path)
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.srv.accept()
        with conn:
            self.serve_conn(conn)
        self.srv.close()

    def serve_conn(self, conn):
        raise NotImplementedError
