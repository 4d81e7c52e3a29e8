# Python model of the persistent TMA/mbarrier protocol of this kernel (fwd_producer.h,
# fwd_consumer.h, fwd_tile_scheduler.h): mbarrier parity semantics, random interleavings of the
# producer, the 2 or 3 consumer warpgroups and TMA completions. Checks no deadlock, that every read sees
# the intended (tile, block) data and that no buffer is overwritten while read. Mirror any change
# of the barrier bookkeeping here first.  Run: python3 pipeline_model.py  (CPU, ~1 min)
# Model of the sm90 fwd persistent pipeline protocol (producer / 2 consumer WGs / TMA), random
# interleavings; checks: no deadlock, every read sees the intended (tile, block) data, no buffer
# overwritten while a reader still needs it.
import random, sys

class Bar:
    def __init__(s, count): s.count=count; s.pending=count; s.tx=0; s.k=0
    def passes(s, parity): return (s.k & 1) != parity
    def arrive(s, n=1):
        s.pending -= n; s._chk()
    def expect_tx(s, b): s.tx += b
    def complete_tx(s, b): s.tx -= b; s._chk()
    def _chk(s):
        assert s.pending >= 0 and s.tx >= 0
        if s.pending == 0 and s.tx == 0: s.k += 1; s.pending = s.count

def schedule(M, H, B, paired, G, rotate=False):
    upb = (M+1)//2 if paired else M
    U = upb*H*B
    per = []
    GG = min(G, U)
    for c in range(GG):
        tl = []
        for j, slot in enumerate(range(c, U, GG)):
            # fwd_tile_scheduler.h unit_at: rotation inside each round of GG units
            base = slot - c; n = min(GG, U - base)
            u = base + (c + j) % n if rotate else slot
            k = u % upb; bh = u // upb
            ms = [M-1-k] if (not paired or k == M-1-k) else [M-1-k, k]
            for m in ms: tl.append((m, bh))
        per.append(tl)
    return per

def run(tiles, nblocks, stages, overlap, seed, qstages=1, pingpong=False, NC=2, wgskip=False):
    rnd = random.Random(seed)
    # wgskip (fwd_consumer.h kWgBlockSkip): each consumer computes only a sub-range [lo, hi) of
    # the tile's blocks (visit index i = 0..n-1; here random per (tile, wg), possibly empty) and
    # "passes" the others: data waits, one turn without issue, the same releases.
    sub = {}
    def wg_range(t, wg, n):
        if not wgskip: return 0, n
        key = (t, wg)
        if key not in sub:
            r = random.Random(hash((seed, t, wg)))
            a, b = sorted(r.randint(0, n) for _ in range(2))
            sub[key] = (a, b) if a < b else (0, 0)
        return sub[key]
    # NC consumer WGs (2, or 3 for d=64's 192-row tile), 128 arrivals each -> count NC here
    full_q = [Bar(1) for _ in range(qstages)]; empty_q = [Bar(NC) for _ in range(qstages)]
    # Ping-pong tokens (fwd_pingpong.h): named barrier per WG; tok[w] = pending arrivals of the
    # previous WG (rotation 0 -> 1 -> .. -> NC-1 -> 0). The hardware barrier would over-count a
    # second arrival before the wait: assert.
    tok = [0] * NC
    def pp_arrive(w):
        assert tok[w] == 0, ("named barrier over-arrived", w)
        tok[w] = 1
    def pp_wait(w):
        while tok[w] == 0: yield
        tok[w] = 0
    full_k = [Bar(1) for _ in range(stages)]; full_v = [Bar(1) for _ in range(stages)]
    empty_k = [Bar(NC) for _ in range(stages)]; empty_v = [Bar(NC) for _ in range(stages)]
    buf = {('q',b): None for b in range(qstages)}
    for s in range(stages): buf[('k',s)] = None; buf[('v',s)] = None
    inflight = []  # (bufname, content, barrier)
    readers = {}   # bufname -> set of (wg) still holding
    def prod():
        stage, phase, ql = 0, 0, 0
        for t in tiles:
            n = nblocks(t)
            if n == 0: continue
            for i in range(n):
                while not empty_k[stage].passes(phase ^ 1): yield
                full_k[stage].expect_tx(1); full_k[stage].arrive()
                inflight.append((('k',stage), (t, i), full_k[stage]))
                if i == 0:
                    qb, qp = ql % qstages, (ql // qstages) & 1
                    while not empty_q[qb].passes(qp ^ 1): yield
                    full_q[qb].expect_tx(1); full_q[qb].arrive()
                    inflight.append((('q',qb), t, full_q[qb])); ql += 1
                while not empty_v[stage].passes(phase ^ 1): yield
                full_v[stage].expect_tx(1); full_v[stage].arrive()
                inflight.append((('v',stage), (t, i), full_v[stage]))
                stage += 1
                if stage == stages: stage = 0; phase ^= 1
                yield
    def hold(name, wg, expect):
        assert buf[name] == expect, (name, buf[name], expect)
        readers.setdefault(name, set()).add(wg)
    def release(name, wg, expect, bar):
        assert buf[name] == expect, ("overwritten while read", name, buf[name], expect)
        readers[name].discard(wg); bar.arrive()
    def cons(wg):
        kv, qi = 0, 0
        out = []
        if pingpong and wg == NC - 1: pp_arrive(0)  # start: WG 0 issues first
        def turn():  # wait for this WG's turn (data waits are done before)
            if pingpong: yield from pp_wait(wg)
        def pass_turn():
            if pingpong: pp_arrive((wg + 1) % NC)
        for t in tiles:
            n = nblocks(t)
            if n == 0: out.append(t); continue
            qb, qp = qi % qstages, (qi // qstages) & 1
            Q = ('q', qb)
            while not full_q[qb].passes(qp): yield
            hold(Q, wg, t)
            if overlap and wgskip:
                a, b = wg_range(t, wg, n)  # computed visits [a, b)
                def skip(i):
                    nonlocal kv
                    s_, p_ = kv % stages, (kv // stages) & 1
                    while not full_k[s_].passes(p_): yield
                    while not full_v[s_].passes(p_): yield
                    yield from turn()
                    pass_turn(); yield
                    # a passed block is never read: only check it is the intended data, then release
                    assert buf[('k',s_)] == (t,i) and buf[('v',s_)] == (t,i), ("stale", t, i)
                    empty_k[s_].arrive(); empty_v[s_].arrive()
                    if i == n-1: release(Q, wg, t, empty_q[qb])
                    kv += 1
                for i in range(0, a): yield from skip(i)
                if a == b:
                    yield from turn(); pass_turn(); yield
                else:
                    s0, p0 = kv % stages, (kv // stages) & 1
                    while not full_k[s0].passes(p0): yield
                    yield from turn()
                    hold(('k',s0), wg, (t,a)); pass_turn(); yield
                    release(('k',s0), wg, (t,a), empty_k[s0])
                    if a == n-1: release(Q, wg, t, empty_q[qb])
                    prev = kv
                    for i in range(a+1, b):
                        it = prev + 1
                        s, p = it % stages, (it // stages) & 1
                        sp, pp = prev % stages, (prev // stages) & 1
                        while not full_k[s].passes(p): yield
                        while not full_v[sp].passes(pp): yield
                        yield from turn()
                        hold(('k',s), wg, (t,i))
                        hold(('v',sp), wg, (t,i-1)); pass_turn(); yield
                        release(('k',s), wg, (t,i), empty_k[s])
                        if i == n-1: release(Q, wg, t, empty_q[qb])
                        yield
                        release(('v',sp), wg, (t,i-1), empty_v[sp])
                        prev = it
                    sp, pp = prev % stages, (prev // stages) & 1
                    while not full_v[sp].passes(pp): yield
                    yield from turn()
                    hold(('v',sp), wg, (t,b-1)); pass_turn(); yield
                    release(('v',sp), wg, (t,b-1), empty_v[sp])
                    kv = prev + 1
                for i in range(b, n): yield from skip(i)
            elif overlap:
                s0, p0 = kv % stages, (kv // stages) & 1
                while not full_k[s0].passes(p0): yield
                yield from turn()
                hold(('k',s0), wg, (t,0)); pass_turn(); yield
                release(('k',s0), wg, (t,0), empty_k[s0])
                if n == 1: release(Q, wg, t, empty_q[qb])
                prev = kv
                for i in range(1, n):
                    it = prev + 1
                    s, p = it % stages, (it // stages) & 1
                    sp, pp = prev % stages, (prev // stages) & 1
                    while not full_k[s].passes(p): yield
                    while not full_v[sp].passes(pp): yield
                    yield from turn()
                    hold(('k',s), wg, (t,i))
                    hold(('v',sp), wg, (t,i-1)); pass_turn(); yield
                    release(('k',s), wg, (t,i), empty_k[s])
                    if i == n-1: release(Q, wg, t, empty_q[qb])
                    yield
                    release(('v',sp), wg, (t,i-1), empty_v[sp])
                    prev = it
                sp, pp = prev % stages, (prev // stages) & 1
                while not full_v[sp].passes(pp): yield
                yield from turn()
                hold(('v',sp), wg, (t,n-1)); pass_turn(); yield
                release(('v',sp), wg, (t,n-1), empty_v[sp])
                kv = prev + 1
            else:
                s, p = kv % stages, (kv // stages) & 1
                kv += n
                for i in range(n):
                    while not full_k[s].passes(p): yield
                    hold(('k',s), wg, (t,i)); yield
                    release(('k',s), wg, (t,i), empty_k[s])
                    if i == n-1: release(Q, wg, t, empty_q[qb])
                    while not full_v[s].passes(p): yield
                    hold(('v',s), wg, (t,i)); yield
                    release(('v',s), wg, (t,i), empty_v[s])
                    s += 1
                    if s == stages: s = 0; p ^= 1
            qi += 1
            out.append(t); yield
        if pingpong and wg == 0: yield from pp_wait(0)  # end: consume the last WG's last pass
        res[wg] = out
    res = {}
    gens = [prod()] + [cons(w) for w in range(NC)]
    alive = [True]*(NC+1)
    steps = 0
    while any(alive) or inflight:
        steps += 1
        if steps > 10**6: raise RuntimeError("deadlock/livelock")
        choices = [i for i in range(NC+1) if alive[i]] + (['tma'] if inflight else [])
        c = rnd.choice(choices)
        if c == 'tma':
            j = rnd.randrange(len(inflight))
            name, content, bar = inflight.pop(j)
            # TMA writes the buffer: nobody may still be reading it
            assert not readers.get(name), ("write while reading", name)
            buf[name] = content; bar.complete_tx(1)
        else:
            try: next(gens[c])
            except StopIteration: alive[c] = False
        if not any(alive[1:]) and not alive[0] and not inflight: break
    assert all(res[w] == tiles for w in range(NC))
    assert tok == [0] * NC, ("ping-pong tokens left over", tok)
    return steps

def nb_causal(M, bm, bn, sq, sk):
    def f(t):
        m = t[0]
        lo = m*bm; hi = min(lo+bm, sq)-1
        end = min(hi + sk - sq + 1, sk)
        return max(0, (end + bn - 1)//bn) if end > 0 else 0
    return f

cnt = 0
for seed in range(300):
    r = random.Random(seed)
    sq = r.choice([1, 5, 113, 128, 129, 300, 1024]); sk = r.choice([1, 17, 128, 203, 1024])
    NC = r.choice([2, 3])
    bm, bn = 64 * NC, r.choice([128, 80])
    M = (sq + bm - 1)//bm
    causal = r.random() < 0.6
    H, B = r.choice([1,2,3]), r.choice([1,2])
    G = r.choice([1,2,3,5,132])
    stages = r.choice([2,3])
    overlap = r.random() < 0.7
    qstages = r.choice([1, 2])
    pingpong = overlap and r.random() < 0.7
    wgskip = overlap and NC == 3 and r.random() < 0.6
    nb = nb_causal(M,bm,bn,sq,sk) if causal else (lambda t: (sk+bn-1)//bn)
    for tl in schedule(M, H, B, causal, G, rotate=r.random() < 0.5):
        run(tl, nb, stages, overlap, seed, qstages, pingpong, NC, wgskip); cnt += 1
# coverage check of the schedule
for M in range(1, 20):
    for paired in (False, True):
        for G in (1, 3, 7, 132):
            for rot in (False, True):
                tl = sorted(t for c in schedule(M, 3, 2, paired, G, rot) for t in c)
                assert tl == sorted((m, bh) for m in range(M) for bh in range(6)), (M, paired, G, rot)
print("ok", cnt, "CTA runs")
