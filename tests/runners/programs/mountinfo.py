# Print the mount table the sandbox shows: host paths in it tell a program where it runs.
print(open("/proc/self/mountinfo").read())
