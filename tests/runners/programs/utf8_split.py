import sys
import time

out = sys.stdout.buffer
out.write("a€".encode()[:-1])
out.flush()  # "a" and the first 2 bytes of "€"
time.sleep(0.3)
out.write("€".encode()[-1:] + b"\n")
out.flush()
time.sleep(0.3)
out.write(b"bad \xff\xfe end\n")
out.flush()
out.write("😀".encode()[:2])  # a truncated character at EOF
