i = 0
while True:
    print(f"line {i} ✓")
    i += 1
