# Usage: python3 tests/manual/socket-abuse.py BIN STATE PID  (an agent for db/0 runs on STATE as PID)
# Socket abuse against a running agent: 200 half-sent 2 MiB requests, then 19,500 idle
# connections; after each, time a real `is-leader` and read the agent's RSS and fd count.
import os, socket, subprocess, sys, time
bin_, state, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
sock = f"{state}/units/db-0/agent.sock"
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
def fds(): return len(os.listdir(f"/proc/{pid}/fd"))
def tool():
    t = time.monotonic()
    out = subprocess.run([bin_, "is-leader", "--unit", "db/0", "--state", state], capture_output=True, text=True)
    return f"{out.stdout.strip() or out.stderr.strip()} in {(time.monotonic()-t)*1000:.0f} ms"
print(f"before: rss {rss()} MiB, fds {fds()}, is-leader {tool()}")
held = []
chunk = b"x" * 65536
for _ in range(200):
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(0.05)
    try:
        for _ in range(30): s.sendall(chunk)
    except OSError: pass
    held.append(s)
print(f"200 half-sent 2 MiB requests: rss {rss()} MiB, fds {fds()}, is-leader {tool()}")
idle = []
for _ in range(19500):
    try:
        s = socket.socket(socket.AF_UNIX); s.connect(sock); idle.append(s)
    except OSError as e:
        print("connect failed:", e); break
print(f"{len(idle)} idle connections: rss {rss()} MiB, fds {fds()}, is-leader {tool()}")
for s in held + idle: s.close()
time.sleep(3)
print(f"after closing: rss {rss()} MiB, fds {fds()}, is-leader {tool()}")
