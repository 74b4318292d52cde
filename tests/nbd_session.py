#!/usr/bin/python3
"""One NBD client session, driven one command at a time from stdin.

    nbd_session.py URI

The nemesis writer (tests/src/nemesis/writer.rs) needs to know the outcome
of every write *and every flush*. qemu-io cannot say: in its interactive
mode a failed `flush` prints nothing at all (seen with qemu-io 10), so a
flush that never reached the server read as acknowledged, and in its
default write-through mode every write is flushed anyway, so nothing is
ever unflushed at a fault. This session uses libnbd (Debian's
python3-libnbd, the library under nbdinfo and nbdcopy): plain writes (no
FUA, no client cache), flushes only when asked, and every error reported.

Commands (one per line); each answer ends with the prompt "nbd> ":
    length                 -> "length N"
    write FILE OFFSET      -> "wrote N bytes at offset O" | "write failed: E"
    flush                  -> "flushed" | "flush failed: E"
A session whose connection failed answers every command with its error.
"""

import sys

import nbd

PROMPT = "nbd> "


def answer(text):
    sys.stdout.write(text + "\n" + PROMPT)
    sys.stdout.flush()


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    h = nbd.NBD()
    try:
        h.connect_uri(sys.argv[1])
        opened = None
    except nbd.Error as e:
        opened = "open failed: %s" % e
    sys.stdout.write(PROMPT)
    sys.stdout.flush()
    for line in sys.stdin:
        words = line.split()
        if not words:
            answer("")
            continue
        cmd = words[0]
        if opened is not None:
            answer("%s failed: %s" % (cmd, opened))
            continue
        try:
            if cmd == "length" and len(words) == 1:
                answer("length %d" % h.get_size())
            elif cmd == "write" and len(words) == 3:
                with open(words[1], "rb") as f:
                    data = f.read()
                off = int(words[2])
                h.pwrite(data, off)
                answer("wrote %d bytes at offset %d" % (len(data), off))
            elif cmd == "flush" and len(words) == 1:
                h.flush()
                answer("flushed")
            else:
                answer("unknown command: %s" % line.strip())
        except nbd.Error as e:
            answer("%s failed: %s" % (cmd, e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
