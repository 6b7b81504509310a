import sys

print("ready")
for line in sys.stdin:
    print(line.upper(), end="")
print("eof")
