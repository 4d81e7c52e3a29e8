#!/usr/bin/env python3
# Usage: cuobjdump -sass X.cubin > X.sass; python3 depbar_check.py X.sass   (compile with -cubin, the project flags)
"""For each kernel in a cuobjdump -sass listing: in the overlapped loop, how many MUFU.EX2 lie
between 'DEPBAR.LE gsb0, 0x1' (S ready) and the next 'DEPBAR.LE gsb0, 0x0' (P V done).
0 = the P V wait was hoisted above the softmax (no intra-warpgroup overlap)."""
import re, sys
text = open(sys.argv[1]).read()
for fn in re.split(r"\n\s*Function : ", text)[1:]:
    name = fn.split("\n", 1)[0].strip()
    m = re.search(r"FwdTraits.*?Li(\d+)ELi(\d+)EEELb(\d)ELi(\d+)E", name)
    lines = fn.split("\n")
    res = []
    i = 0
    while i < len(lines):
        if "DEPBAR.LE gsb0, 0x1" in lines[i]:
            ex2 = 0
            j = i + 1
            while j < len(lines) and "DEPBAR.LE gsb0, 0x0" not in lines[j]:
                ex2 += "MUFU.EX2" in lines[j]
                j += 1
            res.append(ex2)
            i = j
        i += 1
    print(f"hdim {m.group(1)} tile {m.group(2)} modscores {m.group(3)} variant {m.group(4)}: "
          f"EX2 between wait<1> and wait<0>: {res}")
