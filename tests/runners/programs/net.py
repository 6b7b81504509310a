import socket
import sys

for host, port in (("127.0.0.1", int(sys.argv[1])), ("1.1.1.1", 80)):
    try:
        socket.create_connection((host, port), timeout=2).close()
        print(host, "CONNECTED")
    except OSError as exc:
        print(host, "blocked:", exc)
