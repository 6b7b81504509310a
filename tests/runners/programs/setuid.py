import os
import shutil
import subprocess

for directory in ("/box", "/tmp"):
    copy = os.path.join(directory, "id")
    shutil.copy("/usr/bin/id", copy)
    try:
        os.chown(copy, 0, 0)
    except OSError as exc:
        print("chown denied:", exc.strerror)
    os.chmod(copy, 0o4755)
    print(
        directory,
        "mode",
        oct(os.stat(copy).st_mode),
        subprocess.run([copy, "-u"], capture_output=True, text=True).stdout.strip(),
    )
