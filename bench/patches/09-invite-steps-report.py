"""Report of bench/patches/09-invite-steps-trace.py: each step of the invite, p50/p90/p99 (ms).

    .venv/bin/python bench/patches/09-invite-steps-report.py /tmp/duet-trace.log
"""
import statistics as st
import sys

L=[l.split(None,4) for l in open(sys.argv[1] if len(sys.argv) > 1 else '/tmp/duet-trace.log')]
L=[(float(a[0]),a[1],a[2],a[3],(a[4].strip() if len(a)>4 else '')) for a in L]
L.sort()
res=[]
for i,(t,pid,th,w,ex) in enumerate(L):
    if w=='recv' and '"call"' in ex:
        seq={'recv':t}; dbth=None; grp=None
        for (t2,pid2,th2,w2,ex2) in L[i+1:i+120]:
            if t2-t>0.2: break
            if w2=='dbstart' and pid2==pid and 'dbstart' not in seq: seq['dbstart']=t2; dbth=th2
            elif w2=='precommit' and th2==dbth and pid2==pid and 'precommit' not in seq: seq['precommit']=t2
            elif w2=='handoff' and th2==dbth and pid2==pid and 'precommit' in seq and 'handoff' not in seq: seq['handoff']=t2; grp=ex2
            elif w2=='committed' and th2==dbth and pid2==pid and 'handoff' in seq and 'committed' not in seq: seq['committed']=t2
            elif grp and w2=='gs-start' and pid2==pid and ex2==grp and 'gs-start' not in seq: seq['gs-start']=t2
            elif grp and w2=='redis-in' and pid2!=pid and 'gs-start' in seq and 'redis-in' not in seq and 'user.' in ex2: seq['redis-in']=t2
            elif w2=='uev' and pid2!=pid and 'Call' in ex2 and 'redis-in' in seq and 'uev' not in seq: seq['uev']=t2
            elif w2=='sent' and pid2!=pid and 'Call' in ex2 and 'uev' in seq and 'sent' not in seq: seq['sent']=t2; break
        if 'sent' in seq and 'committed' in seq: res.append(seq)
keys=['recv','dbstart','precommit','handoff','gs-start','redis-in','uev','sent']
print(len(res))
for a,b in zip(keys,keys[1:]):
    d=sorted((r[b]-r[a])*1000 for r in res)
    print(f"{a:>10}->{b:<10} p50 {d[len(d)//2]:.2f} p90 {d[int(len(d)*.9)]:.2f} p99 {d[int(len(d)*.99)]:.2f} mean {st.mean(d):.2f}")
d=sorted((r['committed']-r['handoff'])*1000 for r in res); print("handoff->committed p50 %.2f"%d[len(d)//2])
d=sorted((r['sent']-r['recv'])*1000 for r in res)
print("total p50 %.2f p99 %.2f"%(d[len(d)//2],d[int(len(d)*.99)]))
