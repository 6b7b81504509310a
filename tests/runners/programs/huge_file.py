import sys

for path in sys.argv[1:]:
    try:
        with open(path, "wb") as f:
            for _ in range(1024):
                f.write(b"x" * (1 << 20))
        print(path, "wrote 1 GiB")
    except OSError as exc:
        print(path, "stopped:", exc.strerror)
