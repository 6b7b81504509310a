import subprocess

children = []
try:
    for _ in range(40):
        children.append(subprocess.Popen(["/usr/bin/sleep", "5"]))
    print("started", len(children))
except OSError as exc:
    print("stopped after", len(children), "children:", exc.strerror)
    raise
