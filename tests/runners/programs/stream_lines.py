import time

for i in range(4):
    print("tick", i)
    time.sleep(0.25)
